"""Every Prometheus metric Tandem exports, defined once.

Metrics live in a private ``CollectorRegistry`` per ``Metrics`` object (one per
app), so several apps in one process (tests, embedding) never collide. Every
metric carries a ``node`` label.

What is counted on every op (ops, commits and the latency histograms) is kept
in plain numbers (``_Histogram``, ``_Count``) and turned into metric families
only when scraped: prometheus_client's own take a lock per increment and walk
a histogram's buckets in Python (eight locked increments per committed op,
~1.2 µs an observation). Every one of them is changed and read on the event
loop's thread only, so they need no lock.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import cast

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from tandem.authorization import AUTHORIZE_OUTCOMES
from tandem.hot import HotDocuments

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
    0.2,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
_FAST_BUCKETS = (
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1,
)  # fmt: skip
#: 0.1 and 0.2 are there for the SLOs (deploy/prometheus/alerts.yml): op latency
#: p99 < 100 ms, presence < 200 ms, token verification < 100 ms.
#: How prometheus_client writes a bucket bound (``+Inf``, ``0.0005``); untyped there.
_bound_label = cast(Callable[[float], str], floatToGoString)


class _Histogram:
    """A histogram with a ``node`` label, in plain numbers (see the module docstring)."""

    __slots__ = ("name", "documentation", "bounds", "counts", "total")

    def __init__(self, name: str, documentation: str, bounds: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(bounds)
        #: Observations per bucket, not cumulative; the last one is above every bound.
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # Buckets are "less than or equal": the first bound >= value counts it.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, node: str) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["node"])
        cumulative = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            buckets.append((_bound_label(bound), float(cumulative)))
        family.add_metric([node], buckets, sum_value=self.total)
        return family


class _Count:
    """A counter with a ``node`` label, in plain numbers (see the module docstring)."""

    __slots__ = ("name", "documentation", "value")

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.value = 0

    def family(self, node: str) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=["node"])
        family.add_metric([node], float(self.value))
        return family


class _Plain(Collector):
    """Exports the plain-number metrics of one node when the registry is scraped."""

    def __init__(self, node: str, metrics: Sequence[_Histogram | _Count]) -> None:
        self.node = node
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for metric in self.metrics:
            yield metric.family(self.node)


class _Hottest(Collector):
    """``tandem_hot_document_ops_per_second``: the top documents of the last window."""

    def __init__(self, node: str, hot: HotDocuments) -> None:
        self.node = node
        self.hot = hot

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "tandem_hot_document_ops_per_second",
            f"Ops/s of this node's hottest documents over the last {self.hot.window:g} s "
            f"(at most {self.hot.top_n}; rank 1 is the hottest)",
            labels=["node", "rank", "doc"],
        )
        for rank, (doc, rate) in enumerate(self.hot.top(time.monotonic()), start=1):
            family.add_metric([self.node, str(rank), doc], rate)
        yield family


class _Disk(Collector):
    """Free space where the data lives, and the SQLite database's size on disk."""

    def __init__(self, node: str, data_dir: Path, database: Path | None) -> None:
        self.node = node
        self.data_dir = data_dir
        self.database = database

    def collect(self) -> Iterator[Metric]:
        try:
            usage = shutil.disk_usage(self.data_dir)
        except OSError:
            return
        for name, help_text, value in (
            ("tandem_disk_free_bytes", "Free bytes on the data directory's filesystem", usage.free),
            ("tandem_disk_size_bytes", "Size of the data directory's filesystem", usage.total),
        ):
            family = GaugeMetricFamily(name, help_text, labels=["node"])
            family.add_metric([self.node], float(value))
            yield family
        if self.database is not None:
            family = GaugeMetricFamily(
                "tandem_database_bytes",
                "SQLite database on disk: the file, its WAL and shared memory",
                labels=["node"],
            )
            family.add_metric([self.node], float(_files_size(self.database)))
            yield family


def _files_size(database: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += database.with_name(database.name + suffix).stat().st_size
    return total


#: The kinds of merge counted in ``tandem_merges_total`` and their outcomes.
MERGE_KINDS = ("yjs", "offline")
MERGE_OUTCOMES = ("ok", "refused", "failed")
#: How a document lease changed hands on this node (``tandem_lease_owner_changes_total``).
LEASE_CHANGES = ("acquired", "released", "lost", "fenced")


class Metrics:
    """The metric families, bound to one node label."""

    def __init__(self, node: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.node = node
        self._connections = Gauge(
            "tandem_connections", "Open WebSocket connections", ["node", "endpoint"], registry=r
        )
        # Children of node-only families are bound once: ``labels()`` is a locked lookup.
        self._documents = Gauge(
            "tandem_open_documents", "Documents loaded", ["node"], registry=r
        ).labels(node)
        self._ops = _Count("tandem_ops_committed_total", "Ops committed")
        self._commits = _Count("tandem_commit_batches_total", "Storage transactions for ops")
        self._op_latency = _Histogram(
            "tandem_op_latency_seconds",
            "Submit received to ack/broadcast sent (includes the durable commit)",
            _LATENCY_BUCKETS,
        )
        self._commit_latency = _Histogram(
            "tandem_commit_seconds", "Durable commit of one batch", _LATENCY_BUCKETS
        )
        self._transform = _Histogram(
            "tandem_transform_seconds", "Transforming one submit to the head", _FAST_BUCKETS
        )
        self._presence_latency = _Histogram(
            "tandem_presence_latency_seconds",
            "Presence update received to broadcast",
            _LATENCY_BUCKETS,
        )
        self._auth = _Histogram("tandem_auth_seconds", "Token verification", _FAST_BUCKETS)
        self._forward = _Histogram(
            "tandem_forward_seconds",
            "A submit forwarded to its document's owner node until its answer came back",
            _LATENCY_BUCKETS,
        )
        r.register(
            _Plain(
                node,
                [
                    self._ops,
                    self._commits,
                    self._op_latency,
                    self._commit_latency,
                    self._transform,
                    self._presence_latency,
                    self._auth,
                    self._forward,
                ],
            )
        )
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
        self._held = Gauge(
            "tandem_slow_client_bytes",
            "Output held for clients that are behind (queued, and in socket buffers)",
            ["node"],
            registry=r,
        ).labels(node)

        self._commit_failures = Counter(
            "tandem_commit_failures_total",
            "Op batches the store failed to commit (the ops were refused, nothing acknowledged)",
            ["node"],
            registry=r,
        ).labels(node)
        self._merges = Counter(
            "tandem_merges_total",
            "Merges by kind (yjs: a Yjs update; offline: an offline branch) and outcome",
            ["node", "kind", "outcome"],
            registry=r,
        )
        for kind in MERGE_KINDS:  # every series exists from the start: rates need no guessing
            for outcome in MERGE_OUTCOMES:
                self._merges.labels(node, kind, outcome)
        self.hot_documents = HotDocuments(now=time.monotonic())
        r.register(_Hottest(node, self.hot_documents))
        self._hooks = Counter(
            "tandem_hook_calls_total",
            "Python hook calls by hook and outcome: ok, error, timeout",
            ["node", "hook", "outcome"],
            registry=r,
        )
        self._authorize = Counter(
            "tandem_authorize_total",
            "authorize hook decisions: allowed, rejected, failed_closed, failed_open",
            ["node", "outcome"],
            registry=r,
        )
        for outcome in AUTHORIZE_OUTCOMES:
            self._authorize.labels(node, outcome)
        self._webhooks = Counter(
            "tandem_webhook_deliveries_total",
            "Webhook attempts by outcome: delivered, retried, dropped",
            ["node", "outcome"],
            registry=r,
        )

        self._lease_changes = Counter(
            "tandem_lease_owner_changes_total",
            "Document leases this node took (acquired) or stopped holding (released, lost, fenced)",
            ["node", "change"],
            registry=r,
        )
        for change in LEASE_CHANGES:
            self._lease_changes.labels(node, change)
        self._renew_failures = Counter(
            "tandem_lease_renew_failures_total",
            "Lease renewals that failed (the store unreachable or erring; the lease is kept "
            "until its local deadline)",
            ["node"],
            registry=r,
        ).labels(node)
        self._fenced = Counter(
            "tandem_fenced_commits_total",
            "Commits refused for a stale lease epoch (another node owns the document; "
            "nothing written)",
            ["node"],
            registry=r,
        ).labels(node)
        self._owned = Gauge(
            "tandem_owned_documents", "Documents whose lease this node holds", ["node"], registry=r
        ).labels(node)

    def connection_opened(self, endpoint: str) -> None:
        self._connections.labels(self.node, endpoint).inc()

    def connection_closed(self, endpoint: str) -> None:
        self._connections.labels(self.node, endpoint).dec()

    def set_documents(self, count: int) -> None:
        self._documents.set(count)

    def committed(self, ops: int, seconds: float) -> None:
        self._ops.value += ops
        self._commits.value += 1
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

    def held_bytes(self, total: int) -> None:
        self._held.set(total)

    def committed_documents(self, docs: Iterable[str]) -> None:
        """One committed op per entry of ``docs``, for the hottest documents."""
        self.hot_documents.count(docs, time.monotonic())

    def commit_failed(self) -> None:
        self._commit_failures.inc()

    def merge(self, kind: str, outcome: str) -> None:
        """A merge (``MERGE_KINDS``) and how it ended (``MERGE_OUTCOMES``)."""
        self._merges.labels(self.node, kind, outcome).inc()

    def watch_disk(self, data_dir: Path, database: Path | None) -> None:
        """Export free space under ``data_dir`` and, for SQLite, the database's size."""
        self.registry.register(_Disk(self.node, data_dir, database))

    def hook(self, name: str, outcome: str) -> None:
        """A Python hook call: ``ok``, ``error`` or ``timeout``."""
        self._hooks.labels(self.node, name, outcome).inc()

    def authorize(self, outcome: str) -> None:
        """An ``authorize`` decision (``tandem.authorization.AUTHORIZE_OUTCOMES``)."""
        self._authorize.labels(self.node, outcome).inc()

    def webhook(self, outcome: str) -> None:
        """A webhook attempt: ``delivered``, ``retried`` or ``dropped``."""
        self._webhooks.labels(self.node, outcome).inc()

    def lease_change(self, change: str) -> None:
        """This node ``acquired``, ``released``, ``lost`` or was ``fenced`` from a lease."""
        self._lease_changes.labels(self.node, change).inc()

    def lease_renew_failed(self, leases: int = 1) -> None:
        self._renew_failures.inc(leases)

    def fenced_commit(self) -> None:
        self._fenced.inc()

    def set_owned_documents(self, count: int) -> None:
        self._owned.set(count)

    def forward_latency(self, seconds: float) -> None:
        self._forward.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
