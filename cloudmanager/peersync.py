"""Catalog sync between nodes over HTTP: pull another node's changes, push ours.

Each catalog numbers its changes (the change sequence); a node remembers, per
peer, the last of the peer's numbers it pulled and the last of its own it
pushed, so a repeated exchange moves nothing.  What arrives is merged exactly as
``data_load`` merges a dump: validated as hostile input, then a union.

A merge numbers its own changes too, so records pulled from a peer would be
pushed back to it (and pushed ones pulled back) on the next exchange.  The merge
reports the numbers it gave, (first, last]; when all of this side's changes up
to ``first`` had already reached the peer, the ones up to ``last`` came from the
peer and need not go back: the cursor jumps over them.

A peer is hostile input too: a page is read within the caps of a page (at
most the records asked for, payload.PAGE_MAX_BYTES bytes: see
NodeClient.catalog_page), a page's cursor must fit the catalog's 64-bit
integers and move past ``since`` (unless the page is an empty last one), and the
numbers of a push's answer must fit as well; otherwise the exchange stops with
a PeerError (or the client's HostError) before anything of that page or answer
is merged or remembered.  A push sends pages within the same caps, so a peer
never refuses one for its size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard

from . import payload
from .errors import CloudManagerError
from .numbers import MAX_INT

if TYPE_CHECKING:
    from .manager import CloudManager

#: Records per page, each way.
PAGE = 2000


class PeerError(CloudManagerError):
    """A peer answered something a catalog sync cannot use."""


class CatalogPeer(Protocol):
    """The two calls a catalog sync makes to another node (NodeClient has them)."""

    def catalog_page(self, since: int, limit: int) -> tuple[payload.Parsed, int, bool]:
        """The peer's records changed after ``since``, at most ``limit``, validated
        (payload.read_page): (records, next cursor, more remain)."""

    def push_catalog(self, dump: bytes) -> dict[str, Any]:
        """Send records (a JSON dump, within the caps of a page) to merge; the peer's
        report of the merge."""


@dataclass
class Exchange:
    """What one direction of a catalog sync did."""

    peer: str
    direction: str  # "pull" or "push"
    records: int = 0  # records moved over the wire
    added: int = 0  # files new to the receiving catalog
    changed: int = 0  # files the receiving catalog learned something about
    rejected: int = 0  # records the receiving side refused (or no page could carry)
    cursor: int = 0  # the cursor remembered for next time


def _fits(value: object) -> TypeGuard[int]:
    """True when ``value`` is an integer (not a boolean) a catalog holds: 0 to MAX_INT."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INT


def _number(answer: dict[str, Any], key: str) -> int:
    value = answer.get(key, 0)
    if not _fits(value):
        raise PeerError(f"the peer's answer has a bad {key!r}: {str(value)[:40]!r}")
    return value


def _check_cursor(since: int, cursor: object, records: bool, more: bool) -> None:
    """Raise PeerError unless ``cursor`` is a change number a catalog holds, beyond
    ``since`` when the page carries ``records`` or says ``more`` remain (else a peer could
    keep a pull asking for the same page forever); a last, empty page may stay where it was."""
    if not _fits(cursor):
        raise PeerError(f"the peer's change cursor is not a number from 0 to {MAX_INT}: "
                        f"{str(cursor)[:40]!r}")
    if cursor < since:
        raise PeerError(f"the peer's change cursor went from {since} back to {cursor}: "
                        "was its catalog replaced?")
    if cursor == since and (records or more):
        said = "has records" if records else "says more remain"
        raise PeerError(f"the peer's change cursor stayed at {since} on a page that {said}: "
                        "a pull would never end")


def pull(manager: CloudManager, peer: CatalogPeer, key: str, *, page: int = PAGE,
         progress: Callable[[int], object] | None = None) -> Exchange:
    """Merge the peer's changes since the last pull; ``key`` names the peer (its URL).

    The cursor is saved after each page, so an interrupted pull goes on from
    there.  ``progress`` is called with the number of records of each page.
    """
    since, pushed = manager.peer_cursors(key)
    exchange = Exchange(key, "pull", cursor=since)
    while True:
        parsed, cursor, more = peer.catalog_page(since, page)
        _check_cursor(since, cursor, bool(parsed.count), more)
        report = manager.import_dump(parsed)
        exchange.records += parsed.count
        exchange.added += report.added
        exchange.changed += report.changed
        exchange.rejected += len(report.rejected)
        if pushed == report.first_seq:  # what the merge changed came from the peer
            pushed = report.last_seq
        manager.set_peer_cursor(key, pulled=cursor, pushed=pushed)
        exchange.cursor = since = cursor
        if progress is not None:
            progress(parsed.count)
        if not more or not parsed.count:
            return exchange


def push(manager: CloudManager, peer: CatalogPeer, key: str, *, page: int = PAGE,
         progress: Callable[[int], object] | None = None) -> Exchange:
    """Send the peer this catalog's changes since the last push."""
    pulled, since = manager.peer_cursors(key)
    exchange = Exchange(key, "push", cursor=since)
    while True:
        outgoing = manager.change_page(since, page)  # fewer records when they would pass the byte cap
        exchange.rejected += len(outgoing.skipped)
        if outgoing.texts:
            answer = peer.push_catalog(outgoing.dump())
            if not isinstance(answer, dict):
                raise PeerError("the peer's answer to a push is not a JSON object")
            exchange.records += len(outgoing.texts)
            exchange.added += _number(answer, "added")
            exchange.changed += _number(answer, "changed")
            exchange.rejected += _number(answer, "rejected")
            if "first_seq" in answer and pulled == _number(answer, "first_seq"):
                pulled = _number(answer, "last_seq")  # the peer's changes from our records
        elif not outgoing.skipped:
            return exchange
        manager.set_peer_cursor(key, pulled=pulled, pushed=outgoing.cursor)
        exchange.cursor = since = outgoing.cursor
        if progress is not None:
            progress(len(outgoing.texts))
        if not outgoing.more:
            return exchange
