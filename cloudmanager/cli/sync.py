"""Exchanging with others: dump, load, and sync (with the hosts, or with other nodes)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from .. import config, payload, peersync
from .base import FAILED, BadInput, Failure, Node, guarded, json_option, pass_node
from .formatting import emit_json, progress_bar

#: Where `cm sync --from/--to` looks for the other node's token by default.
PEER_TOKEN_ENV = "CM_PEER_TOKEN"


@click.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (default: standard output).")
@pass_node
@guarded
def dump(node: Node, output: Path | None) -> None:
    """Print every file's record as JSON (format 0.2), for other nodes."""
    text = node.manager().data_dump()
    if output is None:
        click.echo(text, nl=False)
        return
    partial = output.with_name(f".{output.name}.cm-partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, output)


@click.command()
@click.argument("source", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@json_option
@pass_node
@guarded
def load(node: Node, source: str, as_json: bool) -> None:
    """Merge another node's dump (FILE, or - for standard input).

    Records that fail validation are written, each with the reason, to
    FILE.rejected.json, to be fixed and loaded again; the exit status is then 1.
    """
    if source != "-" and Path(source).stat().st_size > payload.MAX_DUMP_BYTES:
        raise BadInput(f"{source}: larger than {payload.MAX_DUMP_BYTES >> 20} MiB: load it in parts")
    text = sys.stdin.read(payload.MAX_DUMP_BYTES + 1) if source == "-" else \
        Path(source).read_text(encoding="utf-8", errors="strict")
    report = node.manager().import_dump(text)
    rejected_file = None
    if report.rejected:
        rejected_file = Path("stdin" if source == "-" else source).with_suffix(".rejected.json")
        rejected_file.write_text(json.dumps(
            [{"index": r.index, "field": r.field, "reason": r.reason, "record": r.record}
             for r in report.rejected], indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    if as_json:
        emit_json({"added": report.added, "changed": report.changed, "rejected": len(report.rejected),
                   "rejected_file": str(rejected_file) if rejected_file else None})
    else:
        click.echo(f"added {report.added}, changed {report.changed}, rejected {len(report.rejected)}"
                   + (f" (see {rejected_file})" if rejected_file else ""))
    if report.rejected:
        sys.exit(FAILED)


@click.command()
@click.option("--copies", type=click.IntRange(min=1), help="Also send files until each is on N hosts.")
@click.option("--repair", is_flag=True, help="Also rebuild lost shares of spread files onto other hosts.")
@click.option("--from", "pull_from", metavar="URL", multiple=True,
              help="Pull the catalog changes of the node at URL (cm://HOST:PORT, http://...).")
@click.option("--to", "push_to", metavar="URL", multiple=True, help="Push this catalog's changes to URL.")
@click.option("--token-env", default=PEER_TOKEN_ENV, show_default=True, metavar="NAME",
              help="The variable holding the other node's token (else a cm:// host record's token).")
@json_option
@pass_node
@guarded
def sync(node: Node, copies: int | None, repair: bool, pull_from: tuple[str, ...], push_to: tuple[str, ...],
         token_env: str, as_json: bool) -> None:
    """Retry failed host uploads (and, with --copies N, make more copies).

    With --from/--to, exchange catalogs with other nodes instead (over HTTP,
    paged, validated as a dump; each peer's cursor is remembered, so a repeated
    exchange moves nothing).
    """
    if pull_from or push_to:
        _exchange(node, pull_from, push_to, token_env, as_json)
        return
    changes = node.manager().sync(copies=copies, repair=repair)
    results = [(digest, u) for digest, uploads in changes.items() for u in uploads]
    failed = sum(not u.ok for _, u in results)
    if as_json:
        emit_json([{"hash": d, "host": u.host, "ok": u.ok, "error": u.error} for d, u in results])
    else:
        for digest, u in results:
            click.echo(f"{digest}  {u.host}: {'ok' if u.ok else f'error ({u.error})'}")
        click.echo(f"{len(results) - failed} sent, {failed} failed")
    if failed:
        sys.exit(FAILED)


def _peer_token(conf: config.Config, origin: str, token_env: str) -> str | None:
    """The token for the node at ``origin``: the variable ``token_env``, else the
    token of a configured cm:// host at the same address."""
    if os.environ.get(token_env):
        return os.environ[token_env]
    for record in conf.hosts:
        if record.token and record.url.startswith(("cm://", "cms://")) and _origin_of(record.url) == origin:
            return record.token
    return None


def _origin_of(url: str) -> str:
    """The normalized ``http[s]://HOST:PORT`` of a node's URL (ValueError when it is not one)."""
    return str(_nodeclient().origin(url))


def _nodeclient() -> Any:
    """The nodeclient module, which needs httpx (the ``node`` extra)."""
    try:
        from .. import nodeclient
    except ImportError as exc:
        raise Failure(f"talking to other nodes needs {exc.name}: pip install 'cloudmanager[node]'") from None
    return nodeclient


def _exchange(node: Node, pull_from: tuple[str, ...], push_to: tuple[str, ...], token_env: str,
              as_json: bool) -> None:
    """Catalog sync with other nodes, both ways as asked; one line (or record) per direction."""
    cm = node.manager()
    done: list[peersync.Exchange] = []
    for url, direction in [(u, "pull") for u in pull_from] + [(u, "push") for u in push_to]:
        try:
            origin = _origin_of(url)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        run = peersync.pull if direction == "pull" else peersync.push
        with (_nodeclient().NodeClient(url, _peer_token(node.config, origin, token_env)) as client,
              progress_bar(None, not as_json, unit="records") as advance):
            done.append(run(cm, client, origin, progress=advance))
    if as_json:
        emit_json([asdict(exchange) for exchange in done])
        return
    for e in done:
        arrow = "<-" if e.direction == "pull" else "->"
        click.echo(f"{arrow} {e.peer}: {e.records} records, {e.added} new files, {e.changed} changed, "
                   f"{e.rejected} rejected (cursor {e.cursor})")
