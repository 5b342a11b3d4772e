"""Serving the node: `cm serve`, and `cm link` (share links to its files)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import build, config
from .base import BadInput, Failure, Node, guarded, json_option, need_hash, pass_node
from .formatting import emit_json


@click.command()
@click.option("--bind", metavar="ADDR:PORT", help=f"Where to listen (default: the configuration's "
              f"serve.bind, else {config.DEFAULT_BIND}).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="Serve HTTPS with "
              "this certificate (PEM); with --tls-key.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="The certificate's key.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="How the server logs: text lines, or one JSON object a line (for log shippers).")
@pass_node
@guarded
def serve(node: Node, bind: str | None, tls_cert: Path | None, tls_key: Path | None, log_format: str) -> None:
    """Serve this node over HTTP until stopped: its files to other nodes (cm://),
    its catalog, share links, and a page for browsers.

    Every call but a share link needs the node's token (serve.token or
    serve.token_env in the configuration, at least 16 characters).  It writes one
    access line per request, and serves its figures at /metrics (Prometheus).
    """
    from ..server.settings import Settings

    try:
        from ..server.run import serve as run_server
    except ImportError as exc:
        raise Failure(f"cm serve needs {exc.name}, which is missing: pip install 'cloudmanager[serve]'") \
            from None
    try:
        settings = Settings.from_config(node.config.serve, bind=bind, tls_cert=tls_cert, tls_key=tls_key)
    except ValueError as exc:  # a ConfigError too: bad input either way
        raise BadInput(str(exc)) from None
    cm = node.manager()
    announcement = f"serving the catalog {node.config.catalog_shown} (share links: {settings.public_url})"
    if log_format == "text":
        click.echo(f"cm: {announcement}", err=True)
    run_server(cm, settings, log_format=log_format,
               announcement=None if log_format == "text" else announcement)


@click.command()
@click.argument("digest", metavar="HASH")
@click.option("--expires", default="7d", show_default=True, metavar="DURATION",
              help="How long the link works: 7d, 12h, 30m, or seconds (at most the smallest "
              "keep_days of the hosts, else 365 days).")
@json_option
@pass_node
@guarded
def link(node: Node, digest: str, expires: str, as_json: bool) -> None:
    """Print a link to a file that anyone can open without the token, until it expires.

    The link points at this node's `cm serve` (serve.public_url), which sends the
    file under its recorded name, fetching it from a host first when needed.
    """
    from .. import links

    try:
        seconds = links.parse_duration(expires)
    except ValueError as exc:
        raise BadInput(f"--expires: {exc}") from None
    cm = node.manager()
    try:
        until = cm.link_expiry(seconds)
    except ValueError as exc:
        raise BadInput(f"--expires {expires}: {exc}") from None
    record = cm.info(need_hash(digest))
    if record is None:
        raise Failure(f"{digest}: not in the catalog")
    serve_config = node.config.serve
    if not serve_config.public_url and config.parse_bind(serve_config.bind)[0] in ("0.0.0.0", "::"):
        click.echo(f"cm: warning: the link names {serve_config.bind}, which only this machine can open: "
                   "set serve.public_url", err=True)
    url = links.make_link(serve_config.base_url(), build.serve_secret(serve_config), digest, until)
    if as_json:
        emit_json({"url": url, "hash": digest, "name": record["filename"], "expires": until})
    else:
        click.echo(url)
