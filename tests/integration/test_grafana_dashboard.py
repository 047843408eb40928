"""The Grafana dashboard queries metrics tasklens emits, with labels they carry, through the provisioning the
compose stack mounts.

Metric names go from :data:`tasklens.metrics.METRICS` through ``statsd_mapping.yml`` (as statsd-exporter applies it)
to Prometheus names; panel PromQL is parsed by promtool.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tasklens import metrics

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "include" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "tasklens-dashboard.json"
PROVISIONING = MONITORING / "grafana" / "provisioning"
MAPPING = MONITORING / "statsd_mapping.yml"
STATSD_PREFIX = "airflow."  # [metrics] statsd_prefix in docker-compose.yaml
EXPORTER_TYPE = {"counter": "counter", "gauge": "gauge", "timer": "observer"}
CUSTOM_NAME = "records_processed"  # stands in for any name task code passes to metrics.incr/gauge/timing

SELECTOR = re.compile(r"(?P<name>\btasklens_[A-Za-z0-9_]+)?\s*\{(?P<matchers>[^{}]*)\}")
MATCHER = re.compile(r"(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"(?P<value>[^\"]*)\"")
BARE_NAME = re.compile(r"\btasklens_[A-Za-z0-9_]+\b")


def _exporter_series() -> dict[str, set[str]]:
    """Prometheus series name -> label names, for every metric tasklens emits, as statsd-exporter exposes them."""
    mappings = yaml.safe_load(MAPPING.read_text())["mappings"]
    series: dict[str, set[str]] = {}
    for spec in metrics.METRICS:
        stat = STATSD_PREFIX + spec.name.replace("*", CUSTOM_NAME)
        for mapping in mappings:
            if mapping.get("match_metric_type", EXPORTER_TYPE[spec.kind]) != EXPORTER_TYPE[spec.kind]:
                continue
            # statsd-exporter glob: "*" matches one dot-free component.
            found = re.fullmatch(re.escape(mapping["match"]).replace(r"\*", "([^.]+)"), stat)
            if found:
                name = mapping["name"]
                for number, group in enumerate(found.groups(), start=1):
                    name = name.replace(f"${{{number}}}", group)
                labels = {*spec.labels, *mapping.get("labels", {})}
                break
        else:
            pytest.fail(f"statsd_mapping.yml maps nothing for {stat} ({spec.kind})")
        if spec.kind == "timer":  # observer_type histogram (the mapping's default)
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_sum"] = set(labels)
            series[f"{name}_count"] = set(labels)
        else:
            series.setdefault(name, set()).update(labels)
    return series


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable of the dashboard."""
    dashboard = _dashboard()
    found = [(f"panel {p['title']!r}", t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"variable {variable['name']!r}", variable["definition"]))
    return found


def _strip_label_values(expr: str) -> str:
    """``label_values(metric{...}, label)`` (a Grafana function) -> ``metric{...}``, so PromQL tools can read it."""
    match = re.fullmatch(r"\s*label_values\((?P<selector>.*),\s*[A-Za-z_]+\s*\)\s*", expr)
    return match.group("selector") if match else expr


def test_every_panel_queries_only_metrics_the_code_emits() -> None:
    """Each metric name in a panel or variable query is a series statsd-exporter makes from tasklens.metrics.METRICS."""
    series = _exporter_series()
    # Names inside string literals ({__name__=~"tasklens_custom_.+"}) are regexes, checked by the label test.
    unknown = [
        (where, name)
        for where, expr in _queries()
        for name in BARE_NAME.findall(re.sub(r'"[^"]*"', '""', expr))
        if name not in series
    ]
    assert unknown == []
    panels_with_queries = [p for p in _dashboard()["panels"] if p.get("targets")]
    assert panels_with_queries, "the dashboard has no queries"


def test_every_label_a_query_filters_on_exists_on_its_metric() -> None:
    """Label matchers in a selector use labels the selected metric carries (a typo would show an empty panel)."""
    series = _exporter_series()
    problems = []
    for where, expr in _queries():
        for selector in SELECTOR.finditer(expr):
            matchers = {m["label"]: m["value"] for m in MATCHER.finditer(selector["matchers"])}
            if selector["name"]:
                candidates = [selector["name"]]
            else:  # {__name__=~"regex", ...}
                pattern = matchers.pop("__name__", None)
                assert pattern, f"{where}: selector without a metric name: {selector.group(0)}"
                candidates = [name for name in series if re.fullmatch(pattern, name)]
                assert candidates, f"{where}: {pattern!r} matches no emitted series"
            for name in candidates:
                missing = set(matchers) - series.get(name, set())
                if missing:
                    problems.append((where, name, sorted(missing)))
    assert problems == []


def test_panel_promql_parses(tmp_path: Path) -> None:
    """promtool parses every panel and variable query (template variables replaced by a regex)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run `make system-deps` (Debian package prometheus)"
    rules = [
        {"record": f"tasklens:dashboard_query_{index}", "expr": re.sub(r"\$\{?\w+\}?", ".*", _strip_label_values(e))}
        for index, (_, e) in enumerate(_queries())
    ]
    rules_file = tmp_path / "dashboard_queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_panels_are_well_formed() -> None:
    """Panels have unique ids, a grid position, and use the Prometheus datasource variable the dashboard defines."""
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        if panel.get("targets"):
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert all(t.get("refId") for t in panel["targets"]), panel["title"]


def test_provisioning_loads_the_dashboard_the_compose_file_mounts() -> None:
    """Grafana provisioning points at the Prometheus service and at the directory compose mounts the dashboard in."""
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = dict(volume.removesuffix(":ro").split(":", 1) for volume in grafana["volumes"])
    assert mounts["./include/monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboard_target = mounts["./include/monitoring/grafana/tasklens-dashboard.json"]

    providers = yaml.safe_load((PROVISIONING / "dashboards" / "tasklens.yml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == [str(Path(dashboard_target).parent)]
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == dashboard_target

    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [(d["type"], d["url"], d["isDefault"]) for d in datasources] == [
        ("prometheus", "http://prometheus:9090", True)
    ]
    prometheus_port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert datasources[0]["url"].endswith(f":{prometheus_port}")
