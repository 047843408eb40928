"""The Airflow side of a preset: a ``retry_policy`` (Airflow 3.3's
:class:`~airflow.sdk.definitions.retry_policy.RetryPolicy`) that evaluates the preset's error rules."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from airflow.sdk.definitions.retry_policy import RetryDecision, RetryPolicy

from tasklens.retry.rules import ErrorRule, error_chain, retry_after_s

__all__ = ["PresetRetryPolicy"]


class PresetRetryPolicy(RetryPolicy):
    """Airflow ``retry_policy`` evaluating a preset's rules in order; the first match decides.

    Runs in the worker (Airflow calls :meth:`evaluate` with the task's exception). No match
    returns ``RetryAction.DEFAULT``: the task's ``retries`` decide. A ``Retry-After`` header on a
    retried error becomes the delay, capped at ``max_retry_delay``.
    """

    def __init__(self, preset_name: str, rules: Iterable[ErrorRule], max_retry_delay: timedelta | None = None) -> None:
        self.preset_name = preset_name
        self.rules = tuple(rules)
        self.max_retry_delay = max_retry_delay

    def match(self, exception: BaseException) -> ErrorRule | None:
        """The first rule matching ``exception``, or None."""
        return next((rule for rule in self.rules if rule.matches(exception)), None)

    def evaluate(self, exception: BaseException, try_number: int, max_tries: int, context: Any = None) -> RetryDecision:
        rule = self.match(exception)
        if rule is None:
            return RetryDecision.default()
        reason = f"{self.preset_name}: {rule.reason or rule.describe()} ({type(exception).__name__})"
        if rule.action == "fail":
            return RetryDecision.fail(reason=reason)
        delay = rule.retry_delay
        retry_after = next((s for s in map(retry_after_s, error_chain(exception)) if s is not None), None)
        if retry_after is not None:
            delay = timedelta(seconds=retry_after)
        if delay is not None and self.max_retry_delay is not None:
            delay = min(delay, self.max_retry_delay)
        return RetryDecision.retry(delay=delay, reason=reason)

    def serialize(self) -> dict[str, Any]:
        # Airflow stores only ``has_retry_policy``; workers re-parse the DAG and get the live object back.
        return {"__type": "tasklens.PresetRetryPolicy", "preset": self.preset_name,
                "rules": [rule.describe() for rule in self.rules]}

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PresetRetryPolicy) and other.preset_name == self.preset_name
                and other.rules == self.rules and other.max_retry_delay == self.max_retry_delay)

    def __hash__(self) -> int:
        return hash((self.preset_name, self.rules))

    def __repr__(self) -> str:
        return f"tasklens.PresetRetryPolicy({self.preset_name!r}, {len(self.rules)} rules)"
