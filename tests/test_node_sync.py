"""data_dump()/data_load() between nodes, and sync() with hosts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cloudmanager import InvalidDump
from cloudmanager.cache import OWNER_FILE
from cloudmanager.hosts import MemoryHost
from tests.conftest import Factory
from tests.hostkit import Recording

H1 = "6e163442e29ec8d7538bc86fe2c4a48778e8ae2254632f0889da753b1c357b1b"
H2 = "1" * 64

README_RECORD = {
    "version": "0.2",
    "datetime": "1391212800",
    "filename": "README.md",
    "filesize": "23124",
    "filehash": H1,
    "uploads": [
        {"host_name": "mediafire", "url": "http://www.mediafire.com/?qorncpzfe74s9"},
        {"host_name": "rapidshare", "url": "http://rapidshare.com/files/130403982"},
        {"host_name": "anonfiles", "error": True},
    ],
}


def record(**changes: object) -> dict[str, object]:
    return {**README_RECORD, **changes}


def test_two_nodes_learn_each_others_files(node: Factory, write: Callable[..., Path]) -> None:
    a, b = node(name="a"), node(name="b")
    digest = a.upload(write("shared.txt", b"from node a"))
    assert digest and not b.exists(digest)
    assert b.data_load(a.data_dump()) == 1
    assert b.exists(digest) and not b.on_cache(digest)
    assert b.info(digest) == a.info(digest)
    path = b.warm_up(digest)  # fetched from the host both nodes use
    assert path and Path(path).read_bytes() == b"from node a"
    assert b.data_load(a.data_dump()) == 0  # nothing new the second time
    assert a.data_load(b.data_dump()) == 0


def test_the_readme_record_loads_as_written(node: Factory) -> None:
    cm = node()
    assert cm.data_load(json.dumps(README_RECORD)) == 1  # a single object is accepted too
    assert cm.info(H1) == {**README_RECORD, "uploads": sorted(
        README_RECORD["uploads"], key=lambda u: u["host_name"])}
    dumped = json.loads(cm.data_dump())
    assert dumped == [cm.info(H1)]


def test_a_url_beats_an_error_for_the_same_host(node: Factory) -> None:
    cm = node()
    cm.data_load(json.dumps([record(uploads=[{"host_name": "anonfiles", "error": True}])]))
    changed = cm.data_load(json.dumps([record(uploads=[
        {"host_name": "anonfiles", "url": "http://anonfiles.invalid/x"}])]))
    assert changed == 1
    assert cm.info(H1)["uploads"] == [{"host_name": "anonfiles", "url": "http://anonfiles.invalid/x"}]
    # an error never replaces a URL
    assert cm.data_load(json.dumps([record(uploads=[{"host_name": "anonfiles", "error": True}])])) == 0
    assert cm.info(H1)["uploads"] == [{"host_name": "anonfiles", "url": "http://anonfiles.invalid/x"}]


def test_version_0_1_integers_and_digit_strings_are_accepted(node: Factory) -> None:
    cm = node()
    old = {"version": "0.1", "datetime": 1391212800, "filesize": 5, "filehash": H2, "uploads": []}
    assert cm.data_load(json.dumps([old, record()])) == 2
    assert cm.info(H2)["filename"] == H2
    assert cm.info(H2)["filesize"] == "5"


@pytest.mark.parametrize("bad, field", [
    (record(version="0.3"), "version"),
    (record(version=0.2), "version"),
    (record(filehash=H1.upper()), "filehash"),
    (record(filehash="' OR 1=1 --"), "filehash"),
    (record(filesize="-1"), "filesize"),
    (record(filesize=True), "filesize"),
    (record(filesize="12kB"), "filesize"),
    (record(datetime=None), "datetime"),
    (record(filename=".."), "filename"),
    (record(filename="x" * 10_000), "filename"),
    (record(filename=None), "filename"),
    (record(uploads={"host_name": "x"}), "uploads"),
    (record(uploads=[{"host_name": "x"}]), "uploads[0]"),
    (record(uploads=[{"host_name": "", "url": "http://x"}]), "uploads[0].host_name"),
    (record(uploads=[{"host_name": "x", "url": "http://x\n"}]), "uploads[0].url"),
    (record(uploads=[{"host_name": "x", "url": "http://x", "error": True}]), "uploads[0]"),
])
def test_invalid_records_are_refused_whole(node: Factory, bad: dict[str, object], field: str) -> None:
    cm = node()
    good = record(filehash=H2)
    with pytest.raises(InvalidDump) as caught:
        cm.data_load(json.dumps([good, bad]))
    assert caught.value.record == 1 and caught.value.field == field
    assert f"record 1, field {field!r}" in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert cm.catalog.count() == 0  # the valid record was not imported either


@pytest.mark.parametrize("text", ["", "not json", "{", "42", '"text"', "[1, 2]", "[[]]", "[" * 100_000])
def test_documents_that_are_not_dumps_are_refused(node: Factory, text: str) -> None:
    cm = node()
    with pytest.raises(InvalidDump):
        cm.data_load(text)
    assert cm.catalog.count() == 0


def test_names_from_a_dump_are_reduced_to_bare_file_names(node: Factory) -> None:
    cm = node()
    cm.data_load(json.dumps([record(filename="../../etc/passwd"),
                             record(filehash=H2, filename="C:\\Windows\\evil\x00.exe")]))
    assert cm.info(H1)["filename"] == "passwd"
    assert cm.info(H2)["filename"] == "evil.exe"


def test_a_size_that_disagrees_with_the_catalog_is_refused(node: Factory) -> None:
    cm = node()
    cm.data_load(json.dumps([record()]))
    with pytest.raises(InvalidDump, match="filesize"):
        cm.data_load(json.dumps([record(filehash=H2), record(filesize="1")]))
    assert not cm.exists(H2)
    with pytest.raises(InvalidDump, match="disagrees"):
        cm.data_load(json.dumps([record(filehash=H2), record(filehash=H2, filesize="7")]))


def test_loading_never_touches_the_cache(node: Factory) -> None:
    cm = node()
    cm.data_load(json.dumps([record()]))
    assert not cm.on_cache(H1) and cm.usage_ratio() == 0
    assert [p for p in cm.cache.root.iterdir() if p.name != OWNER_FILE] == []


def test_sync_retries_failed_hosts(node: Factory, write: Callable[..., Path]) -> None:
    flaky = Recording(MemoryHost("flaky"))
    flaky.fail_uploads = True
    cm = node(capacity=100, hosts=[flaky, "memory://steady"])
    digest = cm.upload(write("f", b"f" * 60))
    assert digest
    assert cm.sync()[digest][0].error == "refused (test)"
    flaky.fail_uploads = False
    changes = cm.sync()
    assert [u.host for u in changes[digest]] == ["flaky"] and changes[digest][0].ok
    assert cm.sync() == {}
    assert all("url" in u for u in cm.info(digest)["uploads"])


def test_sync_sends_a_pending_file_once_a_host_is_back(node: Factory, write: Callable[..., Path]) -> None:
    host = Recording(MemoryHost("m"))
    host.fail_uploads = True
    cm = node(capacity=150, hosts=[host])
    digest = cm.upload(write("f", b"f" * 100))
    assert digest and cm.evict() == []
    host.fail_uploads = False
    assert cm.sync()[digest][0].ok
    assert cm.evict() == [digest]  # now held by a host: evictable
    assert cm.warm_up(digest)


def test_sync_fetches_what_is_not_cached(node: Factory, write: Callable[..., Path]) -> None:
    second = Recording(MemoryHost("second"))
    second.fail_uploads = True
    cm = node(hosts=["memory://first", second])
    digest = cm.upload(write("f", b"travels"))
    assert digest
    cm.evict()
    second.fail_uploads = False
    assert cm.sync()[digest][0].ok
    assert second.inner.objects[digest] == b"travels"


def test_a_merge_keeps_copies_and_the_change_sequence_exact(node: Factory) -> None:
    cm = node()
    cm.data_load(json.dumps([record(), record(filehash=H2, uploads=[{"host_name": "x", "error": True}])]))
    db = cm.catalog._db
    seqs = dict(db.execute("SELECT hash, seq FROM files"))
    assert sorted(seqs.values()) == [1, 2]
    cm.data_load(json.dumps([record(filehash=H2, uploads=[{"host_name": "x", "url": "http://x.invalid/2"}])]))
    assert db.execute("SELECT seq FROM files WHERE hash = ?", (H2,)).fetchone()[0] == 3
    assert db.execute("SELECT seq, bulk FROM state").fetchone() == (3, 0)
    wrong = db.execute("""SELECT hash FROM files f WHERE copies <>
                          (SELECT count(url) FROM uploads u WHERE u.hash = f.hash)""").fetchall()
    assert wrong == []
    assert dict(db.execute("SELECT hash, copies FROM files")) == {H1: 2, H2: 1}
    cm.catalog.record_fetch("x", "gone", digest=H2, lost=True)  # a per-row change after the merge
    assert db.execute("SELECT copies, seq FROM files WHERE hash = ?", (H2,)).fetchone() == (0, 4)
