"""``memory://NAME``: a host that keeps objects in this process's memory.

For tests and examples (as Devilry's MemoryDeliveryStore).  Every host of one
NAME in a process shares one store, so two managers in a test see each other's
uploads as two nodes would see one real host.  It holds whole files in memory
by nature: not for large files.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import ClassVar

from ..errors import ObjectMissing
from ..names import is_sha256
from ..streams import Sink
from .base import ByHash, Checker, Deleter, Host
from .registry import HostSpec


class MemoryHost(ByHash, Deleter, Checker):
    """An in-process dictionary of objects, shared by name."""

    scheme = "memory"
    _stores: ClassVar[dict[str, dict[str, bytes]]] = {}
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str):
        super().__init__(name)
        with self._guard:
            self.objects = self._stores.setdefault(name, {})

    @classmethod
    def reset(cls, name: str | None = None) -> None:
        """Empty one named store (or all of them)."""
        with cls._guard:
            for key, store in cls._stores.items():
                if name is None or key == name:
                    store.clear()

    def _digest_of(self, locator: str) -> str:
        """The hash a locator names: ``memory://NAME/<sha256>``."""
        prefix = f"memory://{self.name}/"
        key = locator[len(prefix):] if isinstance(locator, str) and locator.startswith(prefix) else ""
        if not is_sha256(key):
            raise ObjectMissing(self.name, f"not a locator of this host: {str(locator)[:200]!r}")
        return key

    def upload(self, source: Path, name: str, digest: str) -> str:
        """Keep the file's bytes under its hash."""
        data = source.read_bytes()
        with self._guard:
            self.objects[digest] = data
        return f"memory://{self.name}/{digest}"

    def download(self, locator: str, out: Sink) -> None:
        """Write the stored bytes to ``out``."""
        with self._guard:
            data = self.objects.get(self._digest_of(locator))
        if data is None:
            raise ObjectMissing(self.name, "no such object")
        out.write(data)

    def delete(self, locator: str) -> None:
        """Forget the object."""
        with self._guard:
            self.objects.pop(self._digest_of(locator), None)

    def check(self, locator: str) -> int | None:
        """The object's size."""
        with self._guard:
            data = self.objects.get(self._digest_of(locator))
        if data is None:
            raise ObjectMissing(self.name, "no such object")
        return len(data)


def from_spec(spec: HostSpec) -> Host:
    """``memory://NAME``: an in-process host."""
    if not spec.netloc or spec.path not in ("", "/"):
        raise ValueError("a memory host is written memory://NAME")
    return MemoryHost(spec.name or spec.netloc)
