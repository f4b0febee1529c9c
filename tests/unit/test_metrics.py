"""The per-op metrics, kept in plain numbers, export what prometheus_client's would."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from tandem.metrics import _FAST_BUCKETS, _LATENCY_BUCKETS, Metrics


def samples(exposition: bytes, family: str) -> list[str]:
    """The sample lines of ``family`` (no comments, no ``_created``)."""
    return [
        line
        for line in exposition.decode().splitlines()
        if line.startswith(family) and not line.startswith(f"{family}_created")
    ]


def test_histograms_and_counters_match_prometheus_client() -> None:
    rng = random.Random(7)
    metrics = Metrics("n1")
    reference = CollectorRegistry()
    latency = Histogram(
        "tandem_op_latency_seconds", "x", ["node"], buckets=_LATENCY_BUCKETS, registry=reference
    ).labels("n1")
    commit = Histogram(
        "tandem_commit_seconds", "x", ["node"], buckets=_LATENCY_BUCKETS, registry=reference
    ).labels("n1")
    transform = Histogram(
        "tandem_transform_seconds", "x", ["node"], buckets=_FAST_BUCKETS, registry=reference
    ).labels("n1")
    ops = Counter("tandem_ops_committed", "x", ["node"], registry=reference).labels("n1")
    batches = Counter("tandem_commit_batches", "x", ["node"], registry=reference).labels("n1")
    # Values on every bucket bound (the "less than or equal" edge), between them,
    # beyond the last one, and zero.
    values = [*_LATENCY_BUCKETS, *_FAST_BUCKETS, 0.0, 7.5, 1e-7]
    values += [rng.uniform(0, 0.2) for _ in range(500)]
    for value in values:
        metrics.op_latency(value)
        latency.observe(value)
        metrics.transform_time(value)
        transform.observe(value)
        size = rng.randint(1, 5)
        metrics.committed(size, value)
        commit.observe(value)
        ops.inc(size)
        batches.inc()

    ours, theirs = metrics.render(), generate_latest(reference)
    for family in (
        "tandem_op_latency_seconds",
        "tandem_commit_seconds",
        "tandem_transform_seconds",
        "tandem_ops_committed_total",
        "tandem_commit_batches_total",
    ):
        assert samples(ours, family), family
        assert samples(ours, family) == samples(theirs, family), family
    assert f'tandem_op_latency_seconds_count{{node="n1"}} {float(len(values))}' in ours.decode()


def test_untouched_metrics_are_exported_as_zero() -> None:
    text = Metrics("n2").render().decode()
    assert 'tandem_auth_seconds_bucket{le="+Inf",node="n2"} 0.0' in text
    assert 'tandem_presence_latency_seconds_sum{node="n2"} 0.0' in text
    assert 'tandem_ops_committed_total{node="n2"} 0.0' in text
    assert "# TYPE tandem_commit_seconds histogram" in text


def test_ownership_metrics_count_what_they_are_told() -> None:
    metrics = Metrics("n3")
    untouched = metrics.render().decode()
    for change in ("acquired", "released", "lost", "fenced"):
        assert f'tandem_lease_owner_changes_total{{change="{change}",node="n3"}} 0.0' in untouched
    assert 'tandem_fenced_commits_total{node="n3"} 0.0' in untouched
    assert 'tandem_forward_seconds_count{node="n3"} 0.0' in untouched
    metrics.lease_change("acquired")
    metrics.lease_change("fenced")
    metrics.fenced_commit()
    metrics.lease_renew_failed()
    metrics.set_owned_documents(7)
    metrics.forward_latency(0.004)
    text = metrics.render().decode()
    assert 'tandem_lease_owner_changes_total{change="acquired",node="n3"} 1.0' in text
    assert 'tandem_lease_owner_changes_total{change="fenced",node="n3"} 1.0' in text
    assert 'tandem_fenced_commits_total{node="n3"} 1.0' in text
    assert 'tandem_lease_renew_failures_total{node="n3"} 1.0' in text
    assert 'tandem_owned_documents{node="n3"} 7.0' in text
    assert 'tandem_forward_seconds_bucket{le="0.005",node="n3"} 1.0' in text
