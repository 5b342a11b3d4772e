"""Whether a record's locators can be its own: checked before a locator that came
from another node is stored, and again before anything is deleted, checked or
fetched through one.

A record from another node is hostile in every field.  A record for the file P
may carry, for one of this node's hosts, the locator of another file V's object
(``file:///vault/ab/cd/<V>``, or ``cm://node/objects/<V>`` on a fleet): deleting P
through it would delete V's copy while the catalog still says the host holds V.
The host kind decides what a locator can be (:meth:`Host.locates`); this module
applies it to catalog entries, as they say they are stored (sealed or plain,
whole copies or shares), and says what follows:

* the merge (``import_dump``, ``data_load``) rejects a record with a locator that
  cannot be its own (False) on a host of this node, and stores nothing of it;
* a copy is deleted, or counted by ``expire`` as a safe other copy, only through
  a locator that can only be the file's (True): one that cannot be told (None: a
  file locker's opaque URL, a sealed copy without a keyed name) is left alone;
* downloads and checks skip a locator that cannot be the file's (the bytes are
  verified after a download anyway, so one that cannot be told is tried).

Entries for hosts this node does not have are stored unchecked: they are never
used here, and are checked again, like every entry, when they are.
"""

from __future__ import annotations

from collections.abc import Callable

from .crypto import Key
from .hosts import Host
from .hosts.encrypted import EncryptedHost, sealed_locates, underneath
from .payload import Parsed, Rejected, to_dict
from .records import FileRecord, Share, Upload

#: Why a locator is not used: it cannot be this file's.
FOREIGN = "its locator names another object than this file's"
#: Why a copy is not deleted: nothing in its locator says it is this file's.
UNTOLD = "its locator cannot be told to be this file's (it is never deleted through it)"

HostOf = Callable[[str], Host | None]


def copy_locates(host: Host, upload: Upload, digest: str, key: Key | None) -> bool | None:
    """Whether ``upload`` (an entry of the file ``digest``) can be that file's copy on
    ``host``, read as the entry says it is stored: sealed (with ``key``, or the host's
    own) or plain.  False for an entry without a locator."""
    if upload.url is None:
        return False
    bare = underneath(host)
    if not upload.encrypted:
        return bare.locates(upload.url, digest)
    if isinstance(host, EncryptedHost) and host.key is not None:
        key = host.key
    return sealed_locates(bare, key, upload.url, digest)


def share_locates(host: Host, share: Share, is_file: Callable[[str], bool] | None = None) -> bool | None:
    """Whether ``share``'s locator can be that share's object on ``host`` (shares are
    stored as they were cut, on the host underneath an encrypting one, under the
    share's own SHA-256).  False for a share without a locator, and, with
    ``is_file`` (true for a known file's hash), for a share whose SHA-256 is a
    file's: a share is never a whole file, so such an entry names that file's copy."""
    if share.url is None or (is_file is not None and is_file(share.digest)):
        return False
    return underneath(host).locates(share.url, share.digest)


def not_deletable(host: Host, upload: Upload, digest: str, key: Key | None) -> str | None:
    """Why the copy ``upload`` of ``digest`` must not be deleted (or counted as a safe
    copy) through its locator; None when it can only be that file's."""
    verdict = copy_locates(host, upload, digest, key)
    return None if verdict is True else FOREIGN if verdict is False else UNTOLD


def problem(record: FileRecord, host_of: HostOf, key: Key | None,
            is_file: Callable[[str], bool] | None = None) -> tuple[str, str] | None:
    """(field, reason) when one of the record's locators, on a host of this node,
    cannot be its own (``is_file``: see :func:`share_locates`); None when none is
    known to be wrong."""
    for upload in record.uploads:
        host = host_of(upload.host) if upload.url is not None else None
        if host is not None and copy_locates(host, upload, record.hash, key) is False:
            return "uploads", f"the url for host {upload.host!r} cannot be this file's copy: {FOREIGN}"
    for share in record.shares:
        host = host_of(share.host) if share.url is not None else None
        if host is not None and share_locates(host, share, is_file) is False:
            return "shares", (f"the url of share {share.index} for host {share.host!r} cannot be that "
                              f"share's: {FOREIGN}")
    return None


def screen(parsed: Parsed, host_of: HostOf, key: Key | None, known: Callable[[str], bool]) -> Parsed:
    """``parsed`` without the records one of whose locators cannot be its own: those
    join the rejected ones (in dump order), with the field and the reason.
    ``known`` is true for the hash of a file the catalog knows (with the dump's own
    files, what a share's SHA-256 must not be)."""
    hashes = {record.hash for record in parsed.records}

    def is_file(digest: str) -> bool:
        return digest in hashes or known(digest)

    kept = Parsed([], [], list(parsed.rejected))
    for position, record in zip(parsed.positions, parsed.records, strict=True):
        found = problem(record, host_of, key, is_file)
        if found is None:
            kept.records.append(record)
            kept.positions.append(position)
        else:
            kept.rejected.append(Rejected(position, found[0], found[1], to_dict(record)))
    kept.rejected.sort(key=lambda rejected: rejected.index)
    return kept
