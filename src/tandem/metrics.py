"""Every Prometheus metric Tandem exports, defined once.

Metrics live in a private ``CollectorRegistry`` per ``Metrics`` object (one per
app), so several apps in one process (tests, embedding) never collide. Every
metric carries a ``node`` label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
_FAST_BUCKETS = (0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


class Metrics:
    """The metric families, bound to one node label."""

    def __init__(self, node: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.node = node
        self._connections = Gauge(
            "tandem_connections", "Open WebSocket connections", ["node", "endpoint"], registry=r
        )
        # Children of node-only families are bound once: ``labels()`` is a dict
        # lookup under a lock, paid on every committed op otherwise.
        self._documents = Gauge(
            "tandem_open_documents", "Documents loaded", ["node"], registry=r
        ).labels(node)
        self._ops = Counter(
            "tandem_ops_committed_total", "Ops committed", ["node"], registry=r
        ).labels(node)
        self._commits = Counter(
            "tandem_commit_batches_total", "Storage transactions for ops", ["node"], registry=r
        ).labels(node)
        self._op_latency = Histogram(
            "tandem_op_latency_seconds",
            "Submit received to ack/broadcast sent (includes the durable commit)",
            ["node"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(node)
        self._commit_latency = Histogram(
            "tandem_commit_seconds",
            "Durable commit of one batch",
            ["node"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(node)
        self._transform = Histogram(
            "tandem_transform_seconds",
            "Transforming one submit to the head",
            ["node"],
            buckets=_FAST_BUCKETS,
            registry=r,
        ).labels(node)
        self._presence_latency = Histogram(
            "tandem_presence_latency_seconds",
            "Presence update received to broadcast",
            ["node"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(node)
        self._auth = Histogram(
            "tandem_auth_seconds", "Token verification", ["node"], buckets=_FAST_BUCKETS, registry=r
        ).labels(node)
        self._errors = Counter(
            "tandem_errors_total", "Errors sent to clients, by code", ["node", "code"], registry=r
        )
        self._conflicts = Counter(
            "tandem_commit_conflicts_total",
            "Commits refused because another node took the version first (then re-sequenced)",
            ["node"],
            registry=r,
        ).labels(node)
        self._dropped = Counter(
            "tandem_slow_consumers_total",
            "Connections dropped for not reading",
            ["node"],
            registry=r,
        ).labels(node)

    def connection_opened(self, endpoint: str) -> None:
        self._connections.labels(self.node, endpoint).inc()

    def connection_closed(self, endpoint: str) -> None:
        self._connections.labels(self.node, endpoint).dec()

    def set_documents(self, count: int) -> None:
        self._documents.set(count)

    def committed(self, ops: int, seconds: float) -> None:
        self._ops.inc(ops)
        self._commits.inc()
        self._commit_latency.observe(seconds)

    def op_latency(self, seconds: float) -> None:
        self._op_latency.observe(seconds)

    def transform_time(self, seconds: float) -> None:
        self._transform.observe(seconds)

    def presence_latency(self, seconds: float) -> None:
        self._presence_latency.observe(seconds)

    def auth_time(self, seconds: float) -> None:
        self._auth.observe(seconds)

    def error(self, code: str) -> None:
        self._errors.labels(self.node, code).inc()

    def conflict(self) -> None:
        self._conflicts.inc()

    def slow_consumer(self) -> None:
        self._dropped.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
