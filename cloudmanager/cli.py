"""The ``cm`` command: everyday use of a node from the shell.

Argument parsing and printing only: every command is a thin shell over a
CloudManager method.  Exit status: 0 on success, 1 when the operation failed,
2 for bad usage or bad input (a malformed hash, a missing file, an unreadable
dump), always with one clear line on stderr and never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from . import __version__, build, config, payload, peersync
from .crypto import Key
from .erasure import Spread
from .errors import CacheOwned, CloudManagerError, InvalidDump
from .manager import CloudManager, UploadOutcome
from .names import is_sha256
from .numbers import when
from .records import Upload

OK, FAILED, BAD_INPUT = 0, 1, 2
#: Where `cm sync --from/--to` looks for the other node's token by default.
PEER_TOKEN_ENV = "CM_PEER_TOKEN"
F = TypeVar("F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """The operation failed: one line on stderr, exit status 1."""

    exit_code = FAILED

    def show(self, file: Any = None) -> None:
        """Print ``cm: message`` on stderr."""
        click.echo(f"cm: {self.message}", err=True)


class BadInput(Failure):
    """Bad usage or bad input (a malformed hash, a missing file...): exit status 2."""

    exit_code = BAD_INPUT


class Node:
    """The node a command works on: the configuration, and a manager opened on demand."""

    def __init__(self, config_path: str | None):
        self.config_path = config_path
        self._config: config.Config | None = None
        self._manager: CloudManager | None = None

    @property
    def config(self) -> config.Config:
        """The configuration in force (read once)."""
        if self._config is None:
            self._config = config.load(self.config_path)
        return self._config

    def manager(self) -> CloudManager:
        """The node's CloudManager (catalog and cache directories are created)."""
        if self._manager is None:
            self._manager = build.open_manager(self.config)
        return self._manager

    def close(self) -> None:
        """Close the manager if one was opened."""
        if self._manager is not None:
            self._manager.close()


def guarded(command: F) -> F:
    """Turn the library's errors into one line on stderr and the right exit status."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (InvalidDump, config.ConfigError, CacheOwned) as exc:
            raise BadInput(str(exc)) from None
        except UnicodeDecodeError:
            raise BadInput("not UTF-8 text (a dump is JSON text)") from None
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            raise BadInput(f"{exc.filename}: {exc.strerror}") from None
        except (CloudManagerError, ValueError, OSError) as exc:
            raise Failure(str(exc)) from None

    return run  # type: ignore[return-value]


def need_hash(value: str) -> str:
    """The hash argument, or exit 2 with a clear line."""
    if not is_sha256(value):
        raise BadInput(f"not a SHA-256 (64 lowercase hex digits): {value[:80]!r}")
    return value


def emit_json(value: Any) -> None:
    """Print one JSON document (for scripts)."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def console() -> Console:
    """Where tables go: when stdout is not a terminal, plain and never wrapped."""
    tty = sys.stdout.isatty()
    return Console(highlight=False, width=None if tty else 100_000, no_color=not tty)


def table(*columns: str) -> Table:
    """A table that stays plain when piped."""
    boxed = sys.stdout.isatty()
    return Table(*columns, box=None if not boxed else Table().box, show_edge=boxed, pad_edge=False)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
pass_node = click.make_pass_decorator(Node)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", type=click.Path(dir_okay=False),
              help=f"Configuration file (default: ${config.CONFIG_ENV}, else {config.user_config_path()}).")
@click.version_option(__version__, prog_name="cm")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Keep a pool of files on several hosts, with a local cache.

    \b
    Examples:
      cm upload photos/*.jpg       keep files (prints each file's hash)
      cm ls                        what is kept, where
      cm get 6e1634...1b -o x.md   bring a file back
      cm dump -o node.json         what this node knows, for another node
    """
    node = Node(config_path)
    ctx.obj = node
    ctx.call_on_close(node.close)


@main.command()
@pass_node
@guarded
def init(node: Node) -> None:
    """Create the catalog and the cache of the current configuration."""
    cm = node.manager()
    conf = node.config
    click.echo(f"catalog  {conf.catalog_shown}\ncache    {conf.cache} ({config.human_size(cm.capacity)})")
    for host in cm.hosts:
        click.echo(f"host     {host.name}  {host.url()}{'' if host.active else '  (inactive)'}")


@contextmanager
def progress_bar(total: int | None, enabled: bool, unit: str = "bytes") -> Iterator[Callable[[int], object]]:
    """A progress bar on stderr when it is a terminal (of bytes, or of ``unit``s
    when counting something else); a no-op otherwise."""
    if not enabled or not sys.stderr.isatty():
        yield lambda count: None
        return
    counts = [DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else [MofNCompleteColumn()]
    bar = Progress(TextColumn("{task.description}"), BarColumn(), *counts, console=Console(stderr=True),
                   transient=True)
    with bar:
        task = bar.add_task("hashing" if unit == "bytes" else unit, total=total)
        yield lambda count: bar.advance(task, count)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--spread", metavar="K/N", help="Cut each file into N shares on N hosts, any K of which "
              "rebuild it (default: [upload] spread, else a whole copy on every host).")
@json_option
@pass_node
@guarded
def upload(node: Node, files: tuple[Path, ...], spread: str | None, as_json: bool) -> None:
    """Keep FILES: cache them and send them to every active host.

    Prints one line per file: its hash, then ok or the error for each host.  A
    file already kept is sent again to the active hosts that failed it.  Exit
    status 1 when a file reached no host (it stays in the cache, and `cm sync`
    sends it later) or could be kept nowhere.
    """
    cm = node.manager()
    policy = None
    if spread is not None:
        try:
            policy = Spread.parse(spread)
        except ValueError as exc:
            raise BadInput(f"--spread: {exc}") from None
    if node.config.encrypts and cm.key is None:
        raise BadInput(f"encryption is on and there is no key at {node.config.key_file}: "
                       "create one with `cm key init` (or restore yours)")
    sizes = {}
    for path in files:
        if not path.exists():
            raise BadInput(f"{path}: no such file")
        if path.is_dir():
            raise BadInput(f"{path}: is a directory")
        sizes[path] = path.stat().st_size
    big = sum(sizes.values()) > 64 * 2**20 or len(files) > 20
    with progress_bar(sum(sizes.values()), big and not as_json) as advance:
        outcomes = cm.upload_files(files, progress=advance, spread=policy)
    if as_json:
        records = [payload.to_dict(o.record) if o.record else None for o in outcomes]
        emit_json([{"file": str(o.path), "hash": o.hash, "held": o.held,
                    "uploads": record["uploads"] if record else [],
                    "shares": record.get("shares") if record else None,
                    "results": [{"host": u.host, "ok": u.ok, "error": u.error} for u in o.results]}
                   for o, record in zip(outcomes, records, strict=True)])
    else:
        for outcome in outcomes:
            click.echo(f"{outcome.hash or 'NOT KEPT'}  {outcome.path}  {_states(outcome)}")
    unsent = [o for o in outcomes if o.hash is not None and not o.held]
    for outcome in unsent:
        reasons = "; ".join(f"{u.host}: {u.error}" for u in outcome.results if not u.ok) or "no active host"
        click.echo(f"cm: {outcome.path} reached no host, kept in the cache (cm sync sends it): {reasons}",
                   err=True)
    if any(o.hash is None for o in outcomes):
        raise Failure("some files could be kept nowhere (no host took them and the cache is full)")
    if unsent:
        sys.exit(FAILED)


def _states(outcome: UploadOutcome) -> str:
    """Each host's state of an uploaded file: this upload's answer, else the recorded one."""
    answered = {u.host: u for u in outcome.results}
    record = outcome.record
    recorded = [] if record is None else [*record.uploads, *(
        Upload(f"{s.host} (share {s.index})", s.url, s.error) for s in record.shares)]
    entries = [answered.pop(u.host, u) for u in recorded] + list(answered.values())
    return "  ".join(f"{u.host}: ok" if u.ok else f"{u.host}: error ({u.error or 'failed'})" for u in entries)


@main.command()
@click.argument("digest", metavar="HASH")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Where to write it "
              "(default: its recorded name in the current directory; a directory is fine).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@pass_node
@guarded
def get(node: Node, digest: str, output: Path | None, force: bool) -> None:
    """Bring a file back (from the cache, or a host) and copy it to a path.

    A file larger than the cache is streamed from a host straight to the path,
    verified, without caching it."""
    cm = node.manager()
    record = cm.info(need_hash(digest))
    if record is None:
        raise Failure(f"{digest}: not in the catalog")
    target = output or Path(record["filename"])
    if target.is_dir():
        target = target / record["filename"]
    if target.exists() and not force:
        raise BadInput(f"{target}: exists (use --force to overwrite)")
    if cm.get(digest, target) is None:
        raise Failure(f"{digest}: not in the catalog")
    click.echo(str(target))


@main.command(name="ls")
@click.option("--cached", is_flag=True, help="Only files in the cache.")
@click.option("--pending", is_flag=True, help="Only files not yet on every active host.")
@json_option
@pass_node
@guarded
def list_files(node: Node, cached: bool, pending: bool, as_json: bool) -> None:
    """List the files: hash, name, size, date, cached or not, hosts holding it / tried."""
    cm = node.manager()
    rows = cm.listing(cached_only=cached, pending_only=pending)
    if as_json:
        emit_json([asdict(row) for row in rows])
        return
    out = table("hash", "name", "size", "date (UTC)", "cache", "hosts")
    for row in rows:
        state = "pinned" if row.pinned else ("yes" if row.cached else "no")
        copies = f"{row.held}/{row.tried}"
        if row.spread is not None:
            copies = f"{shares_text(row.shares, *row.spread)}" + (f", {copies}" if row.tried else "")
        out.add_row(row.hash[:12], row.name, config.human_size(row.size), when(row.datetime), state, copies)
    console().print(out)


@main.command()
@click.argument("digest", metavar="HASH")
@json_option
@pass_node
@guarded
def info(node: Node, digest: str, as_json: bool) -> None:
    """Print the file's JSON record (format 0.2)."""
    cm = node.manager()
    record = cm.info(need_hash(digest))
    if record is None:
        raise Failure(f"{digest}: not in the catalog")
    emit_json(record)
    if as_json:
        return
    if "shares" in record:
        spread = record["shares"]
        held = sum("url" in item for item in spread["items"])
        click.echo(shares_text(held, spread["k"], spread["n"]), err=True)
    sealed = [u["host_name"] for u in record["uploads"] + record.get("shares", {}).get("items", [])
              if u.get("encrypted")]
    if sealed and cm.key is None:
        click.echo(f"unreadable here: the copies on {', '.join(sorted(set(sealed)))} are encrypted "
                   "and this node has no key", err=True)


@main.command()
@click.argument("digest", metavar="HASH")
@pass_node
@guarded
def exists(node: Node, digest: str) -> None:
    """Exit with status 0 when the file is in the catalog, 1 when not."""
    if not node.manager().exists(need_hash(digest)):
        sys.exit(FAILED)


@main.command()
@json_option
@pass_node
@guarded
def stats(node: Node, as_json: bool) -> None:
    """Capacity, usage, file counts, and bytes moved per month and in total."""
    figures = node.manager().stats()
    if as_json:
        emit_json(figures)
        return
    size = config.human_size
    click.echo(f"capacity     {size(figures['capacity'])}\n"
               f"used         {size(figures['used'])} ({figures['usage_ratio']:.1%})\n"
               f"files        {figures['files']}\n"
               f"cached       {figures['cached']}  (pinned {figures['pinned']})\n"
               f"pending      {figures['pending']}  (not yet on every active host)")
    out = table("month", "sent", "fetched")
    for month, moved in figures["transfers"]["months"].items():
        out.add_row(month, size(moved["sent"]), size(moved["fetched"]))
    total = figures["transfers"]["total"]
    out.add_row("total", size(total["sent"]), size(total["fetched"]))
    console().print(out)


@main.command()
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


@main.command()
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


@main.command()
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


@main.group()
def key() -> None:
    """The node's encryption key (hosts with encrypt = true, or [upload] encrypt = true).

    A lost key means lost files: back it up with `cm key export`.
    """


@key.command(name="init")
@pass_node
@guarded
def key_init(node: Node) -> None:
    """Create the key file (mode 0600); an existing key is never replaced."""
    path = node.config.key_file
    made = Key.generate()
    made.save(path)
    click.echo(f"{path}  key {made.fingerprint}")
    click.echo("Back it up now (cm key export): without it, encrypted files cannot be read.", err=True)


@key.command(name="show-public")
@pass_node
@guarded
def key_show_public(node: Node) -> None:
    """Print the key's fingerprint: safe to show, it names the key without revealing it."""
    click.echo(Key.load(node.config.key_file).fingerprint)


@key.command(name="export")
@pass_node
@guarded
def key_export(node: Node) -> None:
    """Print the key itself, for a backup: whoever has it reads every encrypted file."""
    click.echo(Key.load(node.config.key_file).export())
    click.echo("This is the secret key: keep the copy offline.", err=True)


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
        from . import nodeclient
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


@main.group(invoke_without_command=True)
@json_option
@click.pass_context
@guarded
def hosts(ctx: click.Context, as_json: bool) -> None:
    """The configured hosts: kind, active, description, files held, health."""
    if ctx.invoked_subcommand is not None:
        return
    cm = ctx.find_object(Node).manager()  # type: ignore[union-attr]
    held = cm.catalog.held_per_host()
    health = cm.catalog.host_health(h.name for h in cm.hosts)
    rows: list[dict[str, Any]] = [{"name": h.name, "kind": h.scheme, "url": h.url(), "active": h.active,
             "description": h.description, "keep_days": h.keep_days, "files": held.get(h.name, 0),
             "last_ok": health[h.name].last_ok, "last_error": health[h.name].last_error,
             "failures": health[h.name].failures} for h in cm.hosts]
    if as_json:
        emit_json(rows)
        return
    out = table("name", "kind", "url", "active", "files", "last ok", "last error", "description")
    for row in rows:
        out.add_row(row["name"], row["kind"], row["url"], "yes" if row["active"] else "no", str(row["files"]),
                    when(row["last_ok"]), row["last_error"] or "-", row["description"] or "")
    console().print(out)


@hosts.command(name="check")
@json_option
@pass_node
@guarded
def hosts_check(node: Node, as_json: bool) -> None:
    """Try a small round trip to each host and report ok or the error."""
    results = node.manager().check_hosts()
    if as_json:
        emit_json({name: {"ok": error is None, "error": error} for name, error in results.items()})
    else:
        for name, error in results.items():
            click.echo(f"{name}: {'ok' if error is None else 'error (' + error + ')'}")
    if any(error is not None for error in results.values()):
        sys.exit(FAILED)


@main.command()
@click.argument("digests", metavar="[HASH]...", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Evict every file some host holds.")
@pass_node
@guarded
def evict(node: Node, digests: tuple[str, ...], everything: bool) -> None:
    """Remove files from the cache (only files some host holds; never pinned ones)."""
    if everything == bool(digests):
        raise BadInput("give HASH... or --all")
    evicted = node.manager().evict(None if everything else [need_hash(d) for d in digests])
    click.echo(f"evicted {len(evicted)} file(s)")


def shares_text(held: int, k: int, n: int) -> str:
    """``3 of 5 shares, needs 3``: how a spread file stands."""
    return f"{held} of {n} shares, needs {k}"


def _pin(node: Node, digest: str, pinned: bool) -> None:
    if not node.manager().pin(need_hash(digest), pinned):
        raise Failure(f"{digest}: not in the catalog")


@main.command()
@click.argument("digest", metavar="HASH")
@pass_node
@guarded
def pin(node: Node, digest: str) -> None:
    """Keep a file in the cache whatever happens (it is never evicted)."""
    _pin(node, digest, True)


@main.command()
@click.argument("digest", metavar="HASH")
@pass_node
@guarded
def unpin(node: Node, digest: str) -> None:
    """Let a pinned file be evicted again."""
    _pin(node, digest, False)


@main.command()
@click.argument("target", metavar="NEW_DIR", type=click.Path(file_okay=False, path_type=Path))
@json_option
@pass_node
@guarded
def relocate(node: Node, target: Path, as_json: bool) -> None:
    """Move the cache to NEW_DIR: copy, verify, switch, and record it in the configuration."""
    recorded: list[Path] = []

    def record(new_dir: Path) -> None:  # before the old cache is removed
        recorded.append(config.set_cache_path(node.config, new_dir))

    report = node.manager().relocate(target, on_switch=record)
    written = recorded[0] if recorded else None
    if as_json:
        emit_json({"moved": report.moved, "failed": report.failed, "switched": report.switched,
                   "target": str(report.target), "config": str(written) if written else None})
    else:
        for digest, why in report.failed.items():
            click.echo(f"not moved: {digest}: {why}")
        click.echo(f"moved {report.moved} file(s) to {report.target}"
                   + (f"; configuration {written} updated" if written else "; nothing switched"))
    if report.failed or not report.switched:
        sys.exit(FAILED)


@main.command()
@click.argument("digest", metavar="HASH")
@click.option("--hosts", "from_hosts", is_flag=True, help="Also delete it from the hosts that can delete.")
@pass_node
@guarded
def rm(node: Node, digest: str, from_hosts: bool) -> None:
    """Forget a file: remove it from the cache and the catalog."""
    report = node.manager().forget(need_hash(digest), from_hosts=from_hosts)
    if report is None:
        raise Failure(f"{digest}: not in the catalog")
    for host in report.deleted:
        click.echo(f"{host}: deleted")
    for host, why in report.left.items():
        click.echo(f"{host}: copy left there ({why})")
    for host, error in report.failed.items():
        click.echo(f"{host}: error ({error})")
    if report.failed:
        raise Failure(f"{digest}: kept in the catalog, since a host could not delete its copy")


@main.command()
@click.option("--force", is_flag=True, help="Also delete a file's last copy.")
@json_option
@pass_node
@guarded
def expire(node: Node, force: bool, as_json: bool) -> None:
    """Delete host copies older than their host's keep_days (last copies are kept)."""
    report = node.manager().expire(force=force)
    if as_json:
        emit_json(asdict(report))
    else:
        for digest, host in report.expired:
            click.echo(f"{digest}  {host}: expired")
        for digest, host in report.last_copies:
            click.echo(f"{digest}  {host}: kept, its last copy (--force to delete)")
        for digest, host, why in report.unverified:
            click.echo(f"{digest}  {host}: kept, {why}")
        for digest, host, error in report.failed:
            click.echo(f"{digest}  {host}: error ({error})")
        for host in report.cannot_delete:
            click.echo(f"{host}: has keep_days but cannot delete")
    if report.failed:
        sys.exit(FAILED)


@main.command()
@click.option("--repair", is_flag=True, help="Mend what is found (and send lost copies again).")
@click.option("--purge", is_flag=True, help="With --repair: also delete what the quarantine holds.")
@click.option("--hosts", "ask_hosts", is_flag=True,
              help="Also ask each host whether it still holds its copies.")
@click.option("--hash", "verify_hash", is_flag=True, help="Check the bytes' SHA-256, not only sizes.")
@json_option
@pass_node
@guarded
def fsck(node: Node, repair: bool, purge: bool, ask_hosts: bool, verify_hash: bool, as_json: bool) -> None:
    """Check that the catalog tells the truth about the cache and the hosts.

    Also names the files at risk: lost (no host holds them, nor this node's
    cache) and held only by this node's cache, and lists the quarantine (bytes
    found in the cache that were no cached file: never deleted but by
    --repair --purge).  Exit status 1 when a problem was found or a file is
    lost; with --repair, 0 when every problem found was mended.
    """
    if purge and not repair:
        raise BadInput("--purge deletes the quarantine: give it with --repair")
    cm = node.manager()
    at_open = cm.last_repair  # opening a node already mends the cache: count what it found
    report = cm.check(repair=repair, hosts=ask_hosts, verify_hash=verify_hash, purge=purge)
    local, copies = report.local, report.hosts
    figures: dict[str, Any] = {
        "leftover temporary files": local.removed_temps + at_open.removed_temps,
        "uncounted cache files counted again": len(local.adopted) + len(at_open.adopted),
        "bytes in the cache that are no file, quarantined": len(local.quarantined) + len(at_open.quarantined),
        "cached files gone or of the wrong size": len(local.uncounted) + len(at_open.uncounted),
        "cached files with the wrong SHA-256": len(local.damaged),
        "usage total wrong": int(local.recounted or at_open.recounted),
        "files lost (no host, not in this cache)": len(report.lost),
        "files only in this cache (not yet on a host)": len(report.only_here),
        "entries in the quarantine": len(report.quarantine),
    }
    problems = report.problems + at_open.problems
    if copies is not None:
        figures.update({"host copies checked": copies.checked, "host copies lost": len(copies.lost),
                        "host copies not checked (host could not answer)": len(copies.unreachable),
                        "host copies not checkable": copies.unchecked})
    if repair:
        figures["lost copies sent again"] = report.resent
    if purge:
        figures["quarantine entries deleted"] = report.purged
    if as_json:
        emit_json({"problems": problems, "mended_at_open": at_open.problems, "repaired": repair,
                   "mended": report.mended, "figures": figures,
                   "lost": copies.lost if copies else [], "unreachable": copies.unreachable if copies else [],
                   "lost_files": report.lost, "only_here": report.only_here,
                   "quarantine": [{"path": str(path), "size": size} for path, size in report.quarantine]})
    else:
        out = table("check", "found")
        for what, count in figures.items():
            out.add_row(what, str(count))
        console().print(out)
        for digest, host, why in copies.lost if copies else []:
            click.echo(f"lost: {digest} on {host}: {why}")
        for digest in report.lost:
            click.echo(f"lost file: {digest} (no host holds it, nor this cache)")
        for digest in report.only_here:
            click.echo(f"only in this cache: {digest} (cm sync sends it)")
        for path, size in report.quarantine:
            click.echo(f"quarantined: {path} ({config.human_size(size)}; "
                       "cm fsck --repair --purge deletes it)")
        if at_open.problems:
            click.echo(f"{at_open.problems} of them mended when the node was opened")
        verdict = "mended" if repair and report.mended else "found"
        click.echo(f"{problems} problem(s) {verdict}" if problems else "no problem found")
    if (problems and not (repair and report.mended)) or report.lost:
        sys.exit(FAILED)


# -- serving the node -------------------------------------------------------------------


@main.command()
@click.option("--bind", metavar="ADDR:PORT", help=f"Where to listen (default: the configuration's "
              f"serve.bind, else {config.DEFAULT_BIND}).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="Serve HTTPS with "
              "this certificate (PEM); with --tls-key.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="The certificate's key.")
@pass_node
@guarded
def serve(node: Node, bind: str | None, tls_cert: Path | None, tls_key: Path | None) -> None:
    """Serve this node over HTTP until stopped: its files to other nodes (cm://),
    its catalog, share links, and a page for browsers.

    Every call but a share link needs the node's token (serve.token or
    serve.token_env in the configuration).
    """
    from .server.settings import Settings

    try:
        from .server.run import serve as run_server
    except ImportError as exc:
        raise Failure(f"cm serve needs {exc.name}, which is missing: pip install 'cloudmanager[serve]'") \
            from None
    try:
        settings = Settings.from_config(node.config.serve, bind=bind, tls_cert=tls_cert, tls_key=tls_key)
    except ValueError as exc:  # a ConfigError too: bad input either way
        raise BadInput(str(exc)) from None
    cm = node.manager()
    click.echo(f"cm: serving the catalog {node.config.catalog_shown} (share links: {settings.public_url})",
               err=True)
    run_server(cm, settings)


@main.command()
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
    from .server import links

    try:
        seconds = links.parse_duration(expires)
    except ValueError as exc:
        raise BadInput(f"--expires: {exc}") from None
    cm = node.manager()
    kept = [host.keep_days for host in cm.hosts if host.keep_days is not None]
    longest = links.longest_expiry(kept)
    if seconds > longest:
        why = "the smallest keep_days of this node's hosts" if longest < links.DEFAULT_MAX_DAYS * links.DAY \
            else "the longest allowed"
        raise BadInput(f"--expires {expires}: longer than a link may live here, "
                       f"{links.describe_seconds(longest)} ({why})")
    record = cm.info(need_hash(digest))
    if record is None:
        raise Failure(f"{digest}: not in the catalog")
    serve_config = node.config.serve
    if not serve_config.public_url and config.parse_bind(serve_config.bind)[0] in ("0.0.0.0", "::"):
        click.echo(f"cm: warning: the link names {serve_config.bind}, which only this machine can open: "
                   "set serve.public_url", err=True)
    until = int(time.time()) + seconds
    url = links.make_link(serve_config.base_url(), build.serve_secret(serve_config), digest, until)
    if as_json:
        emit_json({"url": url, "hash": digest, "name": record["filename"], "expires": until})
    else:
        click.echo(url)
