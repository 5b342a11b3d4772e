"""The host kit: what the host kinds share, written once.

* :func:`check_digest`, :func:`upload_size`, :func:`unreadable`: what every upload
  checks first (a SHA-256, a readable source), with the same messages.
* :class:`Sharded`: a kind that stores each object by its SHA-256 in the sharded
  layout (:mod:`cloudmanager.layout`) below a root, its locators URLs that end in
  ``/ab/cd/<sha256>``; it reads which file a locator names (the locator parser).

The rest of the kit sits in :mod:`~cloudmanager.hosts.registry`, which builds hosts
from URLs: a kind declares its options as data (:class:`~.registry.Option`: a name,
a converter, a default, a line of help; :data:`~.registry.RETRY_OPTIONS` for the
retry settings every network kind has), :func:`~.registry.read_options` converts
them and refuses an unknown one, and :func:`~.registry.secret_from_env` reads a
secret from the environment variable an option names.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlsplit

from ..errors import HostError, ObjectMissing
from ..layout import digest_at_end, is_sha256
from .base import ByHash, Host


class Sharded(ByHash):
    """A :class:`~cloudmanager.hosts.base.ByHash` host whose objects are ``ROOT/ab/cd/<sha256>``
    and whose locators are URLs ending in that layout (folders, SFTP, WebDAV, S3, rclone).

    A kind sets :attr:`kind` and :attr:`locator_schemes` (and :attr:`locator_query`
    when its locators may carry one); :meth:`_digest_of` is then written here.
    """

    #: How messages name the kind: "not a locator of this <kind> host".
    kind: ClassVar[str]
    #: The URL schemes of this kind's locators.
    locator_schemes: ClassVar[frozenset[str]]
    #: Whether a locator may carry a query string.
    locator_query: ClassVar[bool] = False
    #: The characters that may stand before the first shard of a locator's path.
    layout_lead: ClassVar[str] = "/"

    def _locator_path(self, locator: str) -> str | None:
        """The part of ``locator`` that ends in the layout (its percent-decoded path), or
        None when it is not a URL of this kind.  ValueError for a malformed URL."""
        parts = urlsplit(locator)
        if parts.scheme not in self.locator_schemes or (parts.query and not self.locator_query):
            return None
        return unquote(parts.path)

    def _shown(self, locator: object) -> str:
        """``locator`` as an error message shows it (shortened)."""
        return repr(str(locator)[:200])

    def _digest_of(self, locator: str) -> str:
        """The hash a locator names: a URL of this kind ending in ab/cd/<hash>; ObjectMissing
        when it names none."""
        path = self._locator_path(locator) if isinstance(locator, str) else None
        digest = digest_at_end(path, self.layout_lead) if path is not None else None
        if digest is None:
            raise ObjectMissing(self.name, f"not a locator of this {self.kind} host: {self._shown(locator)}")
        return digest


def check_digest(host: Host, digest: str) -> None:
    """HostError unless ``digest`` is a SHA-256 (64 lowercase hex digits)."""
    if not is_sha256(digest):
        raise HostError(host.name, f"not a SHA-256: {str(digest)[:80]!r}")


def unreadable(host: Host, source: Path | str, exc: OSError) -> HostError:
    """The error for an upload whose local file cannot be read (raise it ``from exc``)."""
    return HostError(host.name, f"cannot read {source}: {exc.strerror or exc}")


def upload_size(host: Host, source: Path, digest: str) -> int:
    """The size of the file an upload sends, after checking ``digest``; HostError when
    ``digest`` is no SHA-256 or ``source`` cannot be read."""
    check_digest(host, digest)
    try:
        return source.stat().st_size
    except OSError as exc:
        raise unreadable(host, source, exc) from exc
