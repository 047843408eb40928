"""The rules file: loading, layering on the built-in defaults, and every validation error."""

from __future__ import annotations

import textwrap
from datetime import datetime, time, timezone
from pathlib import Path

import pytest

from tasklens.alerts import AlertKind, Severity
from tasklens.exceptions import ConfigError
from tasklens.ruleset import load_ruleset, parse_duration

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "include" / "tasklens_rules.example.yml"
CONNS = {"slack_conn_id": "test_slack", "smtp_conn_id": "test_smtp"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str):
    return load_ruleset(write(tmp_path, text), **CONNS)


def error_for(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_ruleset(path, **CONNS)
    assert caught.value.source == str(path)
    assert str(path) in str(caught.value) and "Fix:" in str(caught.value)
    return caught.value


# --------------------------------------------------------------------------- valid files


def test_example_file_loads_and_documents_every_section():
    """The shipped example rules file is valid and uses every section."""
    ruleset = load_ruleset(EXAMPLE, **CONNS)
    assert ruleset.source == EXAMPLE
    assert {r.name for r in ruleset.routes} == {"infra", "code", "ml", "critical", "warning"}
    assert ruleset.channels["slack_ml"].channel == "#ml-alerts"
    assert ruleset.channels["email"].to == ("data-oncall@example.com",)
    assert ruleset.rule("nightly_load_slow").max_duration_s == 45 * 60
    assert ruleset.rule("finance_failures").after_attempt == 2
    assert ruleset.retry_policies["spark_jobs"].preset == "spark_job"
    assert ruleset.route("critical").escalate_after_s == 1800
    assert len(ruleset.route("critical").mute) == 2
    assert ruleset.route("warning").fallback_channels == ("email",)


def test_example_file_mentions_every_schema_key():
    """Every key the schema accepts appears in the example file (so it documents every key)."""
    from tasklens.ruleset import parse as module

    text = EXAMPLE.read_text(encoding="utf-8")
    keys = set(
        module._TOP_KEYS
        + module._RULE_KEYS
        + module._RULE_MATCH_KEYS
        + module._ROUTE_KEYS
        + module._ROUTE_MATCH_KEYS
        + module._CHANNEL_KEYS
        + module._MUTE_KEYS
        + module._DEFAULTS_KEYS
        + module._RETRY_POLICY_KEYS
        + module._RETRY_MATCH_KEYS
    )
    for extra in module._RULE_KEYS_BY_TYPE.values():
        keys.update(extra)
    missing = sorted(k for k in keys if f"{k}:" not in text)
    assert missing == []


def test_no_file_gives_builtin_defaults():
    """Without a rules file: failures and kills to Slack, escalation to email after 30 min, retries stored only."""
    ruleset = load_ruleset(None, **CONNS)
    assert ruleset.source is None
    assert ruleset.channels["slack"].conn_id == "test_slack"
    assert ruleset.channels["slack"].rate_limit_per_s == 1.0
    assert ruleset.channels["email"].conn_id == "test_smtp"
    assert ruleset.rule("task_failed").severity is Severity.CRITICAL
    assert ruleset.rule("task_killed").severity is Severity.CRITICAL
    assert ruleset.rule("task_retry").notify is False
    critical = ruleset.route("critical")
    assert critical.channels == ("slack",)
    assert critical.escalate_after_s == 1800 and critical.escalation_channels == ("email",)
    assert ruleset.rule("data_quality_score").op == "<"


def test_default_conn_ids_come_from_config(monkeypatch):
    """The built-in channels use [tasklens] slack_conn_id / smtp_conn_id (config.ruleset() wires them into the
    ruleset, which reads no configuration itself: so the test goes through it, as tasklens does)."""
    from tasklens import config

    monkeypatch.setenv("AIRFLOW__TASKLENS__SLACK_CONN_ID", "my_slack")
    monkeypatch.delenv("AIRFLOW__TASKLENS__RULES_FILE", raising=False)
    config.reset()
    try:
        assert config.ruleset().channels["slack"].conn_id == "my_slack"
        assert load_ruleset(None).channels["slack"].conn_id == "my_slack"
    finally:
        monkeypatch.delenv("AIRFLOW__TASKLENS__SLACK_CONN_ID")
        config.reset()


def test_config_ruleset_loads_rules_file(tmp_path, monkeypatch):
    """config.ruleset() loads the file named by [tasklens] rules_file, cached until config.reset()."""
    from tasklens import config

    path = write(tmp_path, "rules:\n  task_retry: {notify: true}\n")
    monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(path))
    config.reset()
    try:
        first = config.ruleset()
        assert first.rule("task_retry").notify is True
        assert config.ruleset() is first
    finally:
        monkeypatch.delenv("AIRFLOW__TASKLENS__RULES_FILE")
        config.reset()
    assert config.ruleset().source is None


def test_yaml_anchors_and_merge_keys(tmp_path):
    """x- keys hold anchors; `<<: *anchor` merges them into routes (own keys win)."""
    ruleset = load(
        tmp_path,
        """
        x-common: &common {group_wait: 1m, channels: [slack]}
        routes:
          - {<<: *common, name: a}
          - {<<: *common, name: b, channels: [email]}
    """,
    )
    a, b = ruleset.routes
    assert a.channels == ("slack",) and a.group_wait_s == 60
    assert b.channels == ("email",) and b.group_wait_s == 60


def test_empty_file_is_the_defaults(tmp_path):
    """An empty file means the built-in defaults (with its path recorded)."""
    ruleset = load(tmp_path, "")
    assert ruleset.route("critical") is not None
    assert ruleset.source is not None


def test_rules_merge_over_builtins_by_name(tmp_path):
    """Configuring a built-in rule changes only the given keys; new rules are added."""
    ruleset = load(
        tmp_path,
        """
        rules:
          task_failed: {severity: warning}
          task_retry: {enabled: false}
          slow_merge: {type: duration, max_duration: 10m, match: {task_id: merge_*}}
    """,
    )
    failed = ruleset.rule("task_failed")
    assert failed.severity is Severity.WARNING and failed.notify is True
    assert ruleset.rule("task_retry").enabled is False
    slow = ruleset.rule("slow_merge")
    assert slow.max_duration_s == 600 and slow.match.task_id == ("merge_*",)
    assert ruleset.rule("task_killed") is not None


def test_routes_replace_builtin_routes_and_use_defaults(tmp_path):
    """A routes list replaces the built-in routes; unset timing knobs come from defaults:."""
    ruleset = load(
        tmp_path,
        """
        defaults: {group_by: [dag_id], group_wait: 2m, repeat_interval: 2h}
        routes:
          - {channels: [email], match: {severity: critical, regex: "(?i)oom"}}
    """,
    )
    assert [r.name for r in ruleset.routes] == ["route-0"]
    route = ruleset.routes[0]
    assert route.group_by == ("dag_id",) and route.group_wait_s == 120 and route.repeat_interval_s == 7200
    assert route.match.min_severity is Severity.CRITICAL
    assert route.match.regex[0][1].search("OOMKilled")


def test_defaults_apply_to_builtin_routes(tmp_path):
    """defaults: without routes: retimes the built-in routes."""
    ruleset = load(tmp_path, "defaults: {group_wait: 0}\n")
    assert all(route.group_wait_s == 0 for route in ruleset.routes)


def test_route_match_kinds_and_globs(tmp_path):
    """Route match keys are parsed into kinds, globs and per-field regexes."""
    route = load(
        tmp_path,
        """
        routes:
          - name: r
            channels: slack
            match: {kind: [failure, killed], rule: "task_*", tags: [a, b], owner: x, regex: {labels.owner: "^x$"}}
    """,
    ).routes[0]
    assert route.match.kinds == (AlertKind.FAILURE, AlertKind.KILLED)
    assert route.match.rules == ("task_*",) and route.match.tags == ("a", "b") and route.match.owner == ("x",)
    assert route.match.regex[0][0] == "labels.owner"


def test_mute_windows_recurring_and_explicit(tmp_path):
    """Mute windows: weekday/hour ranges (wrapping midnight, with a zone) and explicit UTC start/end."""
    route = load(
        tmp_path,
        """
        routes:
          - name: r
            channels: [slack]
            mute:
              - {weekdays: "mon-fri", hours: "22:00-06:00"}
              - {weekdays: [sat, sun]}
              - {hours: "9-17", timezone: Europe/Paris}
              - {start: "2025-12-24T00:00:00Z", end: "2025-12-27T00:00:00+00:00"}
    """,
    ).routes[0]
    night, weekend, paris, holiday = route.mute
    assert night.weekdays == frozenset(range(5)) and night.start_time == time(22) and night.end_time == time(6)
    assert night.contains(datetime(2025, 3, 4, 23, 30, tzinfo=timezone.utc))  # Tuesday night
    assert night.contains(datetime(2025, 3, 4, 5, 59))  # naive = UTC
    assert not night.contains(datetime(2025, 3, 4, 12, 0, tzinfo=timezone.utc))
    assert weekend.contains(datetime(2025, 3, 8, 12, 0, tzinfo=timezone.utc))
    assert not weekend.contains(datetime(2025, 3, 7, 12, 0, tzinfo=timezone.utc))
    assert paris.contains(datetime(2025, 1, 6, 8, 30, tzinfo=timezone.utc))  # 09:30 in Paris
    assert not paris.contains(datetime(2025, 1, 6, 16, 30, tzinfo=timezone.utc))  # 17:30 in Paris
    assert holiday.contains(datetime(2025, 12, 25, tzinfo=timezone.utc))
    assert not holiday.contains(datetime(2025, 12, 27, tzinfo=timezone.utc))


def test_weekday_range_wraps_the_week(tmp_path):
    """A weekday range like fri-mon wraps over the weekend."""
    route = load(tmp_path, "routes:\n  - {channels: [slack], mute: [{weekdays: fri-mon}]}\n").routes[0]
    assert route.mute[0].weekdays == frozenset({4, 5, 6, 0})


def test_channels_are_added_and_override_builtins(tmp_path):
    """Channels merge over the built-in slack/email by name; conn_id defaults per type."""
    ruleset = load(
        tmp_path,
        """
        channels:
          email: {type: email, to: [a@example.com, b@example.com]}
          ops: {type: slack, conn_id: ops_webhook, rate_limit_per_s: 0.5}
    """,
    )
    assert ruleset.channels["email"].to == ("a@example.com", "b@example.com")
    assert ruleset.channels["email"].conn_id == "test_smtp"
    assert ruleset.channels["ops"].conn_id == "ops_webhook" and ruleset.channels["ops"].rate_limit_per_s == 0.5
    assert "slack" in ruleset.channels


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2d", 172800),
        (90, 90),
        (1.5, 1.5),
        ("250ms", 0.25),
        ("0", 0),
        ("1.5h", 5400),
    ],
)
def test_durations(value, seconds):
    """Durations accept unit strings and plain numbers of seconds."""
    assert parse_duration(value) == pytest.approx(seconds)


# --------------------------------------------------------------------------- bad input


def test_malformed_yaml_names_the_line(tmp_path):
    """Malformed YAML fails with the line and a syntax fix."""
    error = error_for(tmp_path, "rules:\n  task_failed: {severity: critical\n")
    assert error.key.startswith("line ")
    assert "malformed YAML" in error.problem and "YAML syntax" in error.fix


def test_duplicate_keys_are_rejected(tmp_path):
    """A key given twice is an error instead of silently keeping the last one."""
    error = error_for(tmp_path, "rules:\n  task_failed: {severity: critical}\n  task_failed: {enabled: false}\n")
    assert "duplicate key 'task_failed'" in error.problem


def test_missing_file(tmp_path):
    """A rules_file that does not exist names the file and how to fix it."""
    with pytest.raises(ConfigError) as caught:
        load_ruleset(tmp_path / "nope.yml", **CONNS)
    assert caught.value.key == "rules_file" and "example" in caught.value.fix


def test_top_level_must_be_a_mapping(tmp_path):
    """A YAML list at the top level is rejected."""
    error = error_for(tmp_path, "- a\n- b\n")
    assert "expected a mapping" in error.problem


@pytest.mark.parametrize(
    ("text", "key", "fix_part"),
    [
        ("rulez: {}\n", "rulez", "did you mean 'rules'"),
        ("rules:\n  task_failed: {severty: critical}\n", "rules.task_failed.severty", "did you mean 'severity'"),
        ("routes:\n  - {channels: [slack], match: {dag: x}}\n", "routes[0].match.dag", "allowed keys"),
        ("channels:\n  s: {type: slack, token: x}\n", "channels.s.token", "allowed keys"),
        ("routes:\n  - {channels: [slack], mute: [{days: [sat]}]}\n", "routes[0].mute[0].days", "allowed keys"),
        ("retry_policies:\n  p: {preset: x, match: {queue: y}}\n", "retry_policies.p.match.queue", "allowed keys"),
        ("rules:\n  task_failed: {threshold: 3}\n", "rules.task_failed.threshold", "allowed keys"),
    ],
)
def test_unknown_keys(tmp_path, text, key, fix_part):
    """Unknown keys anywhere name the dotted key and list the allowed ones (with a close match)."""
    error = error_for(tmp_path, text)
    assert error.key == key
    assert fix_part in error.fix


def test_unknown_channel_in_route(tmp_path):
    """A route naming an undefined channel fails with the known channel names."""
    error = error_for(tmp_path, "routes:\n  - {channels: [slak]}\n")
    assert error.key == "routes[0].channels[0]"
    assert "unknown channel 'slak'" in error.problem and "did you mean 'slack'" in error.fix


@pytest.mark.parametrize("field", ["escalation_channels", "fallback_channels"])
def test_unknown_escalation_or_fallback_channel(tmp_path, field):
    """Escalation and fallback channel names are checked too."""
    extra = "escalate_after: 5m, " if field == "escalation_channels" else ""
    error = error_for(tmp_path, f"routes:\n  - {{channels: [slack], {extra}{field}: [pager]}}\n")
    assert error.key == f"routes[0].{field}[0]"


def test_regex_that_does_not_compile(tmp_path):
    """A route regex that does not compile is reported with the regex error."""
    error = error_for(tmp_path, "routes:\n  - {channels: [slack], match: {regex: '(unclosed'}}\n")
    assert error.key == "routes[0].match.regex" and "does not compile" in error.problem


def test_regex_on_unknown_field(tmp_path):
    """Field regexes only accept alert fields and labels.<name>."""
    error = error_for(tmp_path, "routes:\n  - {channels: [slack], match: {regex: {colour: x}}}\n")
    assert error.key == "routes[0].match.regex.colour"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("rules:\n  task_failed: {severity: urgent}\n", "rules.task_failed.severity"),
        ("routes:\n  - {channels: [slack], match: {severity: high}}\n", "routes[0].match.severity"),
        ("rules:\n  task_failed: {severity: 3}\n", "rules.task_failed.severity"),
    ],
)
def test_bad_severity(tmp_path, text, key):
    """Severities other than info/warning/critical are rejected with the allowed values."""
    error = error_for(tmp_path, text)
    assert error.key == key and "info, warning, critical" in error.fix


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("defaults: {group_wait: -5s}\n", "defaults.group_wait"),
        ("routes:\n  - {channels: [slack], repeat_interval: -1}\n", "routes[0].repeat_interval"),
        (
            "routes:\n  - {channels: [slack], escalate_after: '-30m', escalation_channels: [email]}\n",
            "routes[0].escalate_after",
        ),
        ("rules:\n  task_duration: {max_duration: -1h}\n", "rules.task_duration.max_duration"),
    ],
)
def test_negative_durations(tmp_path, text, key):
    """Negative durations are rejected."""
    error = error_for(tmp_path, text)
    assert error.key == key and "negative" in error.problem


@pytest.mark.parametrize("value", ["soon", "5 minutes", "1x", True, "nan"])
def test_bad_duration_values(tmp_path, value):
    """Strings that are not durations are rejected with an example of valid ones."""
    error = error_for(tmp_path, f"defaults: {{group_wait: {value!r}}}\n".replace("True", "true"))
    assert error.key == "defaults.group_wait" and "30s" in error.fix


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("rules:\n  mine: {severity: warning}\n", "rules.mine.type", "has no type"),
        ("rules:\n  mine: {type: explode}\n", "rules.mine.type", "unknown rule type"),
        ("rules:\n  task_failed: {type: metric}\n", "rules.task_failed.type", "built-in rule"),
        ("rules:\n  m: {type: metric, threshold: 3}\n", "rules.m.metric", "missing required key"),
        ("rules:\n  m: {type: metric, metric: x}\n", "rules.m.threshold", "missing required key"),
        ("rules:\n  m: {type: metric, metric: x, threshold: 3, op: '=>'}\n", "rules.m.op", "unknown comparison"),
        ("rules:\n  m: {type: metric, metric: x, threshold: high}\n", "rules.m.threshold", "not a number"),
        ("rules:\n  d: {type: duration}\n", "rules.d", "without max_duration"),
        ("rules:\n  task_duration: {median_factor: 0.5}\n", "rules.task_duration.median_factor", "below 1"),
        ("rules:\n  task_duration: {min_history: 2.5}\n", "rules.task_duration.min_history", "whole number"),
        ("rules:\n  task_duration: {events: [exploded]}\n", "rules.task_duration.events[0]", "unknown event"),
        ("rules:\n  task_failed: {enabled: maybe}\n", "rules.task_failed.enabled", "not a boolean"),
        ("rules:\n  task_failed: {template: ../../etc/passwd}\n", "rules.task_failed.template", "bad template"),
        ("rules:\n  task_recovered: {resolves: [task_faild]}\n", "rules.task_recovered.resolves[0]", "unknown rule"),
        ("rules:\n  'bad name!': {type: failed}\n", "rules.bad name!", "bad name"),
        ("rules:\n  task_failed: [critical]\n", "rules.task_failed", "expected a mapping"),
    ],
)
def test_bad_rules(tmp_path, text, key, problem):
    """Each kind of bad rule names its key and problem."""
    error = error_for(tmp_path, text)
    assert error.key == key
    assert problem in error.problem


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("routes:\n  - {name: a}\n", "routes[0].channels", "missing required key"),
        ("routes:\n  - {channels: []}\n", "routes[0].channels", "without channels"),
        ("routes: {a: 1}\n", "routes", "expected a list"),
        (
            "routes:\n  - {name: a, channels: [slack]}\n  - {name: a, channels: [slack]}\n",
            "routes[1].name",
            "duplicate",
        ),
        ("routes:\n  - {channels: [slack], escalate_after: 5m}\n", "routes[0].escalation_channels", "go together"),
        ("routes:\n  - {channels: [slack], escalation_channels: [email]}\n", "routes[0].escalate_after", "go together"),
        ("routes:\n  - {channels: [slack], continue: sometimes}\n", "routes[0].continue", "not a boolean"),
        ("routes:\n  - {channels: [slack], group_by: ['a b']}\n", "routes[0].group_by[0]", "bad group_by"),
        (
            "routes:\n  - {channels: [slack], match: {kind: explosion}}\n",
            "routes[0].match.kind[0]",
            "unknown alert kind",
        ),
    ],
)
def test_bad_routes(tmp_path, text, key, problem):
    """Each kind of bad route names its key and problem."""
    error = error_for(tmp_path, text)
    assert error.key == key
    assert problem in error.problem


@pytest.mark.parametrize(
    ("mute", "key", "problem"),
    [
        ("{weekdays: [someday]}", "routes[0].mute[0].weekdays[0]", "unknown weekday"),
        ("{hours: '25:00-26:00'}", "routes[0].mute[0].hours", "not a valid time range"),
        ("{hours: 'noon'}", "routes[0].mute[0].hours", "not an hours range"),
        ("{hours: '10-10'}", "routes[0].mute[0].hours", "empty range"),
        ("{timezone: Mars/Olympus}", "routes[0].mute[0].timezone", "unknown timezone"),
        ("{start: '2025-01-02T00:00:00Z', end: '2025-01-01T00:00:00Z'}", "routes[0].mute[0].end", "not after start"),
        ("{start: '2025-01-02T00:00:00Z'}", "routes[0].mute[0]", "needs both"),
        ("{start: 'tomorrow', end: '2025-01-01T00:00:00Z'}", "routes[0].mute[0].start", "ISO 8601"),
        ("{start: '2025-01-01', end: '2025-01-02', weekdays: [sat]}", "routes[0].mute[0]", "mixes"),
        ("{}", "routes[0].mute[0]", "empty mute window"),
    ],
)
def test_bad_mute_windows(tmp_path, mute, key, problem):
    """Each kind of bad mute window names its key and problem."""
    error = error_for(tmp_path, f"routes:\n  - {{channels: [slack], mute: [{mute}]}}\n")
    assert error.key == key
    assert problem in error.problem


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("channels:\n  x: {conn_id: a}\n", "channels.x.type", "missing required key"),
        ("channels:\n  x: {type: pager}\n", "channels.x.type", "unknown channel type"),
        ("channels:\n  x: {type: email, to: [not-an-address]}\n", "channels.x.to[0]", "not an email address"),
        ("channels:\n  x: {type: slack, to: [a@b.c]}\n", "channels.x.to", "for email channels"),
        ("channels:\n  x: {type: email, channel: '#a'}\n", "channels.x.channel", "for slack channels"),
        ("channels:\n  x: {type: slack, rate_limit_per_s: 0}\n", "channels.x.rate_limit_per_s", "below"),
        ("channels:\n  x: {type: slack, rate_limit_per_s: -1}\n", "channels.x.rate_limit_per_s", "below"),
        ("retry_policies:\n  p: {match: {dag_id: x}}\n", "retry_policies.p.preset", "missing required key"),
        ("retry_policies:\n  p: {preset: [a]}\n", "retry_policies.p.preset", "expected a string"),
        ("version: 2\n", "version", "unsupported version"),
    ],
)
def test_bad_channels_policies_and_version(tmp_path, text, key, problem):
    """Bad channels, retry policies and versions name their key and problem."""
    error = error_for(tmp_path, text)
    assert error.key == key
    assert problem in error.problem


def test_make_run_local_rules_send_every_notified_alert_to_the_mail_sink():
    """`make run` without Slack routes warnings and criticals to the local SMTP sink's recipient."""
    from tasklens.routing import route
    from tests.unit.tasklens.test_store import make_alert

    ruleset = load_ruleset(REPO / "include" / "tasklens_rules.local.yml", **CONNS)
    assert ruleset.channels["email"].to == ("oncall@localhost",)
    deliveries = route(make_alert(), ruleset)
    assert [(d.channel, d.channel_type) for d in deliveries] == [("email", "email")]
