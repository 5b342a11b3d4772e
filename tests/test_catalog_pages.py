"""Catalog pages within a fixed bound, both ways (issue 14, item 3).

A pushed dump (``POST /catalog``) and a pulled page (``GET /catalog``, read by
``cm sync --from``) are parsed as they arrive, record by record, with at most
``payload.PAGE_MAX_RECORDS`` records and ``payload.PAGE_MAX_BYTES`` bytes: past
either, a clear refusal (413 from a node, a HostError naming the cap from a
peer) and nothing of that page merged.  A node serves and pushes pages that fit
the same caps.  The server's peak memory is measured in benchmarks/
(``catalog-post-rss``), not here.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings

from cloudmanager import CloudManager, HostError, InvalidDump, payload
from cloudmanager.errors import PageTooLarge
from cloudmanager.nodeclient import NodeClient
from cloudmanager.peersync import pull, push
from cloudmanager.records import FileRecord, Share, Upload
from tests.conftest import Factory
from tests.servers.node import NodeServer
from tests.servers.peer import LyingPeer
from tests.test_payload_fuzz import EXAMPLES, documents

#: Seconds a refused page may take, at most (the refusal comes long before the body's end).
FAST_S = 10.0


def record(i: int, *, hosts: int = 2, url_length: int = 60) -> dict[str, Any]:
    """A valid-looking record number ``i``: ``hosts`` uploads with URLs of ``url_length``."""
    uploads = [{"host_name": f"h{j:03d}", "url": f"https://h{j}.example/{i:08d}/".ljust(url_length, "x")}
               for j in range(hosts)]
    return {"version": "0.2", "datetime": "1391212800", "filename": f"f{i}.txt", "filesize": "4",
            "filehash": f"{i:064x}", "uploads": uploads}


def page(records: list[dict[str, Any]], cursor: object, more: bool) -> dict[str, Any]:
    """A catalog page as ``GET /catalog`` answers it."""
    return {"version": "0.2", "records": records, "cursor": cursor, "more": more}


def chunks_of(text: bytes, size: int = 1 << 16) -> Iterator[bytes]:
    """``text`` as a generator of chunks (httpx sends it chunked, with no Content-Length)."""
    for start in range(0, len(text), size):
        yield text[start:start + size]


def zeros(total: int) -> Iterator[bytes]:
    """``[0,0,0,...`` for ``total`` bytes, chunk by chunk."""
    yield b"["
    block = b"0," * (1 << 15)
    for _ in range(total // len(block)):
        yield block
    yield b"0]"


def largest_record() -> FileRecord:
    """The largest record validation accepts: every list full, every text at its longest,
    in characters UTF-8 writes in 4 bytes."""
    wide = "\U0001f600"
    url = "u" + wide * (payload._MAX_URL - 1)
    host = wide * payload._MAX_HOST_NAME
    count, n = payload._MAX_UPLOADS, payload._MAX_SHARES
    uploads = tuple(Upload(f"{j:03d}" + host[3:], url=url, encrypted=True) for j in range(count))
    shares = tuple(Share(i, f"{i:03d}" + host[3:], url, None, "e" * 64, 2**63 - 1, True) for i in range(n))
    return FileRecord("f" * 64, wide * 63, 2**63 - 1, 253_402_300_799, uploads, (n, n), shares)


# -- the reader ---------------------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=documents)
def test_the_streaming_reader_validates_exactly_as_the_text_path(document: object) -> None:
    try:
        text = json.dumps(document, allow_nan=False)
    except ValueError:  # Infinity is not JSON: json.loads takes it, the reader does not
        assume(False)
    try:
        expected = payload.parse(text)
    except InvalidDump as refused:
        with pytest.raises(InvalidDump) as also:
            payload.read_dump(io.BytesIO(text.encode()))
        assert type(also.value) is type(refused)
        return
    got = payload.read_dump(chunks_of(text.encode(), 7))
    assert got.records == expected.records and got.positions == expected.positions
    assert got.rejected == expected.rejected  # small records: the raw record is kept as well


def test_a_page_is_read_with_its_cursor_and_validated() -> None:
    body = json.dumps(page([record(1), {"version": "9"}, record(2)], 41, True)).encode()
    got = payload.read_page(io.BytesIO(body), max_records=3)
    assert [r.hash for r in got.parsed.records] == [f"{1:064x}", f"{2:064x}"]
    assert [(r.index, r.field) for r in got.parsed.rejected] == [(1, "version")]
    assert (got.cursor, got.more, got.parsed.count) == (41, True, 3)


@pytest.mark.parametrize("body, cap", [
    (lambda: b"[" + b"0," * 10_000 + b"0]", "10000 records"),
    (lambda: json.dumps([record(i) for i in range(3)]).encode() + b" " * (9 << 20), "8 MiB"),
], ids=["records", "bytes"])
def test_a_dump_past_a_cap_is_refused_naming_it(body: Callable[[], bytes], cap: str) -> None:
    with pytest.raises(PageTooLarge, match=cap):
        payload.read_dump(io.BytesIO(body()))


def test_a_page_with_more_records_than_asked_for_is_refused() -> None:
    body = json.dumps(page([record(i) for i in range(3)], 3, False)).encode()
    with pytest.raises(PageTooLarge, match="more than 2 records"):
        payload.read_page(io.BytesIO(body), max_records=2)


@pytest.mark.parametrize("body, said", [
    (b'[{"version": "0.2"', "not JSON"),
    (b"[] []", "not JSON"),
    (b"\xff\xfe[]", "not JSON"),
    (b'"a record"', "a JSON list of records"),
    (b"[" + b"1" * 5000 + b"]", "more than 4300 digits"),  # ijson's int() fails inside its C code
    (b"[1e99999999999999999999]", "out of range"),  # no Decimal holds it
], ids=["cut-short", "two-documents", "not-utf-8", "a-string", "digits", "exponent"])
def test_bad_json_mid_stream_is_an_invalid_dump(body: bytes, said: str) -> None:
    with pytest.raises(InvalidDump, match=said):
        payload.read_dump(chunks_of(body, 3))


def test_a_record_that_swells_in_memory_is_rejected_not_built() -> None:
    swollen = {**record(1), "extra": [[] for _ in range(200_000)]}  # 600 KB of text, 200,000 lists
    parsed = payload.read_dump(io.BytesIO(json.dumps([swollen, record(2)]).encode()))
    assert [r.hash for r in parsed.records] == [f"{2:064x}"]
    (rejected,) = parsed.rejected
    assert rejected.index == 0 and "values" in rejected.reason and rejected.record is None


def test_deep_nesting_is_cheap_to_refuse() -> None:
    started = time.monotonic()
    parsed = payload.read_dump(io.BytesIO(b"[" + b"[" * (3 << 20) + b"]" * (3 << 20) + b"]"))
    assert time.monotonic() - started < FAST_S
    assert [r.reason for r in parsed.rejected] == ["a record must be a JSON object"]


def test_uploads_are_bounded_per_record() -> None:
    many = record(1, hosts=payload._MAX_UPLOADS + 1)
    parsed = payload.parse(json.dumps([many, record(2, hosts=payload._MAX_UPLOADS)]))
    assert [(r.index, r.field) for r in parsed.rejected] == [(0, "uploads")]
    assert str(payload._MAX_UPLOADS) in parsed.rejected[0].reason


def test_the_largest_valid_record_fits_a_page() -> None:
    largest = largest_record()
    text = payload.record_text(largest)
    outgoing = payload.Outgoing([text], 2**63 - 1, True, [])
    assert len(outgoing.page()) <= payload.PAGE_MAX_BYTES
    got = payload.read_page(io.BytesIO(outgoing.page()), max_records=1)
    assert got.parsed.records == [largest] and not got.parsed.rejected


def test_a_rejected_record_keeps_its_raw_text_only_while_small() -> None:
    big = {"version": "9", "padding": "x" * (2 << 20)}  # more than all the room kept for rejections
    parsed = payload.read_dump(io.BytesIO(json.dumps([{"version": "9"}, big]).encode()))
    assert [r.record for r in parsed.rejected] == [{"version": "9"}, None]
    assert payload.parse(json.dumps([big])).rejected[0].record == big  # the text path keeps it


# -- serving and pushing pages that fit --------------------------------------------------


def load(cm: CloudManager, records: list[dict[str, Any]]) -> None:
    report = cm.import_dump(json.dumps(records))
    assert not report.rejected


def test_a_page_of_changes_fits_the_byte_cap_and_its_cursor_goes_on_from_there(
        node: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    cm = node()
    load(cm, [record(i, url_length=900) for i in range(40)])  # 40 x ~2 KB
    monkeypatch.setattr(payload, "PAGE_MAX_BYTES", 20_000)
    seen: list[str] = []
    since, more = 0, True
    while more:
        outgoing = cm.change_page(since, 1000)
        assert len(outgoing.page()) <= 20_000 and outgoing.texts and not outgoing.skipped
        seen += [json.loads(t)["filehash"] for t in outgoing.texts]
        since, more = outgoing.cursor, outgoing.more
    assert seen == [f"{i:064x}" for i in range(40)]  # all of them, once each, in order


def test_a_record_too_large_for_any_page_is_skipped_not_a_stuck_sync(
        node: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    cm = node()
    load(cm, [record(0), record(1, hosts=10, url_length=3000), record(2)])
    monkeypatch.setattr(payload, "PAGE_MAX_BYTES", 20_000)
    outgoing = cm.change_page(0, 1000)
    assert [json.loads(t)["filehash"] for t in outgoing.texts] == [f"{0:064x}"]
    outgoing = cm.change_page(outgoing.cursor, 1000)
    assert outgoing.skipped == [f"{1:064x}"]
    assert [json.loads(t)["filehash"] for t in outgoing.texts] == [f"{2:064x}"] and not outgoing.more


def test_a_push_sends_smaller_pages_when_a_page_would_pass_the_byte_cap(
        node: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = node(name="a"), node(name="b")
    load(a, [record(i, url_length=900) for i in range(30)])
    monkeypatch.setattr(payload, "PAGE_MAX_BYTES", 20_000)
    sizes: list[int] = []

    class Receiver:
        def catalog_page(self, since: int, limit: int) -> tuple[payload.Parsed, int, bool]:
            raise AssertionError("a push pulls nothing")

        def push_catalog(self, dump: bytes) -> dict[str, Any]:
            sizes.append(len(dump))
            report = b.import_dump(payload.read_dump(io.BytesIO(dump)))
            return {"added": report.added, "changed": report.changed, "rejected": len(report.rejected)}

    exchange = push(a, Receiver(), "b", page=1000)
    assert exchange.added == 30 and b.catalog.count() == 30
    assert len(sizes) > 1 and max(sizes) <= 20_000


# -- a real node: POST /catalog -------------------------------------------------------------


def post(server: NodeServer, body: bytes | Iterator[bytes]) -> httpx.Response:
    with server.http(server.token) as http:
        return http.post("/catalog", content=body, headers={"Content-Type": "application/json"})


def served_hashes(server: NodeServer) -> set[str]:
    with CloudManager(server.root / "catalog.sqlite3", server.root / "cache", 1 << 30, hosts=[]) as node:
        return {r.hash for r in node.catalog.records()}


def test_a_chunked_body_of_16_mib_of_zeros_is_refused_fast(node_server: NodeServer) -> None:
    started = time.monotonic()
    answer = post(node_server, zeros(16 << 20))
    assert time.monotonic() - started < FAST_S
    assert answer.status_code == 413, answer.text
    assert "10000 records" in answer.json()["error"]


def test_a_body_of_valid_records_past_the_byte_cap_is_413_and_nothing_merged(
        node_servers: Callable[..., NodeServer]) -> None:
    server = node_servers()
    records = [record(i, hosts=4, url_length=400) for i in range(6_000)]  # ~10 MB, 6,000 records
    body = json.dumps(records).encode()
    assert len(body) > payload.PAGE_MAX_BYTES
    answer = post(server, chunks_of(body))
    assert answer.status_code == 413, answer.text
    assert "8 MiB" in answer.json()["error"]
    told = post(server, body)  # with its Content-Length: refused before it is read
    assert told.status_code == 413, told.text
    assert served_hashes(server) == set()
    fits = post(server, json.dumps(records[:1000]).encode())  # a page that fits is merged
    assert fits.status_code == 200 and fits.json()["added"] == 1000


def test_bad_json_posted_is_400_and_nothing_merged(node_servers: Callable[..., NodeServer]) -> None:
    server = node_servers()
    good = json.dumps([record(1), record(2)]).encode()
    answer = post(server, chunks_of(good[:-1] + b",}"))
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"]
    assert served_hashes(server) == set()


# -- a real node: GET /catalog and a pull -------------------------------------------------------


def test_a_served_page_fits_the_byte_cap_and_a_pull_gets_every_record(
        node_servers: Callable[..., NodeServer], node: Factory) -> None:
    server = node_servers()
    big = [record(i, hosts=payload._MAX_UPLOADS, url_length=4000) for i in range(21)]  # ~520 KB each
    for part in (big[:7], big[7:14], big[14:]):
        assert post(server, json.dumps(part).encode()).status_code == 200
    with server.http(server.token) as http:
        served = http.get("/catalog", params={"limit": "10000"})
    assert served.status_code == 200 and len(served.content) <= payload.PAGE_MAX_BYTES
    first = served.json()
    assert first["more"] and 0 < len(first["records"]) < 21
    puller = node(name="puller")
    with server.client() as client:
        exchange = pull(puller, client, server.base_url, page=10_000)
    assert exchange.added == 21 and puller.catalog.count() == 21


# -- a lying peer: what a pull refuses --------------------------------------------------------


def endless(since: int, limit: int) -> Iterator[bytes]:
    """A page that never ends: one record, whose file name goes on for as long as the client reads."""
    yield b'{"version": "0.2", "cursor": 9, "more": false, "records": [{"version": "0.2", "filename": "'
    while True:
        yield b"x" * (1 << 16)


def blank_forever(since: int, limit: int) -> Iterator[bytes]:
    """A page that never ends and holds nothing: white space, forever."""
    yield b'{"records": [], "cursor": 9, "more": false' + b" " * 1024
    while True:
        yield b" " * (1 << 16)


LIES: dict[str, tuple[Callable[[int, int], object], str]] = {
    "oversized": (lambda since, limit: json.dumps(page([record(i, hosts=40, url_length=4000)
                                                        for i in range(60)], 9, False)).encode(), "8 MiB"),
    "more-than-asked": (lambda since, limit: page([record(i) for i in range(limit + 1)], 9, False),
                        "more than 5 records"),
    "never-ending": (endless, "8 MiB"),
    "blank-forever": (blank_forever, "8 MiB"),
}


@pytest.mark.parametrize("lie", LIES)
def test_a_pull_refuses_a_page_past_the_caps_and_merges_nothing_of_it(
        node: Factory, lying_peer: LyingPeer, lie: str) -> None:
    answer, cap = LIES[lie]
    cm = node()
    lying_peer.answer = answer
    started = time.monotonic()
    with NodeClient(lying_peer.url, "t") as client, pytest.raises(HostError, match=cap) as refused:
        pull(cm, client, "liar", page=5)
    assert time.monotonic() - started < FAST_S
    assert "page" in str(refused.value)
    assert cm.catalog.count() == 0 and cm.catalog.peer_cursors("liar") == (0, 0)
    assert lying_peer.asked == [0]  # refused at once, not asked again


def test_a_compressed_page_is_refused(node: Factory, lying_peer: LyingPeer) -> None:
    cm = node()
    lying_peer.answer = lambda since, limit: page([record(1)], 9, False)
    lying_peer.headers = {"Content-Encoding": "gzip"}
    with NodeClient(lying_peer.url, "t") as client, pytest.raises(HostError, match="gzip"):
        pull(cm, client, "liar")
    assert cm.catalog.count() == 0


def test_cm_sync_from_a_peer_with_an_oversized_page_is_one_line(
        tmp_path: Path, lying_peer: LyingPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import run_cm

    monkeypatch.setenv("CM_PEER_TOKEN", "t")
    lying_peer.answer = endless
    conf = tmp_path / "c.toml"
    conf.write_text(f'[catalog]\npath = "{tmp_path / "c.sqlite3"}"\n[cache]\npath = "{tmp_path / "cache"}"\n'
                    'capacity = "1 MiB"\n', encoding="utf-8")
    result = run_cm("--config", str(conf), "sync", "--from", lying_peer.url, code=1)
    assert result.stderr.startswith("cm: ") and result.stderr.count("\n") == 1, result.stderr
    assert "8 MiB" in result.stderr and "Traceback" not in result.stderr
