"""The node's page reads the node in a constant number of catalog statements.

The page (server/page.py) is rendered from ``CloudManager.view``; these tests count
the SQL statements it costs (every SQLite connection traced) and check that the
view tells what the catalog tells, file by file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloudmanager import CloudManager
from cloudmanager.server.auth import Access
from cloudmanager.server.page import Page
from cloudmanager.server.sessions import Sessions
from cloudmanager.server.settings import Settings
from cloudmanager.server.throttle import Throttle
from tests.conftest import Factory

HOSTS = ["memory://a", "memory://b", "memory://c"]


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement run on a SQLite connection opened from now on."""
    seen: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(seen.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced)
    return seen


def fill(cm: CloudManager, write: Callable[..., Path], count: int) -> list[str]:
    """``count`` files kept (one spread in shares, one pinned): their hashes."""
    digests = []
    for i in range(count):
        digest = cm.upload(write(f"f{i}.txt", f"file {i} of {count}".encode()),
                           spread="2/3" if i == 1 else None)
        assert digest
        digests.append(digest)
    assert cm.pin(digests[0])
    return digests


def page_statements(cm: CloudManager, statements: list[str]) -> tuple[int, dict[str, Any]]:
    """How many statements the page's view costs, and the view."""
    access = Access("t" * 32, Sessions(3600), Throttle(2, 10), secure_cookie=False)
    page = Page(cm, Settings(host="127.0.0.1", port=8976, token="t" * 32, secret="s" * 32,
                             public_url="http://127.0.0.1:8976"), access)
    page._view()  # warm: whatever a first call of a thread costs once (its connection)
    statements.clear()
    view = page._view()
    return len(statements), view


def test_the_page_costs_the_same_statements_for_10_and_100_files(
        node: Factory, write: Callable[..., Path], statements: list[str]) -> None:
    small, large = node(hosts=HOSTS, name="small"), node(hosts=HOSTS, name="large")
    fill(small, write, 10)
    fill(large, write, 100)
    (few, small_view), (many, large_view) = page_statements(small, statements), \
        page_statements(large, statements)
    assert len(small_view["files"]) == 10 and len(large_view["files"]) == 100
    assert 0 < few == many <= 8, (few, many)


def test_the_view_tells_what_the_catalog_tells(node: Factory, write: Callable[..., Path]) -> None:
    cm = node(hosts=HOSTS)
    digests = fill(cm, write, 12)
    cm.evict([digests[5]])
    view = cm.view(10)
    newest = cm.catalog.recent(10)
    assert [f.record.hash for f in view.files] == newest
    for state, digest in zip(view.files, newest, strict=True):
        assert state.record == cm.catalog.record(digest)
        assert state.entry == cm.catalog.entry(digest)
    assert (view.total, view.capacity, view.used) == (12, cm.capacity, cm.catalog.usage()[0])
    assert [(h.host.name, h.health) for h in view.hosts] == \
        list(cm.catalog.host_health([h.name for h in cm.hosts]).items())
    shared = next(f for f in cm.view(20).files if f.record.hash == digests[1])
    assert shared.holders == ["a (share 1/3)", "b (share 2/3)", "c (share 3/3)"]
