"""The host contract: what every kind of host does, written once, as docstrings.

A *host* is anything that can take a file and give it back later: a folder, a
file locker, an SFTP server, a bucket, another node.  A host kind implements two
required operations, :meth:`Host.upload` and :meth:`Host.download`; abilities
some hosts have and others lack are separate interfaces that callers discover
with ``isinstance``: :class:`Deleter` and :class:`Checker`.

Rules every implementation follows:

* Errors are :class:`~cloudmanager.errors.HostError` (or its subclass
  :class:`~cloudmanager.errors.ObjectMissing` when the host answered that it does
  not hold the object), with a message that names what went wrong and never a
  secret.  Anything else escaping a host is a bug in that host; the manager
  still records it as that host's error.
* A locator is the string ``upload`` returned (a URL where the host has one).
  Locators also arrive from other nodes' dumps, so they are hostile: a host
  validates every locator before using it and refuses one that points outside
  its own storage.  :meth:`Host.locates` says whether a locator can be the
  object of a given SHA-256: the manager asks it before a locator from a record
  is stored, and again before anything is deleted, checked or fetched through
  it (a record naming another file's object must not delete that file's copy).
* Files are streamed: no operation holds a whole file in memory (the in-process
  ``memory://`` host, made for tests, is the one exception).
* Methods may be called from several threads at once.
* ``name`` identifies the host in the catalog and in dumps: it is the same on
  every node that uses the same host.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from ..errors import HostError
from ..streams import Sink

log = logging.getLogger(__name__)


class Host(ABC):
    """A place files can be sent to and fetched back from."""

    #: The URL scheme of this kind of host (``file``, ``plowshare``...).
    scheme: ClassVar[str]
    #: True for a host that receives sealed bytes only (see hosts/encrypted.py).
    encrypted: ClassVar[bool] = False
    #: True for a kind that keeps an upload only when its bytes have the SHA-256 it
    #: is given (another node): it cannot store an object under a name of the
    #: caller's choosing (hosts/encrypted.py then gives it the sealed bytes' hash).
    verifies_bytes: ClassVar[bool] = False

    def __init__(self, name: str):
        self.name = name
        #: An inactive host gets no new uploads but is still used for downloads.
        self.active = True
        #: Copies older than this many days are removed by ``expire`` (None: kept).
        self.keep_days: int | None = None
        #: Free text from the configuration, for people.
        self.description = ""

    @abstractmethod
    def upload(self, source: Path, name: str, digest: str) -> str:
        """Store the file at ``source`` and return its locator.

        ``name`` is the file's (clean) name, for hosts that show names to
        people; ``digest`` its SHA-256, for content-addressed hosts.  Uploading
        the same content twice may return the same locator.  Raises HostError.
        """

    @abstractmethod
    def download(self, locator: str, out: Sink) -> None:
        """Write the bytes stored under ``locator`` to the binary file ``out``.

        Raises ObjectMissing when the host does not hold it, HostError for any
        other failure.  The caller verifies the bytes; a host need not.
        """

    def locates(self, locator: str, digest: str) -> bool | None:
        """Whether ``locator`` can name the object of the file whose SHA-256 is ``digest``.

        True: it can only be that file's object on this host (a content-addressed
        layout whose key is ``digest``).  False: it cannot be (it names another
        object, or is not a locator of this host at all).  None: this kind cannot
        tell (a file locker's opaque URL, a sealed copy whose name is not keyed).
        Never raises, never asks the server: it reads the locator only.

        Records from other nodes are hostile: the manager refuses to store a
        locator for which this is False, and deletes (or counts as a safe copy)
        only through a locator for which it is True.  The default, for kinds
        that do not say, is None.
        """
        return None

    def url(self) -> str:
        """The host's URL as configured, without any secret in it."""
        return f"{self.scheme}://{self.name}"

    def close(self) -> None:  # noqa: B027 - optional hook, deliberately empty
        """Release connections or other resources (default: nothing to do)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.url()}>"


class ByHash(Host):
    """A host whose locators name each object by a SHA-256 (the sharded layout
    ``ab/cd/<sha256>`` of folders, SFTP, WebDAV, S3, rclone; another node's
    ``/objects/<sha256>``): whether a locator is a file's is read from the locator.

    A kind implements :meth:`_digest_of`; :meth:`key_of` and :meth:`locates` are
    built on it.
    """

    @abstractmethod
    def _digest_of(self, locator: str) -> str:
        """The SHA-256 that ``locator`` names; HostError (ObjectMissing) when it is not
        a locator of this host."""

    def key_of(self, locator: str) -> str | None:
        """The SHA-256 that ``locator`` names, or None when it is not a locator of this host."""
        try:
            return self._digest_of(locator)
        except (HostError, ValueError):  # ValueError: urlsplit's, for a malformed URL
            return None

    def locates(self, locator: str, digest: str) -> bool:
        """True when ``locator`` is one of this host's and names ``digest``'s object."""
        return self.key_of(locator) == digest


class Deleter(ABC):
    """Ability: the host can remove an object it stores."""

    @abstractmethod
    def delete(self, locator: str) -> None:
        """Remove the object; removing an object already gone is not an error."""


class Adopter(ABC):
    """Ability: the host can take a file the caller gives away, moving it instead of
    copying it when it can (a folder on the same file system)."""

    @abstractmethod
    def adopt(self, source: Path, name: str, digest: str) -> str:
        """As :meth:`Host.upload`; afterwards ``source`` may be gone (moved)."""


class Checker(ABC):
    """Ability: the host can tell whether it holds an object, without sending it."""

    @abstractmethod
    def check(self, locator: str) -> int | None:
        """The object's size in bytes (None when the host cannot tell sizes).

        Raises ObjectMissing when the host does not hold it, HostError when it
        cannot answer.
        """


def describe(exc: BaseException) -> str:
    """What a host's exception says, for the catalog.  Anything but a HostError is
    a bug in the host: its traceback goes to the log."""
    if isinstance(exc, HostError):
        return exc.reason
    log.error("host raised an unexpected %s", type(exc).__name__, exc_info=exc)
    return f"{type(exc).__name__}: {exc}"[:1024]
