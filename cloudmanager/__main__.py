"""``python -m cloudmanager``: the ``cm`` command."""

from .cli import main

main(prog_name="cm")
