"""The Grafana dashboard and the Prometheus rules use only metrics a real server exports.

A real ``tandem serve`` gets a real session (two clients, ops, presence, a Yjs
update); then every metric name in ``deploy/grafana/tandem.json`` and
``deploy/prometheus/alerts.yml``, found by a PromQL parser, must be in its
``/metrics`` (or be recorded by the rules themselves, or be Prometheus' own
``up``). The rules, and every dashboard query wrapped as a rule, must pass
``promtool check rules``; the hottest-documents view must name the document
that was just edited, and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .harness import RawClient, ServerProcess, token

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "tandem.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
#: Series Prometheus makes itself for every target.
PROMETHEUS_OWN = {"up"}

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def selector_names(node: Any) -> Iterator[str]:
    """Every metric name a parsed PromQL expression selects."""
    name = getattr(node, "name", None)
    if type(node).__name__ == "VectorSelector" and name:
        yield name
    for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None and not isinstance(child, str | int | float):
            yield from selector_names(child)
    for child in getattr(node, "args", None) or ():
        yield from selector_names(child)


def dashboard_queries() -> list[str]:
    """Each panel's PromQL, with Grafana's ``$node`` made a plain regex."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        target["expr"].replace("$node", ".*")
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        definition = variable.get("definition", "")
        if definition.startswith("label_values("):  # Grafana's, not PromQL: its metric
            queries.append(definition.removeprefix("label_values(").split(",")[0])
    return queries


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def used_names() -> tuple[set[str], set[str]]:
    """(metric names the dashboard and rules read, names the rules record)."""
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used: set[str] = set()
    for expr in [*dashboard_queries(), *(rule["expr"] for rule in rules())]:
        used.update(selector_names(promql_parser.parse(expr)))
    return used, recorded


async def real_session(server: ServerProcess) -> None:
    """Two editors, ops, presence and a refused op in /collab, and a Yjs update in /yjs."""
    from .yclient import YClient

    a = await RawClient.connect(server, f"token={token('a')}&doc=mon&client=ma")
    b = await RawClient.connect(server, f"token={token('b')}&doc=mon&client=mb")
    await a.expect("snapshot")
    await b.expect("snapshot")
    for seq in range(1, 21):
        await a.send({"type": "insert", "pos": 0, "text": "x", "seq": seq})
        await a.expect("ack")
    await b.send({"type": "presence", "cursor": {"index": 1, "length": 0}})
    await a.expect("presence", client="mb")
    # An offline branch sent back as one merge, and one refused (a base past the head).
    branch = [[{"insert": "off"}], [{"retain": 3}, {"insert": "line"}]]
    await b.send({"type": "merge", "v": 10, "seq": 1, "ops": branch, "ref": "m1"})
    await b.expect("merged")
    await b.send({"type": "merge", "v": 10_000, "seq": 2, "ops": branch, "ref": "m2"})
    await b.expect("error")
    yjs = YClient(77)
    await yjs.connect(f"{server.ws_url}/yjs/mon?token={token('y')}")
    await asyncio.wait_for(yjs.synced.wait(), 10)
    yjs.insert(0, "from yjs")
    await a.expect("op")
    await yjs.disconnect()
    await b.send({"type": "insert", "pos": 10_000, "text": "past the end", "seq": 3})
    await b.expect("error")  # an error sent to a client is counted too
    await a.close()
    await b.close()


def scrape(server: ServerProcess) -> dict[str, list[Any]]:
    """Every exported sample name (``_total``, ``_bucket``…) → its samples."""
    text = httpx.get(server.url + "/metrics").text
    exported: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            exported.setdefault(sample.name, []).append(sample)
    return exported


async def test_every_metric_the_dashboard_and_alerts_use_is_exported(
    server: ServerProcess,
) -> None:
    await real_session(server)
    # The hottest documents: once a 10 s window is complete it names "mon", and only it.
    deadline = time.monotonic() + 25
    while True:
        exported = scrape(server)
        hot = exported.get("tandem_hot_document_ops_per_second", [])
        if hot or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)  # the window is 10 s of wall time: poll the scrape
    assert [(s.labels["rank"], s.labels["doc"]) for s in hot] == [("1", "mon")]
    assert hot[0].value > 0

    used, recorded = used_names()
    assert len(used) >= 15, used
    missing = sorted(used - recorded - PROMETHEUS_OWN - exported.keys())
    assert not missing, f"used by deploy/ but not exported by a real server: {missing}"
    # after a real session these are not just declared but counted
    ops = [s.value for s in exported["tandem_ops_committed_total"]]
    assert ops and ops[0] >= 21
    merges = {
        (s.labels["kind"], s.labels["outcome"]): s.value for s in exported["tandem_merges_total"]
    }
    assert merges[("yjs", "ok")] >= 1 and merges[("offline", "failed")] == 0
    assert merges[("offline", "ok")] == 1 and merges[("offline", "refused")] == 1
    assert exported["tandem_disk_free_bytes"][0].value > 0
    assert exported["tandem_database_bytes"][0].value > 0


def _promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    reason = "promtool not found (Debian: apt-get install prometheus; README, Prerequisites)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def test_promtool_accepts_the_rules_and_every_dashboard_query(tmp_path: Path) -> None:
    promtool = _promtool()
    checked = subprocess.run([promtool, "check", "rules", RULES], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    wrapped = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, expr in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(wrapped))
    checked = subprocess.run(
        [promtool, "check", "rules", tmp_path / "dashboard.yml"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_has_a_runbook_entry() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    alerts = [rule["alert"] for rule in rules() if "alert" in rule]
    assert len(alerts) >= 10
    missing = [alert for alert in alerts if f"`{alert}`" not in runbook]
    assert not missing, missing
    for rule in rules():
        if "alert" in rule:
            assert rule["annotations"]["runbook"] == "docs/runbook.md#alerts"
            assert rule["labels"]["severity"] in ("page", "ticket")
