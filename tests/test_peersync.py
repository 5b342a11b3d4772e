"""The logic of catalog sync between nodes (cursors, convergence), peer to peer in process.

The same exchange over real HTTP, through ``cm serve``, is in test_node_http_sync.py.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloudmanager import CloudManager, payload
from cloudmanager.peersync import PeerError, pull, push
from tests.conftest import Factory


class DirectPeer:
    """Another node's catalog calls, made in process (what ``cm serve`` answers over HTTP)."""

    def __init__(self, manager: CloudManager):
        self.manager = manager
        self.calls = 0

    def catalog_page(self, since: int, limit: int) -> tuple[payload.Parsed, int, bool]:
        self.calls += 1
        page = payload.read_page(io.BytesIO(self.manager.change_page(since, limit).page()), max_records=limit)
        assert isinstance(page.cursor, int) and isinstance(page.more, bool)
        return page.parsed, page.cursor, page.more

    def push_catalog(self, dump: bytes) -> dict[str, Any]:
        self.calls += 1
        report = self.manager.import_dump(payload.read_dump(io.BytesIO(dump)))
        return {"added": report.added, "changed": report.changed, "rejected": len(report.rejected),
                "first_seq": report.first_seq, "last_seq": report.last_seq}


def upload_some(manager: CloudManager, write: Callable[..., Path], prefix: str, count: int) -> set[str]:
    digests = set()
    for i in range(count):
        digest = manager.upload(write(f"{prefix}{i}.txt", f"{prefix} file {i}".encode()))
        assert digest
        digests.add(digest)
    return digests


def known(manager: CloudManager) -> set[str]:
    return {r.hash for r in manager.catalog.records()}


def test_two_nodes_converge_in_one_exchange_each_way_and_a_third_learns_all(
        node: Factory, write: Callable[..., Path]) -> None:
    a, b, c = node(name="a"), node(name="b"), node(name="c")
    from_a = upload_some(a, write, "a", 5)
    from_b = upload_some(b, write, "b", 7)
    ab, ba = DirectPeer(b), DirectPeer(a)

    assert pull(a, ab, "b", page=3).added == 7  # paged: 3 + 3 + 1
    assert push(a, ab, "b", page=3).added == 5
    assert known(a) == known(b) == from_a | from_b
    assert json.loads(a.data_dump()) == json.loads(b.data_dump())

    # A third node learns everything by pulling from one of them.
    assert pull(c, DirectPeer(a), "a").added == 12
    assert known(c) == from_a | from_b

    # A repeated exchange moves nothing, either way.
    again = pull(a, ab, "b"), push(a, ab, "b")
    assert [e.records for e in again] == [0, 0]
    # b's first exchange with a (its cursors are its own) teaches nothing new;
    # a repeat moves nothing.
    first = pull(b, ba, "a"), push(b, ba, "a")
    assert [(e.added, e.changed) for e in first] == [(0, 0), (0, 0)]
    assert [e.records for e in (pull(b, ba, "a"), push(b, ba, "a"))] == [0, 0]


def test_new_changes_after_a_sync_are_all_that_moves(node: Factory, write: Callable[..., Path]) -> None:
    a, b = node(name="a"), node(name="b")
    upload_some(a, write, "a", 4)
    peer = DirectPeer(b)
    push(a, peer, "b")
    newer = upload_some(a, write, "new", 2)
    moved = push(a, peer, "b")
    assert moved.records == 2 and moved.added == 2
    assert newer <= known(b)


def test_a_pull_goes_on_from_the_last_page_merged(node: Factory, write: Callable[..., Path]) -> None:
    a, b = node(name="a"), node(name="b")
    upload_some(b, write, "b", 6)

    class Failing(DirectPeer):
        def catalog_page(self, since: int, limit: int) -> tuple[payload.Parsed, int, bool]:
            if since > 0:
                raise OSError("connection reset")
            return super().catalog_page(since, limit)

    with pytest.raises(OSError):
        pull(a, Failing(b), "b", page=4)
    assert len(known(a)) == 4
    rest = pull(a, DirectPeer(b), "b", page=4)
    assert rest.records == 2 and len(known(a)) == 6


def test_hostile_pages_are_validated_like_a_dump(node: Factory) -> None:
    a = node(name="a")

    class Hostile:
        def catalog_page(self, since: int, limit: int) -> tuple[payload.Parsed, int, bool]:
            return payload.validate([{"version": "0.2", "filehash": "'; DROP TABLE files; --",
                                      "filename": "../../x", "filesize": "1", "datetime": "1",
                                      "uploads": []}]), 5, False

        def push_catalog(self, dump: bytes) -> dict[str, Any]:
            return {"added": -3}

    exchange = pull(a, Hostile(), "evil")
    assert exchange.rejected == 1 and exchange.added == 0 and a.catalog.count() == 0

    class Backwards(Hostile):
        def catalog_page(self, since: int, limit: int) -> tuple[payload.Parsed, int, bool]:
            return payload.validate([]), since - 1, False

    with pytest.raises(PeerError, match="went from 5"):
        pull(a, Backwards(), "evil")


def test_a_bad_answer_to_a_push_is_a_clear_error(node: Factory, write: Callable[..., Path]) -> None:
    a = node(name="a")
    upload_some(a, write, "a", 1)

    class Liar:
        def push_catalog(self, dump: bytes) -> dict[str, Any]:
            return {"added": -3}

    with pytest.raises(PeerError, match="bad 'added'"):
        push(a, Liar(), "liar")  # type: ignore[arg-type]
    assert a.catalog.peer_cursors("liar") == (0, 0)  # nothing counted as pushed
