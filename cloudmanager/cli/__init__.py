"""The ``cm`` command: everyday use of a node from the shell.

Argument parsing and printing only: every command is a thin shell over a
CloudManager method.  Exit status: 0 on success, 1 when the operation failed,
2 for bad usage or bad input (a malformed hash, a missing file, an unreadable
dump), always with one clear line on stderr and never a traceback.

The commands by theme: files.py (upload, get, ls, info, exists, stats, rm,
pin, unpin, evict), sync.py (dump, load, sync), admin.py (init, hosts, fsck,
relocate, expire), keys.py (key), serve.py (serve, link); base.py holds what
they share (the node, the exit statuses, the error guard) and formatting.py
how they print.
"""

from __future__ import annotations

import click

from .. import __version__, config
from . import admin, files, keys, serve, sync
from .base import Node

__all__ = ["main"]


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


for command in (
    files.upload, files.get, files.list_files, files.info, files.exists, files.stats, files.rm,
    files.pin, files.unpin, files.evict,
    sync.dump, sync.load, sync.sync,
    admin.init, admin.hosts, admin.fsck, admin.relocate, admin.expire,
    keys.key,
    serve.serve, serve.link,
):
    main.add_command(command)
