"""What a running ``cm serve`` needs: where to listen, the token, the secret, TLS.

Built from the configuration's ``[serve]`` table and the command line; every
problem is a ConfigError naming the file and the key.  No web framework here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..build import serve_secret
from ..config import MIN_TOKEN_LENGTH, ConfigError, ServeConfig, ServeLimits, parse_bind


@dataclass(frozen=True)
class Settings:
    """The settings of a running server (the token and the secret are never shown)."""

    host: str
    port: int
    token: str = field(repr=False)
    secret: str = field(repr=False)
    public_url: str
    tls_cert: Path | None = None
    tls_key: Path | None = None
    limits: ServeLimits = field(default_factory=ServeLimits)
    metrics_bind: tuple[str, int] | None = None  # a second listener serving /metrics alone
    session_lifetime: int = 12 * 3600  # seconds a login on the page lasts

    @property
    def tls(self) -> bool:
        """True when serving HTTPS."""
        return self.tls_cert is not None

    @classmethod
    def from_config(cls, serve: ServeConfig, *, bind: str | None = None, tls_cert: Path | None = None,
                    tls_key: Path | None = None) -> Settings:
        """The settings of ``serve``, with ``bind`` and the TLS files of the command line
        winning.  Raises ConfigError (a token is required) or ValueError (a bad bind)."""
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("give both --tls-cert and --tls-key, or neither")
        if bind is not None:
            parse_bind(bind)
            serve = replace(serve, bind=bind)
        if tls_cert is not None:
            serve = replace(serve, tls_cert=tls_cert, tls_key=tls_key)
        if not serve.token:
            if serve.token_env:
                raise ConfigError(f"{serve.where('token_env')}: the environment variable {serve.token_env} "
                                  "is not set: the node's token is needed to serve")
            raise ConfigError(f"{serve.where('token')}: no token: a node serves only with a token "
                              "(set token or token_env in the [serve] table)")
        if len(serve.token) < MIN_TOKEN_LENGTH:
            key = "token_env" if serve.token_env else "token"
            raise ConfigError(f"{serve.where(key)}: the token has {len(serve.token)} characters, fewer than "
                              f"{MIN_TOKEN_LENGTH}: a short token is guessed too soon (make one with: "
                              "python3 -c 'import secrets; print(secrets.token_urlsafe(24))')")
        for path in (serve.tls_cert, serve.tls_key):
            if path is not None and not path.is_file():
                raise ConfigError(f"{path}: no such file (a TLS certificate or key)")
        host, port = parse_bind(serve.bind)
        return cls(host=host, port=port, token=serve.token, secret=serve_secret(serve),
                   public_url=serve.base_url(), tls_cert=serve.tls_cert, tls_key=serve.tls_key,
                   limits=serve.limits, session_lifetime=serve.session_lifetime,
                   metrics_bind=parse_bind(serve.metrics_bind) if serve.metrics_bind else None)
