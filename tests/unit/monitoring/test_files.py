"""The statsd_exporter mapping, Prometheus rules and Grafana dashboard match the metrics the code emits."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from tasklens import metrics

MONITORING = Path(__file__).resolve().parents[3] / "include" / "monitoring"
MAPPING = MONITORING / "statsd_mapping.yml"
RULES = MONITORING / "prometheus_rules.yml"
DASHBOARD = MONITORING / "grafana" / "tasklens-dashboard.json"
PREFIX = "airflow."  # Airflow's default [metrics] statsd_prefix, assumed by the mapping
STATSD_TYPE = {"counter": "counter", "gauge": "gauge", "timer": "observer"}
KNOWN_LABELS = {*metrics.ALLOWED_LABELS, *(label for spec in metrics.METRICS for label in spec.labels), "event", "le"}
CUSTOM = "tasklens_custom_"


def load_mappings() -> list[dict]:
    return yaml.safe_load(MAPPING.read_text())["mappings"]


def glob_match(pattern: str, name: str) -> re.Match | None:
    regex = "^" + re.escape(pattern).replace(r"\*", "([^.]+)") + "$"
    return re.match(regex, name)


def map_stat(stat: str, statsd_type: str) -> tuple[int, str] | None:
    """Index of the first mapping statsd_exporter would apply to ``stat``, and the Prometheus name it gives."""
    for index, mapping in enumerate(load_mappings()):
        if mapping.get("match_metric_type", statsd_type) != statsd_type:
            continue
        found = glob_match(mapping["match"], stat)
        if found:
            name = mapping["name"]
            for number, group in enumerate(found.groups(), start=1):
                name = name.replace(f"${{{number}}}", group)
            return index, name
    return None


def emitted_prometheus_names() -> set[str]:
    """Every Prometheus series name the emitted metrics become (histograms expand to _bucket/_sum/_count)."""
    names = set()
    for spec in metrics.METRICS:
        mapped = map_stat(PREFIX + spec.name.replace("*", "records_processed"), STATSD_TYPE[spec.kind])
        assert mapped is not None
        name = mapped[1]
        if spec.kind == "timer":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def referenced_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\btasklens_[a-z0-9_]*", expr))


def is_emitted(name: str, emitted: set[str]) -> bool:
    # Custom metric names are chosen by task code: any tasklens_custom_* query is about emitted metrics.
    return name in emitted or name == CUSTOM or (name.startswith(CUSTOM) and name[len(CUSTOM) :] != "")


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["definition"])
    return exprs


@pytest.mark.parametrize("spec", metrics.METRICS, ids=lambda s: f"{s.name}[{s.kind}]")
def test_every_emitted_metric_has_a_mapping(spec):
    """Each metric in tasklens.metrics.METRICS matches a statsd_exporter mapping of its type."""
    stat = PREFIX + spec.name.replace("*", "records_processed")
    mapped = map_stat(stat, STATSD_TYPE[spec.kind])
    assert mapped is not None, f"no mapping for {stat} ({spec.kind})"
    assert re.fullmatch(r"tasklens_[a-z0-9_]+", mapped[1])


def test_every_mapping_is_used_by_an_emitted_metric():
    """No mapping entry is stale: each one is the first match of some metric the code emits."""
    used = {map_stat(PREFIX + s.name.replace("*", "x"), STATSD_TYPE[s.kind])[0] for s in metrics.METRICS}
    assert used == set(range(len(load_mappings())))


def test_mapping_gives_one_event_label_per_transition():
    """Transition counters become one Prometheus counter whose ``event`` label is the transition."""
    for mapping in load_mappings():
        if mapping["match"].startswith(PREFIX + "tasklens.task.") and mapping["name"] == "tasklens_task_events_total":
            assert mapping["labels"]["event"] == mapping["match"].rsplit(".", 1)[1]


def test_rules_and_dashboard_reference_only_emitted_metrics():
    """Every metric named in a rule or dashboard query is one tasklens emits (through the mapping)."""
    emitted = emitted_prometheus_names()
    for expr in rule_exprs() + dashboard_exprs():
        for name in referenced_metrics(expr):
            assert is_emitted(name, emitted), f"{name} in {expr!r} is not emitted"


def test_rules_and_dashboard_group_by_known_labels_only():
    """``by (...)`` clauses use labels the metrics really have."""
    for expr in rule_exprs() + dashboard_exprs():
        for group in re.findall(r"by \(([^)]*)\)", expr):
            labels = {label.strip() for label in group.split(",")}
            assert labels <= KNOWN_LABELS, (labels - KNOWN_LABELS, expr)


def test_dashboard_shows_every_core_metric():
    """The dashboard has a panel for each non-custom metric family tasklens emits."""
    referenced = set().union(*(referenced_metrics(e) for e in dashboard_exprs()))
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in emitted_prometheus_names() if CUSTOM not in n}
    for family in families:
        assert any(name.startswith(family) for name in referenced), family
    assert CUSTOM in referenced or any(name.startswith(CUSTOM) for name in referenced)


def test_rules_cover_failure_rate_duration_silence_and_internal_errors():
    """The rules file has the alerts the runbook refers to (and configuration errors tasklens works around)."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    names = {rule["alert"] for group in groups for rule in group["rules"]}
    assert names == {
        "TasklensTaskFailureRateHigh",
        "TasklensTaskDurationHigh",
        "TasklensNoRecentSuccess",
        "TasklensInternalErrors",
        "TasklensConfigErrors",
    }


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: run `make system-deps` (Debian package prometheus)"
    return path


def test_promtool_accepts_the_rules():
    """``promtool check rules`` validates the PromQL and the file structure."""
    result = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_on_series_shaped_like_the_exporter_output(tmp_path):
    """promtool rule unit tests: failure rate, silence and internal-error alerts fire for dotted/dashed ids."""
    labels = 'dag_id="sales.daily",task_id="load-orders",operator="PythonOperator",owner="data"'
    tests = textwrap.dedent(
        f"""
        rule_files: [{json.dumps(str(RULES))}]
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
              - series: 'tasklens_task_events_total{{event="failed",state="failed",{labels}}}'
                values: '0+1x120'
              - series: 'tasklens_task_events_total{{event="success",state="success",{labels}}}'
                values: '0+1x5 5x115'
              - series: 'tasklens_task_events_total{{event="running",state="running",{labels}}}'
                values: '0+2x120'
              - series: 'tasklens_errors_total{{stage="metrics"}}'
                values: '0 0 1 2 3 3 3 3 3 3 3 3 3 3 3 3'
            alert_rule_test:
              - eval_time: 90m
                alertname: TasklensTaskFailureRateHigh
                exp_alerts:
                  - exp_labels: {{severity: warning, dag_id: sales.daily, task_id: load-orders}}
                    exp_annotations:
                      summary: "sales.daily.load-orders fails 100% of its runs"
                      description: "More than 25% of finished attempts failed over the last hour (at least 4 attempts)."
              - eval_time: 5m
                alertname: TasklensInternalErrors
                exp_alerts:
                  - exp_labels: {{severity: warning, stage: metrics}}
                    exp_annotations:
                      summary: "tasklens stage metrics is failing"
                      description: "A tasklens stage raised; tasks are unaffected; events/metrics/alerts may be lost."
              - eval_time: 30m
                alertname: TasklensNoRecentSuccess
                exp_alerts: []
          - interval: 10m
            input_series:
              - series: 'tasklens_task_events_total{{event="success",state="success",{labels}}}'
                values: '0 1+0x47'
              - series: 'tasklens_task_events_total{{event="running",state="running",{labels}}}'
                values: '0+1x48'
            alert_rule_test:
              - eval_time: 450m
                alertname: TasklensNoRecentSuccess
                exp_alerts:
                  - exp_labels: {{severity: critical, dag_id: sales.daily, task_id: load-orders}}
                    exp_annotations:
                      summary: "sales.daily.load-orders ran but has not succeeded in 6 hours"
                      description: "The task had attempts in the last 6 hours and none of them succeeded."
        """
    )
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(tests)
    result = subprocess.run([_promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


COLLECTOR = MONITORING / "otel_collector.yml"


def collector_statements() -> str:
    processor = yaml.safe_load(COLLECTOR.read_text())["processors"]["transform/tasklens"]
    return "\n".join(s for group in processor["metric_statements"] for s in group["statements"])


def test_collector_config_handles_every_emitted_metric():
    """The OTel Collector example names every metric tasklens emits over OTLP (custom ones by their prefix)."""
    statements = collector_statements()
    for name in metrics.METRIC_NAMES:
        if name.startswith(metrics.CUSTOM_PREFIX):
            assert r"^airflow\\.tasklens\\.custom\\." in statements  # OTTL string: \\. is a regex \.
        elif name.startswith("tasklens.task.") and name.rsplit(".", 1)[1] in metrics.EVENT_KINDS:
            assert f'"{PREFIX}{name}"' in statements and name.rsplit(".", 1)[1] in statements
        else:
            assert f'"{PREFIX}{name}"' in statements, name


def test_collector_config_gives_the_statsd_exporter_names():
    """Each Prometheus name of the statsd mapping is what the collector renames to (before the exporter's
    _total/_seconds suffixes), so the rules and the dashboard read either path."""
    statements = collector_statements()
    for mapping in load_mappings():
        base = re.sub(r"_(total|seconds)$", "", mapping["name"])
        if base.startswith(CUSTOM):
            assert '"tasklens_custom_$$1"' in statements
        else:
            assert f'set(metric.name, "{base}")' in statements, mapping["name"]
