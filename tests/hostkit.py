"""Host objects for tests that need a host to fail, lie or count (wrapping a real host)."""

from __future__ import annotations

import threading
from pathlib import Path

from cloudmanager.errors import HostError
from cloudmanager.hosts import Host
from cloudmanager.streams import Sink


class Recording(Host):
    """Wraps a real host: counts calls, and can be told to fail or to lie."""

    scheme = "recording"

    def __init__(self, inner: Host, name: str | None = None, log: list[str] | None = None):
        super().__init__(name or inner.name)
        self.inner = inner
        self.uploads = 0
        self.downloads = 0
        self.fail_uploads = False
        self.fail_downloads = False
        self.lie = False
        self.log = log if log is not None else []
        self._guard = threading.Lock()

    def upload(self, source: Path, name: str, digest: str) -> str:
        """Count, then fail or pass on."""
        with self._guard:
            self.uploads += 1
        if self.fail_uploads:
            raise HostError(self.name, "refused (test)")
        return self.inner.upload(source, name, digest)

    def locates(self, locator: str, digest: str) -> bool | None:
        """As the wrapped host says."""
        return self.inner.locates(locator, digest)

    def download(self, locator: str, out: Sink) -> None:
        """Count and log, then fail, lie or pass on."""
        with self._guard:
            self.downloads += 1
            self.log.append(self.name)
        if self.fail_downloads:
            raise HostError(self.name, "unreachable (test)")
        if self.lie:
            out.write(b"not the bytes you stored")
            return
        self.inner.download(locator, out)
