"""What differs between the Airflow versions tasklens supports (3.1, 3.2 and 3.3), in one place.

- ``retry_policy`` (per-exception retry decisions evaluated in the worker) exists from Airflow 3.3. Before it,
  a retry preset sets ``retries``, ``retry_delay``, backoff and ``max_retry_delay`` only, and says so once per
  process with one info line; ``tasklens.retry.call`` (in-task retries) works on every version.
- ``retry_exponential_backoff`` is a float multiplier from 3.2 and a bool in 3.1 (True doubles the delay each try).
- ``AirflowFailException`` and ``AirflowSkipException`` are in ``airflow.sdk.exceptions`` from 3.2, in
  ``airflow.exceptions`` in 3.1.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow import __version__ as AIRFLOW_VERSION_STRING

log = logging.getLogger(__name__)

AIRFLOW_VERSION: tuple[int, int] = tuple(  # type: ignore[assignment]
    int(part) for part in AIRFLOW_VERSION_STRING.split(".")[:2]
)
#: ``retry_exponential_backoff`` is a multiplier (3.2+), not a bool (3.1).
BACKOFF_IS_MULTIPLIER = AIRFLOW_VERSION >= (3, 2)

RETRY_POLICY_SUPPORTED = importlib.util.find_spec("airflow.sdk.definitions.retry_policy") is not None

if TYPE_CHECKING or RETRY_POLICY_SUPPORTED:
    from airflow.sdk.definitions.retry_policy import RetryAction, RetryDecision, RetryPolicy
else:  # Airflow < 3.3: stand-ins with the same shape, so presets still evaluate their rules in-task

    class RetryAction(enum.Enum):
        """What a retry rule decides (Airflow 3.3's ``RetryAction``)."""

        RETRY = "retry"
        FAIL = "fail"
        DEFAULT = "default"

    @dataclasses.dataclass(frozen=True)
    class RetryDecision:
        """A rule's decision (Airflow 3.3's ``RetryDecision``)."""

        action: RetryAction = RetryAction.DEFAULT
        retry_delay: timedelta | None = None
        reason: str | None = None

        @classmethod
        def fail(cls, reason: str | None = None) -> RetryDecision:
            return cls(action=RetryAction.FAIL, reason=reason)

        @classmethod
        def retry(cls, delay: timedelta | None = None, reason: str | None = None) -> RetryDecision:
            return cls(action=RetryAction.RETRY, retry_delay=delay, reason=reason)

        @classmethod
        def default(cls) -> RetryDecision:
            return cls()

    class RetryPolicy:
        """Base of a retry policy (Airflow 3.3's ``RetryPolicy``); Airflow < 3.3 never calls it."""

        def evaluate(self, exception: BaseException, try_number: int, max_tries: int,
                     context: Any = None) -> RetryDecision:
            raise NotImplementedError

        def serialize(self) -> dict[str, Any]:
            raise NotImplementedError


try:  # the Task SDK's own exceptions (3.2+); Airflow 3.1 has them in airflow.exceptions only
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
except ImportError:  # pragma: no cover - Airflow 3.1 (make test-compat)
    from airflow.exceptions import AirflowFailException, AirflowSkipException  # type: ignore[no-redef,attr-defined,unused-ignore]

__all__ = [
    "AIRFLOW_VERSION", "BACKOFF_IS_MULTIPLIER", "RETRY_POLICY_SUPPORTED", "AirflowFailException",
    "AirflowSkipException", "RetryAction", "RetryDecision", "RetryPolicy", "note_retry_policy_off", "operator_backoff",
]

_noted: set[str] = set()


def note_retry_policy_off() -> None:
    """On Airflow < 3.3, say once per process that retry presets set no ``retry_policy`` there."""
    if RETRY_POLICY_SUPPORTED or "retry_policy" in _noted:
        return
    _noted.add("retry_policy")
    log.info("tasklens: Airflow %s has no retry_policy (3.3+): retry presets set retries, delays and backoff only; "
             "their per-exception rules (fail fast, Retry-After) are off", AIRFLOW_VERSION_STRING)


def operator_backoff(multiplier: float) -> float | bool:
    """``retry_exponential_backoff`` as this Airflow's operators take it: the multiplier, or (3.1) whether to grow."""
    return multiplier if BACKOFF_IS_MULTIPLIER else multiplier > 1
