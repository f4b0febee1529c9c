"""The docs stay true to the code: every setting and metric is documented."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from tandem.metrics import Metrics
from tandem.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_setting_is_in_operations_md() -> None:
    text = (DOCS / "operations.md").read_text()
    for f in fields(Settings):
        assert f"`{f.name}`" in text, f.name
        assert f"`TANDEM_{f.name.upper()}`" in text, f.name


def test_every_metric_is_in_operations_md() -> None:
    text = (DOCS / "operations.md").read_text()
    for metric in Metrics("n").registry.collect():
        assert f"`{metric.name}" in text, metric.name


def test_every_error_code_is_in_protocol_md() -> None:
    import tandem.errors as errors

    text = (DOCS / "protocol.md").read_text()
    codes = {
        cls.code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.TandemError)
    }
    missing = sorted(code for code in codes if not re.search(rf"`{code}`", text))
    assert not missing, missing


def test_every_metric_in_operations_md_is_exported(tmp_path: Path) -> None:
    text = (DOCS / "operations.md").read_text()
    table = text.split("`GET /metrics`", 1)[1].split("\n\n", 2)[1]
    metrics = Metrics("n")
    database = tmp_path / "tandem.db"
    database.write_bytes(b"")
    metrics.watch_disk(tmp_path, database)
    exported = set()
    for metric in metrics.registry.collect():
        suffix = "_total" if metric.type == "counter" else ""
        exported.add(metric.name + suffix)
    documented = set(re.findall(r"`(tandem_[a-z_]+)", table))
    assert documented and documented <= exported, sorted(documented - exported)
