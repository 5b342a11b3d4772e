"""What every command shares: the node it works on, the exit statuses, and the
guard that turns the library's errors into one line on stderr."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from .. import build, config
from ..errors import CacheOwned, CloudManagerError, InvalidDump
from ..manager import CloudManager
from ..names import is_sha256

OK, FAILED, BAD_INPUT = 0, 1, 2
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


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
pass_node = click.make_pass_decorator(Node)
