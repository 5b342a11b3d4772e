"""Commands on the files: upload, get, ls, info, exists, stats, rm, pin, unpin, evict."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import click

from .. import payload
from ..erasure import Spread
from ..manager import UploadOutcome
from ..records import Upload
from .base import FAILED, BadInput, Failure, Node, guarded, json_option, need_hash, pass_node
from .formatting import console, emit_json, human_size, progress_bar, shares_text, table, when


@click.command()
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


@click.command()
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


@click.command(name="ls")
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
        out.add_row(row.hash[:12], row.name, human_size(row.size), when(row.datetime), state, copies)
    console().print(out)


@click.command()
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


@click.command()
@click.argument("digest", metavar="HASH")
@pass_node
@guarded
def exists(node: Node, digest: str) -> None:
    """Exit with status 0 when the file is in the catalog, 1 when not."""
    if not node.manager().exists(need_hash(digest)):
        sys.exit(FAILED)


@click.command()
@json_option
@pass_node
@guarded
def stats(node: Node, as_json: bool) -> None:
    """Capacity, usage, file counts, and bytes moved per month and in total."""
    figures = node.manager().stats()
    if as_json:
        emit_json(figures)
        return
    size = human_size
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


@click.command()
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


def _pinning(pinned: bool, summary: str) -> click.Command:
    """`cm pin` (``pinned``) or `cm unpin`: set whether a file may be evicted."""

    @click.command(name="pin" if pinned else "unpin", help=summary)
    @click.argument("digest", metavar="HASH")
    @pass_node
    @guarded
    def command(node: Node, digest: str) -> None:
        if not node.manager().pin(need_hash(digest), pinned):
            raise Failure(f"{digest}: not in the catalog")

    return command


pin = _pinning(True, "Keep a file in the cache whatever happens (it is never evicted).")
unpin = _pinning(False, "Let a pinned file be evicted again.")


@click.command()
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
