"""The rules file: rules, routes, channels and retry policies, validated at load.

One YAML file (``[tasklens] rules_file``) configures the whole alert engine. Everything is
checked when the file is loaded, so a typo is reported with the file, the key and the fix
(``tasklens check-config``, the Alerts page, ``/tasklens/health``, one alert), never discovered at
3 am when the first alert should go out. A running deployment keeps its last good rules meanwhile
(:func:`tasklens.config.ruleset`)::

    ruleset = load_ruleset(Path("include/tasklens_rules.yml"))
    ruleset.rule("task_failed").severity        # Severity.CRITICAL
    ruleset.channels["slack"].conn_id            # "tasklens_slack"

Without a file, :func:`load_ruleset` returns the built-in defaults: failures and killed tasks
to Slack, escalation to email after 30 minutes unacknowledged, retries stored only. A file
is layered on top of the defaults: ``rules`` and ``channels`` override or extend the
built-in ones by name; ``routes`` (an ordered list) replaces the default routes when given.

One job per module: :mod:`~tasklens.ruleset.model` (the frozen dataclasses), :mod:`~tasklens.ruleset.defaults` (the
built-in rules), :mod:`~tasklens.ruleset.parse` (a document to a validated ruleset) and
:mod:`~tasklens.ruleset.loader` (the file, YAML, and the saved copy of the last good file).
"""

from __future__ import annotations

from tasklens.ruleset.defaults import default_ruleset, use_default_conn_ids
from tasklens.ruleset.loader import load_ruleset, parse_rules_text, read_last_good, read_rules_file, save_last_good
from tasklens.ruleset.model import (
    BUILTIN_RULES,
    CHANNEL_TYPES,
    DEFAULT_GROUP_WAIT_S,
    GROUP_BY_FIELDS,
    METRIC_OPS,
    RULE_TYPES,
    TEMPLATE_NAME,
    Channel,
    MuteWindow,
    RetryPolicyRef,
    Route,
    RouteMatch,
    Rule,
    RuleMatch,
    Ruleset,
)
from tasklens.ruleset.parse import parse_duration, parse_ruleset

__all__ = [
    "BUILTIN_RULES",
    "CHANNEL_TYPES",
    "DEFAULT_GROUP_WAIT_S",
    "GROUP_BY_FIELDS",
    "METRIC_OPS",
    "RULE_TYPES",
    "TEMPLATE_NAME",
    "Channel",
    "MuteWindow",
    "RetryPolicyRef",
    "Route",
    "RouteMatch",
    "Rule",
    "RuleMatch",
    "Ruleset",
    "default_ruleset",
    "load_ruleset",
    "parse_duration",
    "parse_rules_text",
    "parse_ruleset",
    "read_last_good",
    "read_rules_file",
    "save_last_good",
    "use_default_conn_ids",
]
