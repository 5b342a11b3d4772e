"""Turn a host URL (``file:///srv/vault``, ``plowshare://rghost``...) into a host.

Every kind registers a factory under its URL scheme.  A ``name=`` query
parameter names the host (``file:///mnt/a/data?name=nas``); otherwise each kind
picks a name that is the same on every node using the same host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import parse_qs, unquote, urlsplit

from .base import Host
from .folder import FolderHost
from .memory import MemoryHost
from .plowshare import PlowshareHost

#: scheme -> factory(netloc, path, name or None)
Factory = Callable[[str, str, "str | None"], Host]
_KINDS: dict[str, Factory] = {}


def register(scheme: str, factory: Factory) -> None:
    """Make ``scheme://...`` URLs build hosts with ``factory(netloc, path, name)``."""
    _KINDS[scheme] = factory


def schemes() -> list[str]:
    """The URL schemes known, sorted."""
    return sorted(_KINDS)


def _file(netloc: str, path: str, name: str | None) -> Host:
    if netloc not in ("", "localhost"):
        raise ValueError(f"a folder host needs an absolute path: file:///abs/dir (got host {netloc!r})")
    return FolderHost(path, name)


def _memory(netloc: str, path: str, name: str | None) -> Host:
    if not netloc or path not in ("", "/"):
        raise ValueError("a memory host is written memory://NAME")
    return MemoryHost(name or netloc)


def _plowshare(netloc: str, path: str, name: str | None) -> Host:
    if not netloc or path not in ("", "/"):
        raise ValueError("a plowshare host is written plowshare://MODULE")
    return PlowshareHost(netloc, name)


register("file", _file)
register("memory", _memory)
register("plowshare", _plowshare)


def make_host(spec: str | Host) -> Host:
    """A host from its URL (a Host object is returned as it is).

    Raises ValueError naming the problem for an unknown scheme or a bad URL.
    """
    if isinstance(spec, Host):
        return spec
    if not isinstance(spec, str) or "://" not in spec:
        raise ValueError(f"not a host URL: {str(spec)[:100]!r} (expected e.g. file:///srv/vault)")
    parts = urlsplit(spec)
    factory = _KINDS.get(parts.scheme)
    if factory is None:
        raise ValueError(f"unknown host kind {parts.scheme!r}: known kinds are {', '.join(schemes())}")
    names = parse_qs(parts.query).get("name")
    return factory(unquote(parts.netloc), unquote(parts.path), names[-1] if names else None)


def make_hosts(specs: Iterable[str | Host]) -> list[Host]:
    """Hosts from URLs; raises ValueError when two would have the same name."""
    hosts = [make_host(spec) for spec in specs]
    seen: set[str] = set()
    for host in hosts:
        if host.name in seen:
            raise ValueError(f"two hosts are named {host.name!r}: give one another name with ?name=")
        seen.add(host.name)
    return hosts
