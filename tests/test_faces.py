"""What the faces (the CLI, the server) ask the manager: the host report, the link policy."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cloudmanager import CloudManager, links
from cloudmanager.errors import HostError
from cloudmanager.hosts.memory import MemoryHost


class RefusingHost(MemoryHost):
    """A memory host that refuses every upload."""

    def upload(self, source: Path, name: str, digest: str) -> str:
        raise HostError(self.name, "disk full")


def test_the_host_report_counts_each_hosts_files_and_its_failures(
        node: Callable[..., CloudManager], write: Callable[..., Path]) -> None:
    MemoryHost.reset()
    refusing = RefusingHost("refusing")
    refusing.description = "always full"
    cm = node(hosts=["memory://held", refusing])
    before = int(time.time())
    cm.upload(write("a.txt", b"alpha"))
    cm.upload(write("b.txt", b"beta"))
    report = {row.name: row for row in cm.host_report()}
    assert list(report) == ["held", "refusing"]
    held, failing = report["held"], report["refusing"]
    assert (held.kind, held.url, held.active, held.files, held.failures) == \
        ("memory", "memory://held", True, 2, 0)
    assert held.last_ok is not None and held.last_ok >= before and held.last_error is None
    assert (failing.files, failing.failures, failing.last_ok) == (0, 2, None)
    assert failing.description == "always full"
    assert failing.last_error is not None and "disk full" in failing.last_error


def test_a_link_lives_at_most_the_smallest_keep_days(node: Callable[..., CloudManager]) -> None:
    cm = node(hosts=["memory://x", "memory://y", "memory://z"])
    assert cm.longest_link() == links.DEFAULT_MAX_DAYS * links.DAY
    cm.hosts[0].keep_days, cm.hosts[2].keep_days = 10, 3
    assert cm.longest_link() == 3 * links.DAY
    assert cm.link_expiry(3 * links.DAY, now=1000.5) == 1000 + 3 * links.DAY
    with pytest.raises(ValueError, match=r"3 days \(the smallest keep_days of this node's hosts\)"):
        cm.link_expiry(3 * links.DAY + 1)


def test_with_no_keep_days_a_link_lives_at_most_the_default(node: Callable[..., CloudManager]) -> None:
    cm = node()
    now = int(time.time())
    assert now + 60 <= cm.link_expiry(60) <= int(time.time()) + 60
    with pytest.raises(ValueError, match=r"365 days \(the longest allowed\)"):
        cm.link_expiry(366 * links.DAY)
