"""Looking after the node: init, hosts, fsck, relocate, expire."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from .. import config
from .base import FAILED, BadInput, Node, guarded, json_option, pass_node
from .formatting import console, emit_json, human_size, table, when


@click.command()
@pass_node
@guarded
def init(node: Node) -> None:
    """Create the catalog and the cache of the current configuration."""
    cm = node.manager()
    conf = node.config
    click.echo(f"catalog  {conf.catalog_shown}\ncache    {conf.cache} ({human_size(cm.capacity)})")
    for host in cm.hosts:
        click.echo(f"host     {host.name}  {host.url()}{'' if host.active else '  (inactive)'}")


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
@guarded
def hosts(ctx: click.Context, as_json: bool) -> None:
    """The configured hosts: kind, active, description, files held, health."""
    if ctx.invoked_subcommand is not None:
        return
    cm = ctx.find_object(Node).manager()  # type: ignore[union-attr]
    rows = cm.host_report()
    if as_json:
        emit_json([asdict(row) for row in rows])
        return
    out = table("name", "kind", "url", "active", "files", "last ok", "last error", "description")
    for row in rows:
        out.add_row(row.name, row.kind, row.url, "yes" if row.active else "no", str(row.files),
                    when(row.last_ok), row.last_error or "-", row.description or "")
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


@click.command()
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


@click.command()
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


@click.command()
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
            click.echo(f"quarantined: {path} ({human_size(size)}; "
                       "cm fsck --repair --purge deletes it)")
        if at_open.problems:
            click.echo(f"{at_open.problems} of them mended when the node was opened")
        verdict = "mended" if repair and report.mended else "found"
        click.echo(f"{problems} problem(s) {verdict}" if problems else "no problem found")
    if (problems and not (repair and report.mended)) or report.lost:
        sys.exit(FAILED)
