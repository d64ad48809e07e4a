"""Grafana dashboards in deploy/grafana: well-formed, and every query names a metric.

Whether those metrics exist is checked against a live scrape of the four
services in tests/runtime/test_lattice_up.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
#: A series selector: a metric name followed by its label matchers or a range.
_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")


def dashboard_metrics() -> Iterator[tuple[Path, dict[str, Any], str]]:
    """(dashboard file, panel, metric name) for every selector of every query."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                for metric in _SELECTOR.findall(target["expr"]):
                    yield path, panel, metric


def test_the_four_dashboards_exist():
    names = {p.stem for p in DASHBOARDS.glob("*.json")}
    assert names == {"serving", "gateway", "training", "redis"}


@pytest.mark.parametrize("path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.stem)
def test_each_dashboard_is_importable(path):
    board = json.loads(path.read_text())
    assert board["uid"].startswith("lattice-") and board["title"].startswith("Lattice / ")
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        assert panel["targets"], f"{panel['title']}: no query"
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_every_query_selects_a_lattice_or_gen_ai_metric():
    seen = list(dashboard_metrics())
    assert len(seen) > 30
    for path, panel, metric in seen:
        assert metric.startswith(("lattice_", "gen_ai_")), f"{path.name}: {panel['title']}"
