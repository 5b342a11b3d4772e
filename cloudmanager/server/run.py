"""Running the node's app with uvicorn until stopped (SIGINT, SIGTERM).

uvicorn's own access log is off: it would print query strings, and share
links carry their signature there.  The app logs each request's path instead
(app.AccessLog), with no header and no query.
"""

from __future__ import annotations

import copy
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from ..manager import CloudManager
from .app import make_app
from .settings import Settings


def _logging() -> dict[str, Any]:
    """uvicorn's logging configuration, with cloudmanager's loggers on its handler."""
    conf = copy.deepcopy(LOGGING_CONFIG)
    conf["loggers"]["cloudmanager"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return conf


def serve(manager: CloudManager, settings: Settings) -> None:
    """Serve ``manager``'s node on ``settings.host:settings.port`` until stopped."""
    config = uvicorn.Config(
        make_app(manager, settings),
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        access_log=False,
        log_config=_logging(),
        server_header=False,
        proxy_headers=False,
        lifespan="off",
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
