"""Where cloudmanager keeps things by default (the user's data directory, per XDG)."""

from __future__ import annotations

from pathlib import Path

import platformdirs

APP_NAME = "cloudmanager"


def data_dir() -> Path:
    """The user data directory of cloudmanager (e.g. ~/.local/share/cloudmanager)."""
    return platformdirs.user_data_path(APP_NAME)


def default_host_urls() -> list[str]:
    """The hosts used when none are given: one folder, ``vault``, in the data directory."""
    return [(data_dir() / "vault").as_uri()]
