"""deploy/grafana/visionzoo-dashboard.json: every metric and label its PromQL expressions (panels and
template variables) name is one visionzoo/serving/metrics.py registers, with the suffix Prometheus
gives that metric type (counters `_total`; histograms `_bucket`, `_sum`, `_count`), so a renamed
metric breaks this test instead of leaving an empty panel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from visionzoo.serving.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "visionzoo-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
IDENTIFIER = re.compile(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?!\w)")


def registered() -> tuple[dict[str, str], set[str]]:
    """{exposed sample name: family} and every label name, from the metrics the service creates."""
    import prometheus_client as prom

    metrics = Metrics.create(prom.CollectorRegistry())
    names, labels = {}, {"le"}
    for instrument in vars(metrics).values():
        if not hasattr(instrument, "_type"):
            continue
        family = instrument._name
        names.update({family + suffix: family for suffix in SUFFIXES[instrument._type]})
        labels.update(instrument._labelnames)
    return names, labels


def expressions(dashboard: dict) -> list[str]:
    found = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


def parse(expression: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression references."""
    labels = set()
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # string literals
    for matchers in re.findall(r"\{([^}]*)\}", text):
        labels.update(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors, [$__rate_interval]
    for grouping in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        labels.update(name.strip() for name in grouping.split(",") if name.strip())
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    metrics = set()
    for match in IDENTIFIER.finditer(text):
        name = match.group(1)
        rest = text[match.end():].lstrip()
        if name in PROMQL_WORDS or rest.startswith("("):  # keyword or function call
            continue
        if text[:match.start()].rstrip().endswith(","):  # label_values(metric, label): the label
            labels.add(name)
            continue
        metrics.add(name)
    return metrics, labels


def test_parse_finds_metric_and_label_names():
    metrics, labels = parse('histogram_quantile(0.99, sum by (le, model) (rate(a_bucket{model=~"$model", x="y"}[$__rate_interval])))'
                            ' / sum(b_total) + label_values(c_count, protocol)')
    assert metrics == {"a_bucket", "b_total", "c_count"} and labels == {"le", "model", "x", "protocol"}


def test_dashboard_is_grafana_json_with_panels_for_every_signal():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 36
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for signal in ("request rate", "failure", "latency", "queue time", "batch size", "engine"):
        assert signal in titles, signal
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource", "model", "version", "protocol"}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("expression", expressions(json.loads(DASHBOARD.read_text())))
def test_every_metric_and_label_the_dashboard_queries_exists(expression):
    names, labels = registered()
    used_metrics, used_labels = parse(expression)
    assert used_metrics, f"no metric found in {expression!r}"
    unknown = used_metrics - set(names)
    assert not unknown, f"{sorted(unknown)} are not metrics visionzoo/serving/metrics.py exposes ({sorted(names)})"
    assert used_labels <= labels, f"labels {sorted(used_labels - labels)} are not on any visionzoo metric"
    for metric in used_metrics:
        if metric.endswith("_bucket"):
            assert re.search(rf"histogram_quantile\([^,]+,.*\ble\b.*{metric}", expression), f"{metric} without histogram_quantile by le"
