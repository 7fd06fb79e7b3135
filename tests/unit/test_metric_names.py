"""The metric names the Grafana dashboard and the operator docs use are the ones the code defines.

The names the code can expose come from its registries (the coordinator's, the queue collector's
and the workers'): a counter as `NAME_total`, a histogram as `NAME_bucket/_sum/_count`, a gauge as
`NAME`. A dashboard query naming anything else would draw an empty panel without any error."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import Metric

from scriptpool.coordinator import metrics as coordinator_metrics
from scriptpool.workers import metrics as worker_metrics
from tests.conftest import REPO

DASHBOARD = REPO / "docs" / "grafana" / "scriptpool.json"
OPERATIONS = REPO / "docs" / "operations" / "metrics.md"
NAME = re.compile(r"\bscriptpool_[a-z0-9_]+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def families() -> list[Metric]:
    found = [
        *coordinator_metrics.REGISTRY.collect(),
        *coordinator_metrics.QueueCollector.families(),
        *worker_metrics.REGISTRY.collect(),
    ]
    return [family for family in found if family.name.startswith("scriptpool_")]


def exposed_names() -> set[str]:
    return {family.name + suffix for family in families() for suffix in SUFFIXES[family.type]}


def expressions(node: Any) -> Iterator[str]:
    """Every PromQL `expr` in the dashboard (panels, rows' panels, targets)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def dashboard_names() -> set[str]:
    return {name for expr in expressions(json.loads(DASHBOARD.read_text())) for name in NAME.findall(expr)}


def test_every_metric_the_dashboard_queries_exists() -> None:
    used = dashboard_names()
    assert used, "the dashboard queries no scriptpool metric"
    assert used <= exposed_names(), f"not defined by the code: {sorted(used - exposed_names())}"


def test_the_dashboard_shows_every_metric() -> None:
    used = dashboard_names()
    unshown = {family.name for family in families() if not any(name.startswith(family.name) for name in used)}
    assert not unshown, f"defined but on no panel: {sorted(unshown)}"


def test_the_names_follow_prometheus_conventions() -> None:
    for family in families():
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name  # base units
        assert not family.name.endswith(("_milliseconds", "_ms", "_total")), family.name


def test_the_operator_docs_list_every_metric() -> None:
    """By the name a query uses (a histogram by its base name: its series add `_bucket` and co.)."""
    documented = set(NAME.findall(OPERATIONS.read_text()))
    names = {family.name: _documentable(family) for family in families()}
    for family_name, written in names.items():
        assert written & documented, f"{family_name} is not in {OPERATIONS.name}"
    assert documented <= set().union(*names.values()), sorted(documented - set().union(*names.values()))


def _documentable(family: Metric) -> set[str]:
    exposed = {family.name + suffix for suffix in SUFFIXES[family.type]}
    return exposed | {family.name} if family.type == "histogram" else exposed
