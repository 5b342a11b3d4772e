"""``plowshare://MODULE``: anonymous file lockers through plowshare.

Uses the PyPI package ``plowshare`` (the "plowshare-wrapper", imported as
``plowshare.plowshare`` on Python 3), which runs plowshare's commands
``plowup MODULE FILE`` and ``plowdown URL -o DIR --temp-rename`` and reads the
last token of their output.  Those commands come from the plowshare tool, which
is not on PyPI: when they are missing, this host fails with a clear HostError
and the other hosts carry on.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import HostError
from ..streams import Sink, copy_stream
from .base import Host
from .registry import HostSpec


def _is_locker_url(locator: str) -> bool:
    """True for what plowdown may be given: an http(s) URL without whitespace."""
    return (isinstance(locator, str) and locator.startswith(("http://", "https://"))
            and not any(ch.isspace() for ch in locator))


def _wrapper(module: str) -> Any:
    from plowshare.plowshare import Plowshare

    return Plowshare([module])


class PlowshareHost(Host):
    """One plowshare module (a file locker such as ``rghost`` or ``mediafire``)."""

    scheme = "plowshare"

    def __init__(self, module: str, name: str | None = None):
        if not module or not module.replace("_", "").isalnum():
            raise ValueError(f"not a plowshare module name: {module!r}")
        super().__init__(name or module)
        self.module = module

    def url(self) -> str:
        """``plowshare://MODULE``."""
        return f"plowshare://{self.module}"

    def _need(self, command: str) -> None:
        if shutil.which(command) is None:
            raise HostError(self.name, f"the {command!r} command is not installed "
                            "(install plowshare, see INSTALL.md)")

    def upload(self, source: Path, name: str, digest: str) -> str:
        """Run ``plowup MODULE FILE``; the file goes up under its own ``name``."""
        self._need("plowup")
        with tempfile.TemporaryDirectory(prefix="cm-plowup-") as folder:
            # The locker shows this name, not the hash.  No whitespace: plowshare's
            # output is read as whitespace-separated tokens.
            named = Path(folder) / "_".join(name.split())
            named.symlink_to(source.resolve())
            try:
                result = _wrapper(self.module).upload_to_host(str(named), self.module)
            except IndexError:
                raise HostError(self.name, "plowup printed no URL") from None
        if "error" in result:
            raise HostError(self.name, f"plowup failed: {result['error']}")
        url = result.get("url")
        if not isinstance(url, str) or "://" not in url:
            raise HostError(self.name, f"plowup printed no URL: {str(url)[:200]!r}")
        return url

    def locates(self, locator: str, digest: str) -> bool | None:
        """None for a file locker URL: the locker's URLs are opaque, nothing in them says
        which file they hold (this kind cannot delete, so nothing is ever deleted through
        one); False for anything else."""
        return None if _is_locker_url(locator) else False

    def download(self, locator: str, out: Sink) -> None:
        """Run ``plowdown URL -o DIR --temp-rename`` and stream the file to ``out``."""
        if not _is_locker_url(locator):
            raise HostError(self.name, f"not a file locker URL: {locator[:200]!r}")
        self._need("plowdown")
        with tempfile.TemporaryDirectory(prefix="cm-plowdown-") as folder:
            try:
                result = _wrapper(self.module).download_from_host(
                    {"url": locator, "host_name": self.module}, folder, "download"
                )
            except (IndexError, OSError) as exc:
                raise HostError(self.name, f"plowdown gave no file: {exc}") from None
            if "error" in result:
                raise HostError(self.name, f"plowdown failed: {result['error']}")
            with open(result["filename"], "rb") as handle:
                copy_stream(handle, out)


def from_spec(spec: HostSpec) -> Host:
    """``plowshare://MODULE``: a file locker."""
    if not spec.netloc or spec.path not in ("", "/"):
        raise ValueError("a plowshare host is written plowshare://MODULE")
    return PlowshareHost(spec.netloc, spec.name)
