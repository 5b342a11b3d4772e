"""A planted record must not delete another file's copies (issue 12, section 4).

A record from another node (``cm load``, ``cm sync --from``, ``POST /catalog``) may
pair a file's hash P with the locator of another file V's object on one of this
node's hosts.  The merge rejects it, and a catalog that holds such an entry
anyway (filled before locators were checked: :func:`plant` stores it as such a
catalog holds it) deletes nothing of V through it: not ``cm rm --hosts``, not
``cm expire``, not ``cm fsck --hosts --repair``, not a DELETE on a served node,
and a ``cm://`` locator does not cascade the delete to another node.  ``expire``
never deletes a file's last copy because of "copies" that do not verify.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cloudmanager import CloudManager, InvalidDump, locators, maintenance
from cloudmanager.cli import main
from cloudmanager.hosts import Host
from cloudmanager.hosts.node import NodeHost
from cloudmanager.payload import parse
from tests.servers.node import NodeServer

VICTIM = b"the victim's bytes, kept on this node's hosts"
PLANTED = b"a file this node never had"
V = hashlib.sha256(VICTIM).hexdigest()
P = hashlib.sha256(PLANTED).hexdigest()
OTHER = hashlib.sha256(b"a third file").hexdigest()
DAY = 86_400


@pytest.fixture(params=["sqlite", "postgres"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The catalog of the node under test: SQLite, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        return str(tmp_path / "catalog.sqlite3")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """The file V, on disk."""
    path = tmp_path / "victim.bin"
    path.write_bytes(VICTIM)
    return path


def record(digest: str, size: int, *uploads: tuple[str, str], **extra: Any) -> dict[str, Any]:
    """A record in format "0.2" with these (host, url) entries."""
    return {"version": "0.2", "datetime": "1700000000", "filename": f"{digest[:8]}.bin",
            "filesize": str(size), "filehash": digest,
            "uploads": [{"host_name": h, "url": u} for h, u in uploads], **extra}


def planted(*uploads: tuple[str, str]) -> dict[str, Any]:
    """A record for P whose entries are the given (host, url) pairs."""
    return record(P, len(PLANTED), *uploads)


def plant(cm: CloudManager, *records: dict[str, Any]) -> None:
    """Store records as a catalog filled before locators were checked holds them."""
    cm.catalog.merge(parse(json.dumps(list(records))).records)


def locator_of(cm: CloudManager, digest: str, host: str) -> str:
    """The locator the catalog records for ``host``'s copy of ``digest``."""
    found = cm.catalog.record(digest)
    assert found is not None
    url = next(u.url for u in found.uploads if u.host == host)
    assert url is not None
    return url


def holds_victim(host: Host, locator: str) -> bool:
    """True when ``host`` still gives V's bytes back through ``locator``."""
    out = io.BytesIO()
    host.download(locator, out)
    return out.getvalue() == VICTIM


def assert_planted_locator_is_harmless(cm: CloudManager, host: Host, victim: Path) -> None:
    """On a node whose (only) host is ``host``: V's copy survives every use of a planted
    entry of P naming V's object (the merge rejects it; stored anyway, it deletes nothing)."""
    assert cm.upload(victim) == V
    locator = locator_of(cm, V, host.name)
    plant(cm, planted((host.name, locator), ("elsewhere", f"file:///elsewhere/{V[:2]}/{V[2:4]}/{V}")))
    forgotten = cm.forget(P, from_hosts=True)
    assert forgotten is not None and forgotten.deleted == []
    assert forgotten.left[host.name] == locators.FOREIGN
    plant(cm, planted((host.name, locator), ("elsewhere", "file:///elsewhere/x")))
    host.keep_days = 1
    expired = maintenance.expire(cm, now=time.time() + 30 * DAY)
    assert expired.expired == [] and (V, host.name) in expired.last_copies
    assert (P, host.name, locators.FOREIGN) in expired.unverified
    assert holds_victim(host, locator) and locator_of(cm, V, host.name) == locator
    assert cm.forget(P) is not None
    report = cm.import_dump(json.dumps([planted((host.name, locator))]))
    assert [(r.index, r.field) for r in report.rejected] == [(0, "uploads")]
    assert locators.FOREIGN in report.rejected[0].reason and not cm.exists(P)


def check_a_planted_locator_on(host: Host, folder: Path) -> None:
    """:func:`assert_planted_locator_is_harmless` on a new node (in ``folder``) whose host
    is ``host`` (a kind with a real server: sftp, WebDAV, S3...)."""
    victim = folder / "victim.bin"
    victim.write_bytes(VICTIM)
    with CloudManager(folder / "catalog.sqlite3", folder / "cache", 1 << 20, hosts=[host]) as cm:
        assert_planted_locator_is_harmless(cm, host, victim)


# -- the merge ---------------------------------------------------------------------------


def test_the_merge_rejects_a_record_naming_another_files_object(catalog: str, tmp_path: Path,
                                                               victim: Path) -> None:
    vault = tmp_path / "vault"
    with CloudManager(catalog, tmp_path / "cache", 1 << 20, hosts=[vault.as_uri()]) as cm:
        assert cm.upload(victim) == V
        locator = locator_of(cm, V, "vault")
        fine = record(OTHER, 5, ("vault", f"{vault.as_uri()}/{OTHER[:2]}/{OTHER[2:4]}/{OTHER}"))
        share = {"index": 0, "host_name": "vault", "url": locator, "sha256": OTHER, "size": "9"}
        spread = record(P, len(PLANTED), shares={"k": 1, "n": 2, "items": [share]})
        report = cm.import_dump(json.dumps([planted(("vault", locator)), fine, spread]))
        assert [(r.index, r.field) for r in report.rejected] == [(0, "uploads"), (2, "shares")]
        assert "cannot be this file's copy" in report.rejected[0].reason
        assert "share 0" in report.rejected[1].reason and locators.FOREIGN in report.rejected[1].reason
        assert report.added == 1 and cm.exists(OTHER) and not cm.exists(P)  # nothing of P is stored

        again = record(hashlib.sha256(b"fourth").hexdigest(), 6)
        with pytest.raises(InvalidDump, match=r"record 1, field 'uploads': .*cannot be this file's copy"):
            cm.data_load(json.dumps([again, planted(("unknown host", "x"), ("vault", locator))]))
        assert not cm.exists(again["filehash"]) and not cm.exists(P)  # nothing imported
        # Entries for hosts this node does not have, and locators that are the file's, go in.
        cm.data_load(json.dumps([planted(("unknown host", locator)),
                                 record(V, len(VICTIM), ("vault", locator))]))
        assert cm.exists(P)
        assert cm.warm_up(V) and Path(vault / V[:2] / V[2:4] / V).read_bytes() == VICTIM


# -- a planted entry already in the catalog ------------------------------------------------


def test_forget_expire_and_fsck_leave_another_files_copy_alone(catalog: str, tmp_path: Path,
                                                               victim: Path) -> None:
    vault = tmp_path / "vault"
    with CloudManager(catalog, tmp_path / "cache", 1 << 20, hosts=[vault.as_uri()]) as cm:
        assert_planted_locator_is_harmless(cm, cm.hosts[0], victim)
        plant(cm, planted(("vault", locator_of(cm, V, "vault"))))
        report = cm.check(hosts=True, repair=True)  # a damaged copy is deleted: not this one
        assert report.hosts is not None and (P, "vault", locators.FOREIGN) in report.hosts.lost
        assert (vault / V[:2] / V[2:4] / V).read_bytes() == VICTIM
        found = cm.catalog.record(P)
        assert found is not None
        assert not next(u for u in found.uploads if u.host == "vault").ok  # recorded: not a copy of P
        cm.evict([V])
        path = cm.warm_up(V)
        assert path and Path(path).read_bytes() == VICTIM


def test_a_planted_share_naming_a_files_object_deletes_nothing(catalog: str, tmp_path: Path,
                                                               victim: Path) -> None:
    """A share's SHA-256 comes with the record too: a "share" whose SHA-256 is V's own
    names V's object, and its locator agrees with it."""
    vault = tmp_path / "vault"
    with CloudManager(catalog, tmp_path / "cache", 1 << 20, hosts=[vault.as_uri()]) as cm:
        assert cm.upload(victim) == V
        share = {"index": 0, "host_name": "vault", "url": locator_of(cm, V, "vault"), "sha256": V,
                 "size": "9"}
        spread = record(P, len(PLANTED), shares={"k": 1, "n": 2, "items": [share]})
        plant(cm, spread)
        report = maintenance.check_copies(cm, remove_bad=True)  # fsck --hosts --repair deletes damaged ones
        assert (vault / V[:2] / V[2:4] / V).read_bytes() == VICTIM
        assert (P, "vault (share 0)", locators.FOREIGN) in report.lost
        cm.forget(P)
        rejected = cm.import_dump(json.dumps([spread])).rejected
        assert [(r.index, r.field) for r in rejected] == [(0, "shares")] and not cm.exists(P)


def test_expire_keeps_a_last_copy_when_the_other_copies_are_planted(catalog: str, tmp_path: Path,
                                                                    victim: Path) -> None:
    vault, spare = tmp_path / "vault", tmp_path / "spare"
    with CloudManager(catalog, tmp_path / "cache", 1 << 20, hosts=[vault.as_uri(), spare.as_uri()]) as cm:
        cm.hosts[1].active = False  # V goes to the vault only
        assert cm.upload(victim) == V
        (tmp_path / "other").write_bytes(b"a third file")
        other = cm.hosts[1].upload(tmp_path / "other", "other", OTHER)
        # V's "copies" elsewhere: on a host this node does not have, and another file's object.
        plant(cm, record(V, len(VICTIM), ("elsewhere", f"file:///x/{V[:2]}/{V[2:4]}/{V}"), ("spare", other)))
        entry = cm.catalog.entry(V)
        assert entry is not None and entry.copies == 3
        cm.hosts[0].keep_days = cm.hosts[1].keep_days = 1
        report = maintenance.expire(cm, now=time.time() + 30 * DAY)
        assert report.expired == [] and report.last_copies == [(V, "vault")]
        assert report.unverified == [(V, "spare", locators.FOREIGN)]
        assert (vault / V[:2] / V[2:4] / V).read_bytes() == VICTIM
        assert (spare / OTHER[:2] / OTHER[2:4] / OTHER).read_bytes() == b"a third file"


def test_a_planted_node_locator_does_not_cascade(catalog: str, tmp_path: Path, victim: Path,
                                                 node_servers: Any) -> None:
    other: NodeServer = node_servers("other")
    with other.client() as client:
        client.put(V, "victim.bin", victim)
    host = NodeHost(other.url, other.token)
    with CloudManager(catalog, tmp_path / "cache", 1 << 20, hosts=[host]) as cm:
        locator = f"{other.url}/objects/{V}"
        plant(cm, planted((host.name, locator)))
        forgotten = cm.forget(P, from_hosts=True)
        with other.client() as client:
            assert client.head(V) == len(VICTIM)  # the other node was never asked to delete V
        assert forgotten is not None and forgotten.left == {host.name: locators.FOREIGN}
        report = cm.import_dump(json.dumps([planted((host.name, locator))]))
        assert [(r.index, r.field) for r in report.rejected] == [(0, "uploads")] and not cm.exists(P)


# -- end to end: cm, and a served node ------------------------------------------------------


def test_cm_load_rm_and_expire_leave_another_files_copy(catalog: str, tmp_path: Path, victim: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CM_CONFIG", raising=False)
    vault = tmp_path / "vault"
    where = f'url = "{catalog}"' if "://" in catalog else f'path = "{catalog}"'
    config = tmp_path / "cm.toml"
    config.write_text(f'[catalog]\n{where}\n[cache]\npath = "{tmp_path / "cache"}"\n'
                      f'[[hosts]]\nname = "vault"\nurl = "{vault.as_uri()}"\nkeep_days = 1\n')

    def cm(*args: str) -> Any:
        return CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)

    assert cm("upload", str(victim)).exit_code == 0
    copy = vault / V[:2] / V[2:4] / V
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps([planted(("vault", copy.as_uri()), ("elsewhere", "file:///elsewhere/x"))]))

    def plant_it() -> None:  # as a catalog filled before locators were checked holds it
        with CloudManager(catalog, tmp_path / "cache", 1 << 20, hosts=[vault.as_uri()]) as node:
            plant(node, json.loads(dump.read_text())[0])

    plant_it()
    removed = cm("rm", "--hosts", P)
    assert copy.read_bytes() == VICTIM
    assert removed.exit_code == 0 and f"vault: copy left there ({locators.FOREIGN})" in removed.stdout
    plant_it()
    later = time.time() + 30 * DAY
    with monkeypatch.context() as clock:
        clock.setattr(time, "time", lambda: later)
        expired = cm("expire")
    assert copy.read_bytes() == VICTIM
    assert expired.exit_code == 0, expired.output
    assert f"{V}  vault: kept, its last copy" in expired.stdout
    assert f"{P}  vault: kept, {locators.FOREIGN}" in expired.stdout
    assert cm("rm", P).exit_code == 0
    loaded = cm("load", str(dump))
    assert loaded.exit_code == 1 and "rejected 1" in loaded.stdout
    rejected = json.loads((tmp_path / "dump.rejected.json").read_text())
    assert rejected[0]["field"] == "uploads" and locators.FOREIGN in rejected[0]["reason"]
    assert cm("rm", "--hosts", P).exit_code == 1  # not in the catalog: nothing to delete through
    assert cm("get", V, "-o", str(tmp_path / "back.bin")).exit_code == 0
    assert (tmp_path / "back.bin").read_bytes() == VICTIM  # and it still comes back


def test_a_served_node_rejects_the_record_and_its_delete_spares_the_copy(tmp_path: Path, victim: Path,
                                                                        node_servers: Any) -> None:
    server: NodeServer = node_servers("served")
    with CloudManager(server.root / "catalog.sqlite3", server.cache, 1 << 30,
                      hosts=[server.vault.as_uri()]) as node:  # the same node, in this process
        assert node.upload(victim) == V
        copy = locator_of(node, V, "vault")
        plant(node, planted(("vault", copy)))  # as a catalog filled before the check holds it
    with server.http(server.token) as http:
        assert http.delete(f"/objects/{P}").status_code == 204
        assert (server.vault / V[:2] / V[2:4] / V).read_bytes() == VICTIM
        assert http.get(f"/objects/{V}").content == VICTIM
        answer = http.post("/catalog", content=json.dumps([planted(("vault", copy))]))
        assert answer.status_code == 200 and answer.json()["rejected"] == 1 and answer.json()["added"] == 0
        assert http.delete(f"/objects/{P}").status_code == 404  # nothing of it was stored
