"""``cm://HOST:PORT`` (HTTP) and ``cms://HOST:PORT`` (HTTPS): another node's store.

The other node runs ``cm serve``; this host sends it files (it verifies each
SHA-256 on arrival, keeps the file in its cache and sends it on to its own
hosts) and fetches them back, through :class:`~cloudmanager.nodeclient.NodeClient`.
Objects are addressed by content: the locator is
``cm://HOST:PORT/objects/<sha256>`` (``cms://`` with TLS).  Only its hash is
used when fetching, always from this host's own node: a locator naming another
node, path or query is refused.

The token is the other node's ``[serve]`` token, given in the host record
(``token`` or ``token_env``); it is required, and never shown.

Options (URL query or the host's ``config`` table):

``timeout``
    Seconds (default 30) to connect, and between two reads or writes.
``retries``, ``retry_delay``
    Transient failures are retried (see :class:`~.retry.RetryPolicy`); a
    refused token (401, 403) or a full store (507) is not.
``ca``
    For ``cms://``: a CA file to trust for the node's certificate (a node
    with a certificate of its own making), instead of the system's CAs.

The default ``name`` is ``HOST:PORT``: the same for ``cm://`` and ``cms://``,
and on every node that uses that node.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ObjectMissing
from ..nodeclient import DEFAULT_PORT, DEFAULT_TIMEOUT, NodeClient
from ..retry import RetryPolicy
from ..streams import Sink
from .base import ByHash, Checker, Deleter, Host
from .kit import check_digest
from .registry import RETRY_OPTIONS, HostSpec, Option, read_options, seconds

#: Options this kind understands.
OPTIONS = (
    Option("timeout", seconds, DEFAULT_TIMEOUT, "seconds to connect, and between two reads or writes"),
    Option("ca", str, None, "for cms://: a CA file to trust for the node's certificate"),
    *RETRY_OPTIONS,
)
_OBJECT = re.compile(r"/objects/([0-9a-f]{64})")


class NodeHost(ByHash, Deleter, Checker):
    """The store of another node, served by its ``cm serve``."""

    scheme = "cm"
    verifies_bytes = True  # the node keeps a file only when its bytes are the hash given

    def __init__(self, url: str, token: str, *, name: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 ca: str | None = None, retry: RetryPolicy | None = None):
        """``url`` is ``cm://HOST[:PORT]`` or ``cms://HOST[:PORT]`` (port 8976 by default)."""
        parts = urlsplit(url)
        if parts.scheme not in ("cm", "cms"):
            raise ValueError(f"a node host URL starts with cm:// or cms://, not {parts.scheme}://")
        if not parts.hostname or parts.path not in ("", "/") or parts.username or parts.password:
            raise ValueError("a node host is written cm://HOST:PORT (its token goes in the host record)")
        if not token:
            raise ValueError("a cm:// host needs the other node's token "
                             "(token or token_env in its host record)")
        if ca is not None and parts.scheme != "cms":
            raise ValueError("the ca option is for cms:// hosts (TLS)")
        if ca is not None and not Path(ca).is_file():
            raise ValueError(f"the ca option names no file: {ca!r}")
        self.url_scheme = parts.scheme
        self.hostname = parts.hostname.lower()
        try:
            self.port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ValueError("the port of a cm:// host must be a number from 1 to 65535") from None
        shown = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        self.netloc = f"{shown}:{self.port}"
        super().__init__(name or self.netloc)
        self.client = NodeClient(f"{self.url_scheme}://{self.netloc}", token, name=self.name,
                                 timeout=timeout, verify=ca if ca is not None else True, retry=retry)

    def url(self) -> str:
        """``cm[s]://HOST:PORT``: never the token."""
        return f"{self.url_scheme}://{self.netloc}"

    def _locator(self, digest: str) -> str:
        return f"{self.url_scheme}://{self.netloc}/objects/{digest}"

    def _digest_of(self, locator: str) -> str:
        """The hash a locator of this node names; anything else is refused."""
        match = None
        if isinstance(locator, str):
            parts = urlsplit(locator)
            try:
                port = parts.port or DEFAULT_PORT
            except ValueError:
                port = None
            if (parts.scheme in ("cm", "cms") and (parts.hostname or "") == self.hostname
                    and port == self.port and not parts.query and not parts.fragment
                    and parts.username is None and parts.password is None):
                match = _OBJECT.fullmatch(parts.path)
        if match is None:
            raise ObjectMissing(self.name, f"not a locator of this node: {str(locator)[:200]!r}")
        return match.group(1)

    # -- the contract -----------------------------------------------------------------

    def upload(self, source: Path, name: str, digest: str) -> str:
        """Send the file (streamed); the node keeps it only if its SHA-256 is ``digest``."""
        check_digest(self, digest)
        self.client.put(digest, name, source)
        return self._locator(digest)

    def download(self, locator: str, out: Sink) -> None:
        """Stream the object to ``out`` (the node fetches it from its own hosts if needed)."""
        self.client.get(self._digest_of(locator), out)

    def delete(self, locator: str) -> None:
        """Make the node forget the object (nothing happens when it is gone already)."""
        self.client.delete(self._digest_of(locator))

    def check(self, locator: str) -> int | None:
        """The object's size as the node records it (nothing is downloaded)."""
        digest = self._digest_of(locator)
        size = self.client.head(digest)
        if size is None:
            raise ObjectMissing(self.name, f"no such object: {digest}")
        return size

    def close(self) -> None:
        """Close the connections to the node."""
        self.client.close()


def from_spec(spec: HostSpec) -> Host:
    """``cm://HOST:PORT`` (HTTP) or ``cms://HOST:PORT`` (HTTPS), with the node's token."""
    options = read_options(spec.options, OPTIONS, "cm://")
    url = spec.parts._replace(query="", fragment="").geturl()
    return NodeHost(url, spec.token or "", name=spec.name, timeout=options["timeout"], ca=options["ca"],
                    retry=RetryPolicy.from_options(options))
