"""Running the node's app with uvicorn until stopped (SIGINT, SIGTERM).

uvicorn runs its HTTP/1.1 protocol behind the connection layer
(connections.py: caps and the request-head deadline), with its keep-alive
timeout and a bound on a request head's size.  Its own access log is off: it
would print query strings, and share links carry their signature there; the
app writes its own (logs.py).  With ``serve.metrics_bind``, a second listener
serves /metrics alone, without the token (prometheus-client's own server: put it
on an address only the scraper reaches).
"""

from __future__ import annotations

import logging
import resource

import uvicorn
from prometheus_client import start_http_server

from ..manager import CloudManager
from .app import make_app
from .connections import Connections
from .logs import logging_config
from .settings import Settings

log = logging.getLogger(__name__)
#: The largest request head (request line and headers) read, in bytes.
MAX_HEAD = 16 * 1024


def open_files() -> int:
    """How many files this process may open (its soft ``ulimit -n``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 65536


def serve(manager: CloudManager, settings: Settings, *, log_format: str = "text",
          announcement: str | None = None) -> None:
    """Serve ``manager``'s node on ``settings.host:settings.port`` until stopped
    (``announcement``: a first line to log once logging is set up)."""
    limits = settings.limits
    files = open_files()
    total, per_client = limits.connections(files)
    # asyncio accepts up to ``backlog`` connections at once before any is looked at:
    # that many descriptors must stay free above the connections held.
    backlog = max(8, min(2048, (files - total) // 4))
    connections = Connections(limit=total, per_client=per_client, header_timeout=limits.header_timeout)
    app = make_app(manager, settings, connections)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=connections.protocol(),
        timeout_keep_alive=max(1, round(limits.keepalive_timeout)),
        h11_max_incomplete_event_size=MAX_HEAD,
        backlog=backlog,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        access_log=False,
        log_config=logging_config(log_format),
        server_header=False,
        proxy_headers=False,
        lifespan="off",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)  # its configuration sets the logging up
    if announcement:
        log.info("%s", announcement)
    metrics_server = None
    if settings.metrics_bind is not None:
        host, port = settings.metrics_bind
        metrics_server, _ = start_http_server(port, addr=host, registry=app.state.metrics.registry)
        log.info("metrics on http://%s:%s/metrics", host, port)
    log.info("at most %s connections, %s from one address", total, per_client)
    try:
        server.run()
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
