"""The server's log lines: one access line per request, as text or as JSON for log shippers.

An access line holds the client's address, the method, the path without its
query (share links carry their signature there), the status, the bytes sent
and the duration; never a header, a cookie or a form.  ``--log-format json``
writes every line the server logs (uvicorn's too) as one JSON object.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from typing import Any

from uvicorn.config import LOGGING_CONFIG

#: The logger of the access lines.
ACCESS = logging.getLogger("cloudmanager.access")
#: The formats ``cm serve --log-format`` takes.
FORMATS = ("text", "json")
_LONGEST_PATH = 512


def printable(text: str) -> str:
    """``text`` as one safe line: control characters escaped, at most 512 characters."""
    shown = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return shown if len(shown) <= _LONGEST_PATH else shown[:_LONGEST_PATH] + "..."


def access(client: str, method: str, path: str, status: int, sent: int, seconds: float) -> None:
    """Log one request's access line."""
    fields = {"client": client, "method": method, "path": printable(path), "status": status,
              "bytes": sent, "duration_ms": round(seconds * 1000, 1)}
    ACCESS.info('%s "%s %s" %s %s %.1fms', client, method, fields["path"], status or "-", sent,
                fields["duration_ms"], extra={"access": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and an access line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def logging_config(log_format: str) -> dict[str, Any]:
    """uvicorn's logging configuration with cloudmanager's loggers on its handler; for
    ``json``, every handler writing JSON lines."""
    if log_format not in FORMATS:
        raise ValueError(f"not a log format: {log_format!r} (known: {', '.join(FORMATS)})")
    conf = copy.deepcopy(LOGGING_CONFIG)
    conf["loggers"]["cloudmanager"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    if log_format == "json":
        for name in conf["formatters"]:
            conf["formatters"][name] = {"()": f"{__name__}.JsonFormatter"}
    return conf
