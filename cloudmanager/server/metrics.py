"""What an operator watches: ``GET /metrics`` in the Prometheus text format (prometheus-client).

Counters only go up: requests by route, method and status, bytes received and
sent in bodies, catalog pages served (pulls) and merged (pushes) and their
records, connections refused at the caps or closed for a late request head,
bodies cut off for their pace, answers throttled.  Gauges: uploads and
downloads in flight, open connections, and, read from the catalog's running
totals at each scrape (no scan of the files: the cost does not grow with the
pool), cache bytes used and capacity, files, cached, pinned and pending files,
and each host's consecutive failures as the catalog records them.

Each app has its own registry (never the process-wide default one), so two
nodes in one process do not mix their figures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..manager import CloudManager

#: The Content-Type of the text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PREFIX = "cloudmanager"


class _Node(Collector):
    """The gauges read from the node at each scrape, and the counters other parts keep."""

    def __init__(self, manager: CloudManager, counted: dict[str, tuple[str, Callable[[], int]]],
                 gauges: dict[str, tuple[str, Callable[[], int]]]):
        self.manager = manager
        self.counted = counted
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        cm = self.manager
        counts = cm.counts()
        figures = {
            "cache_used_bytes": ("Bytes the cache holds.", cm.cached_bytes()),
            "cache_capacity_bytes": ("Bytes the cache may hold.", cm.capacity),
            "files": ("Files in the catalog.", counts["files"]),
            "files_cached": ("Files in this node's cache.", counts["cached"]),
            "files_pinned": ("Files pinned in this node's cache.", counts["pinned"]),
            "files_pending": ("Files not yet on every active host.", counts["pending"]),
        }
        for name, (text, value) in figures.items():
            yield GaugeMetricFamily(f"{_PREFIX}_{name}", text, value=value)
        for name, (text, read) in self.gauges.items():
            yield GaugeMetricFamily(f"{_PREFIX}_{name}", text, value=read())
        for name, (text, read) in self.counted.items():
            yield CounterMetricFamily(f"{_PREFIX}_{name}", text, value=read())
        failures = GaugeMetricFamily(f"{_PREFIX}_host_failures",
                                     "Consecutive failures of each host, as the catalog records them.",
                                     labels=["host"])
        for name, count in cm.host_failures().items():
            failures.add_metric([name], count)
        yield failures


class Metrics:
    """The figures of one serving node, and their text for a scrape."""

    def __init__(self, manager: CloudManager):
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(f"{_PREFIX}_http_requests", "HTTP requests answered.",
                                ["route", "method", "status"], registry=registry)
        self.duration = Histogram(f"{_PREFIX}_http_request_duration_seconds",
                                  "Time from a request's head to the end of its answer.", ["route"],
                                  registry=registry)
        self.received = Counter(f"{_PREFIX}_http_received_bytes", "Bytes of request bodies received.",
                                registry=registry)
        self.sent = Counter(f"{_PREFIX}_http_sent_bytes", "Bytes of answer bodies sent.", registry=registry)
        self.uploads = Gauge(f"{_PREFIX}_uploads_in_flight", "Files being received (PUT /objects).",
                             registry=registry)
        self.downloads = Gauge(f"{_PREFIX}_downloads_in_flight", "Files being sent (objects, share links).",
                               registry=registry)
        self.pulls = Counter(f"{_PREFIX}_catalog_pulls", "Catalog pages served to other nodes.",
                             registry=registry)
        self.pushes = Counter(f"{_PREFIX}_catalog_pushes", "Catalog pages from other nodes merged.",
                              registry=registry)
        self.records_sent = Counter(f"{_PREFIX}_catalog_records_sent", "Records in catalog pages served.",
                                    registry=registry)
        self.records_received = Counter(f"{_PREFIX}_catalog_records_received",
                                        "Records in catalog pages merged.", registry=registry)
        self.late = Counter(f"{_PREFIX}_requests_late", "Requests cut off for a body that did not keep pace.",
                            registry=registry)
        self._node = _Node(manager, {}, {})
        registry.register(self._node)

    def watch(self, name: str, text: str, read: Callable[[], int], *, counter: bool) -> None:
        """Report ``read()`` at each scrape as ``cloudmanager_NAME``: a counter (it only goes
        up: ``_total`` is added) or a gauge."""
        (self._node.counted if counter else self._node.gauges)[name] = (text, read)

    def text(self) -> bytes:
        """The scrape: every figure in the Prometheus text format (blocking: reads the catalog)."""
        return generate_latest(self.registry)
