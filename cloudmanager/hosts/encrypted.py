"""Any host, with client-side encryption: the host receives sealed bytes only.

:func:`encrypting` wraps a host so that what it stores is sealed with the node's
key (see cloudmanager/crypto.py) under a keyed name: the host learns neither the
file's name, nor its SHA-256, nor its bytes.  The wrapper keeps the inner host's
name (the catalog and dumps see the same host) and its abilities (delete, check).

Uploads seal the file into a temporary file first (hosts take a path), hashing
the sealed bytes on the way.  A content-addressed host stores the sealed copy
under the file's keyed name (HMAC of its SHA-256, see Key.object_name), so that
a node with the key can tell from a locator whose sealed copy it names; a host
that verifies the bytes it is given (another node) gets the sealed bytes' own
SHA-256 instead.  Whether a locator is a file's sealed copy (:meth:`locates`)
is True only for its keyed name; it cannot be told (None) for the sealed bytes'
hash (another node, and copies sealed before keyed names), for a host whose
locators are opaque, or without the key: such copies are fetched (and verified
on the way) but never deleted through a locator.  Downloads open the bytes as they stream in and
raise HostError for anything not authentic, so the manager tries the next host.
"""

from __future__ import annotations

import os
import tempfile
from functools import cache
from pathlib import Path

from ..crypto import DecryptError, Decryptor, Key, encrypt, plain_size
from ..errors import HostError, HostUnsupported
from ..streams import Handoff, HashingWriter, Sink
from .base import Adopter, ByHash, Checker, Deleter, Host


class EncryptedHost(Host):
    """A host whose objects are sealed on this side (use :func:`encrypting`)."""

    scheme = "encrypted"
    encrypted = True

    def __init__(self, inner: Host, key: Key | None, spool: Path | None = None):
        super().__init__(inner.name)
        self.inner = inner
        self.key = key
        self.spool = spool
        self.active = inner.active
        self.keep_days = inner.keep_days
        self.description = inner.description

    def url(self) -> str:
        """The inner host's URL."""
        return self.inner.url()

    def _key(self) -> Key:
        if self.key is None:
            raise HostError(self.name, "its copies are encrypted and this node has no key "
                            "(restore it from a backup, or `cm key init` for new files)")
        return self.key

    def upload(self, source: Path, name: str, digest: str) -> str:
        """Seal ``source`` and store it under a keyed name (the sealed file is given
        away to a host that can adopt it, so a folder host moves it, not copies it)."""
        key = self._key()
        fd, temp = tempfile.mkstemp(dir=self.spool, prefix=".tmp-sealed-")
        try:
            with os.fdopen(fd, "wb") as out:
                sealed = HashingWriter(out)
                handoff = Handoff(sealed)  # sealing overlaps hashing and writing what is sealed
                try:
                    with open(source, "rb") as handle:
                        try:
                            encrypt(handle, handoff, key)
                        finally:
                            handoff.close()
                except OSError as exc:
                    raise HostError(self.name, f"cannot seal the file for it: {exc.strerror or exc}") from exc
            send = self.inner.adopt if isinstance(self.inner, Adopter) else self.inner.upload
            keyed = key.object_name(digest)
            return send(Path(temp), keyed, sealed.hexdigest() if self.inner.verifies_bytes else keyed)
        finally:
            Path(temp).unlink(missing_ok=True)

    def download(self, locator: str, out: Sink) -> None:
        """Fetch the sealed object and write the plaintext to ``out``."""
        opener = Decryptor(out, self._key())
        try:
            self.inner.download(locator, opener)
            opener.finish()
        except DecryptError as exc:
            raise HostError(self.name, f"refused its copy: {exc}") from None

    def locates(self, locator: str, digest: str) -> bool | None:
        """Whether ``locator`` can be this file's sealed copy (see the module's notes)."""
        return sealed_locates(self.inner, self.key, locator, digest)

    def close(self) -> None:
        """Close the inner host."""
        self.inner.close()


def underneath(host: Host) -> Host:
    """The host that stores the bytes: the inner one of an encrypting host, else ``host``."""
    return host.inner if isinstance(host, EncryptedHost) else host


def sealed_locates(inner: Host, key: Key | None, locator: str, digest: str) -> bool | None:
    """Whether ``locator``, on ``inner``, can be the copy of ``digest`` sealed with ``key``.

    False when it is not a locator of ``inner`` at all; True when it names the
    file's keyed name; None otherwise (the sealed bytes' own hash, an opaque
    locator, or no key to compute the keyed name with).
    """
    if not isinstance(inner, ByHash):
        return None if inner.locates(locator, digest) is not False else False
    named = inner.key_of(locator)
    if named is None:
        return False
    if key is not None and named == key.object_name(digest):
        return True
    return None


class _Deletes(EncryptedHost, Deleter):
    def delete(self, locator: str) -> None:
        """Delete the sealed object."""
        assert isinstance(self.inner, Deleter)
        self.inner.delete(locator)


class _Checks(EncryptedHost, Checker):
    def check(self, locator: str) -> int | None:
        """The plaintext size, from the sealed object's size."""
        assert isinstance(self.inner, Checker)
        sealed = self.inner.check(locator)
        if sealed is None:
            return None
        size = plain_size(sealed)
        if size is None:
            raise HostUnsupported(self.name, f"holds {sealed} bytes: not the size of a sealed object")
        return size


class _DeletesAndChecks(_Deletes, _Checks):
    pass


@cache
def _kind(deletes: bool, checks: bool) -> type[EncryptedHost]:
    return {(False, False): EncryptedHost, (True, False): _Deletes, (False, True): _Checks,
            (True, True): _DeletesAndChecks}[deletes, checks]


def encrypting(inner: Host, key: Key | None, spool: Path | None = None) -> EncryptedHost:
    """``inner`` with client-side encryption under ``key`` (None: the node has no key,
    and the host's copies are reported unreadable).  ``spool``: where sealed files
    wait to be sent (default: the system's temporary directory)."""
    kind = _kind(isinstance(inner, Deleter), isinstance(inner, Checker))
    return kind(inner, key, spool)
