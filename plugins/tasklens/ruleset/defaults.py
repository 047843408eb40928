"""The built-in rules, routes and channels a rules file is layered on (and what runs without one)."""

from __future__ import annotations

import types
from collections.abc import Callable

from tasklens.alerts import Severity
from tasklens.ruleset.model import Channel, Route, RouteMatch, Rule, Ruleset

__all__ = ["default_ruleset", "use_default_conn_ids"]


#: ``(slack_conn_id, smtp_conn_id)`` of the built-in channels when the caller passes none. The ruleset reads no
#: configuration: :mod:`tasklens.config` passes its ``[tasklens]`` values in with :func:`use_default_conn_ids`.
def _builtin_conn_ids() -> tuple[str, str]:
    return "tasklens_slack", "tasklens_smtp"


_conn_id_defaults: Callable[[], tuple[str, str]] = _builtin_conn_ids


def use_default_conn_ids(defaults: Callable[[], tuple[str, str]]) -> None:
    """Where the built-in Slack and email channels get their connection ids when none is passed."""
    global _conn_id_defaults
    _conn_id_defaults = defaults


def _default_conn_ids(slack_conn_id: str | None, smtp_conn_id: str | None) -> dict[str, str]:
    if slack_conn_id is None or smtp_conn_id is None:
        default_slack, default_smtp = _conn_id_defaults()
        slack_conn_id = slack_conn_id or default_slack
        smtp_conn_id = smtp_conn_id or default_smtp
    return {"slack": slack_conn_id, "email": smtp_conn_id}


def _builtin_rules() -> tuple[Rule, ...]:
    def metric(name: str, op: str, threshold: float, severity: Severity, text: str) -> Rule:
        return Rule(
            name=name, type="metric", severity=severity, metric=name, op=op, threshold=threshold, description=text
        )

    return (
        Rule("task_failed", "failed", Severity.CRITICAL, description="A task attempt failed with no retries left."),
        Rule(
            "task_retry",
            "retry",
            Severity.WARNING,
            notify=False,
            description="A task attempt failed and a retry is scheduled (stored, not sent).",
        ),
        Rule(
            "task_killed",
            "killed",
            Severity.CRITICAL,
            description="A task was killed outside Python (SIGKILL/OOM, worker lost, heartbeat timeout).",
        ),
        Rule(
            "task_recovered",
            "recovered",
            Severity.INFO,
            resolves=("task_failed", "task_retry", "task_killed"),
            description="A task succeeded: resolve its open failure, retry and killed alerts.",
        ),
        Rule(
            "task_duration",
            "duration",
            Severity.WARNING,
            median_factor=3.0,
            min_history=5,
            min_duration_s=300.0,
            events=("success",),
            description="A task ran more than 3x its recent median (and at least 5 minutes).",
        ),
        Rule(
            "task_overrun",
            "overrun",
            Severity.WARNING,
            factor=2.0,
            min_history=5,
            min_duration_s=300.0,
            description="A task has been running over 2x its usual p95 duration (and at least 5 minutes).",
        ),
        Rule(
            "task_stuck",
            "stuck",
            Severity.WARNING,
            max_queued_s=1800.0,
            max_scheduled_s=1800.0,
            description="A task has waited in queued or scheduled for over 30 minutes.",
        ),
        Rule(
            "dag_late",
            "late",
            Severity.WARNING,
            max_delay_s=1800.0,
            description="A scheduled DAG run has not started (or not been created) 30 minutes after it was due.",
        ),
        Rule(
            "component_heartbeat",
            "heartbeat",
            Severity.CRITICAL,
            max_silence_s=180.0,
            description="The scheduler, triggerer or dag-processor has not heartbeated for 3 minutes.",
        ),
        Rule("custom", "custom", Severity.WARNING, description="Alerts raised by task code with tasklens.alert()."),
        metric("spark_job_duration", ">", 1800.0, Severity.WARNING, "A Spark job ran longer than 30 minutes."),
        metric("spark_memory_utilization", ">", 85.0, Severity.CRITICAL, "Spark executors used over 85% memory."),
        metric("data_quality_score", "<", 95.0, Severity.WARNING, "Data quality score fell below 95."),
        metric("prediction_accuracy", "<", 85.0, Severity.WARNING, "Model accuracy fell below 85%."),
        metric("roc_auc", "<", 0.6, Severity.WARNING, "A model's ROC AUC fell below 0.6: it ranks barely better "
               "than chance."),
    )


def _builtin_routes() -> tuple[Route, ...]:
    return (
        Route(
            name="critical",
            channels=("slack",),
            match=RouteMatch(min_severity=Severity.CRITICAL),
            escalate_after_s=1800.0,
            escalation_channels=("email",),
            fallback_channels=("email",),
        ),
        Route(
            name="warning",
            channels=("slack",),
            match=RouteMatch(min_severity=Severity.WARNING),
            fallback_channels=("email",),
        ),
    )


def default_ruleset(*, slack_conn_id: str | None = None, smtp_conn_id: str | None = None) -> Ruleset:
    """The built-in rules, routes and channels (connection ids default to ``[tasklens]`` config)."""
    conns = _default_conn_ids(slack_conn_id, smtp_conn_id)
    channels = {
        "slack": Channel(name="slack", type="slack", conn_id=conns["slack"], rate_limit_per_s=1.0),
        "email": Channel(name="email", type="email", conn_id=conns["email"], rate_limit_per_s=5.0),
    }
    return Ruleset(
        rules=_builtin_rules(),
        routes=_builtin_routes(),
        channels=types.MappingProxyType(channels),
        retry_policies=types.MappingProxyType({}),
        source=None,
    )
