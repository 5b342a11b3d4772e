"""`cm key`: the node's encryption key."""

from __future__ import annotations

import click

from ..crypto import Key
from .base import Node, guarded, pass_node


@click.group()
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
