"""In-task retries: :func:`call` retries one call (an API request) with tenacity, logging and counting each
attempt and re-raising the original exception when it gives up."""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import structlog
import tenacity
from airflow.sdk.definitions.retry_policy import RetryAction

from tasklens import metrics
from tasklens.exceptions import ConfigError
from tasklens.logs import get_logger
from tasklens.retry.presets import Preset, preset
from tasklens.retry.rules import resolve_exceptions, retry_after_s
from tasklens.text import bounded

__all__ = ["call"]

log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])


def _emit_attempt(event: str, name: str, **fields: Any) -> None:
    """One structured log line and one ``retry_attempts`` count per attempt. Never raises."""
    try:
        try:
            logger: Any = get_logger("tasklens.retry")
        except Exception:
            logger = structlog.get_logger("tasklens.retry")
        level = "error" if event == "retry_gave_up" else "warning"
        getattr(logger, level)(event, operation=name, **fields)
    except Exception:
        log.warning("tasklens could not log a retry attempt of %s", name, exc_info=True)
    if event != "retry_attempt":
        return
    try:
        metrics.incr("retry_attempts", operation=name)
    except Exception:
        log.debug("tasklens could not count a retry attempt of %s", name, exc_info=True)


class _ExponentialJitterWait:
    """``min(cap, initial * base ** (n - 1)) + uniform(0, jitter)``; a longer ``Retry-After`` wins.

    Not tenacity's ``wait_exponential_jitter``: that one draws from the global ``random`` (``call``'s ``rng`` makes
    waits reproducible in tests), caps the sum (here the jitter comes on top of ``max_wait_s``, as a test pins) and
    knows no ``Retry-After``.
    """

    def __init__(self, initial: float, cap: float, base: float, jitter: float, rng: random.Random) -> None:
        self.initial, self.cap, self.base, self.jitter, self.rng = initial, cap, base, jitter, rng

    def __call__(self, state: tenacity.RetryCallState) -> float:
        try:
            backoff = self.initial * self.base ** (state.attempt_number - 1)
        except OverflowError:
            backoff = self.cap
        wait = min(self.cap, backoff) + self.rng.uniform(0, self.jitter)
        error = state.outcome.exception() if state.outcome is not None else None
        retry_after = retry_after_s(error) if error is not None else None
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.cap))
        return min(wait, self.cap + self.jitter)


def call(
    func: _F | None = None,
    *,
    attempts: int = 5,
    retry_if: Iterable[type[BaseException] | str] | str | Preset = "transient_network",
    initial_s: float = 1.0,
    max_wait_s: float = 60.0,
    backoff: float = 2.0,
    jitter_s: float = 1.0,
    deadline_s: float | None = None,
    name: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> Any:
    """Retry a call inside a task with exponential backoff and jitter (tenacity).

    ``retry_if`` is a preset (name or object: what the preset would retry is retried here,
    everything else fails at once) or exception classes / dotted paths. Each failed attempt
    is logged as a ``retry_attempt`` event and counted (``tasklens.custom.retry_attempts``);
    giving up logs ``retry_gave_up`` and raises the ORIGINAL exception. ``deadline_s`` stops
    retrying once that much time has passed since the first attempt. ``sleep``, ``clock`` and
    ``rng`` are injectable so tests never sleep::

        @tasklens.retry.call(attempts=4)
        def fetch(url):
            return requests.get(url, timeout=10).json()
    """

    where = "tasklens.retry.call"
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ConfigError(where, "attempts", f"{attempts!r} attempts", "use an integer >= 1")
    for key, value in (("initial_s", initial_s), ("max_wait_s", max_wait_s), ("jitter_s", jitter_s),
                       ("deadline_s", deadline_s or 0)):
        if value < 0:
            raise ConfigError(where, key, f"negative delay {value}", f"use {key} >= 0")
    if backoff < 1:
        raise ConfigError(where, "backoff", f"multiplier {backoff} below 1", "use backoff >= 1, e.g. 2.0")
    retryable = _retry_predicate(retry_if)
    wait = _ExponentialJitterWait(initial_s, max_wait_s, backoff, jitter_s, rng or random.Random())

    def decorate(target: _F) -> _F:
        label = name or getattr(target, "__qualname__", None) or repr(target)

        def error_fields(state: tenacity.RetryCallState) -> dict[str, Any]:
            error = state.outcome.exception() if state.outcome is not None else None
            return {"attempt": state.attempt_number, "max_attempts": attempts,
                    "exception_type": type(error).__name__, "exception_message": bounded(error, 500)}

        def before_sleep(state: tenacity.RetryCallState) -> None:
            upcoming = getattr(state, "upcoming_sleep", None)
            if upcoming is None and state.next_action is not None:
                upcoming = state.next_action.sleep
            _emit_attempt("retry_attempt", label, wait_s=round(float(upcoming or 0), 3), **error_fields(state))

        def gave_up(state: tenacity.RetryCallState) -> Any:
            _emit_attempt("retry_gave_up", label, **error_fields(state))
            assert state.outcome is not None  # tenacity calls this only after an attempt
            return state.outcome.result()  # re-raises the original exception

        @functools.wraps(target)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = clock()

            def stop(state: tenacity.RetryCallState) -> bool:
                if state.attempt_number >= attempts:
                    return True
                return deadline_s is not None and clock() - started >= deadline_s

            retrying = tenacity.Retrying(
                stop=stop,
                wait=wait,
                retry=tenacity.retry_if_exception(retryable),
                sleep=sleep,
                before_sleep=before_sleep,
                retry_error_callback=gave_up,
                reraise=True,
            )
            return retrying(target, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


def _retry_predicate(retry_if: Iterable[type[BaseException] | str] | str | Preset) -> Callable[[BaseException], bool]:
    """A preset name or object (retry what it retries) or exception classes / dotted paths."""
    if isinstance(retry_if, Preset) or (isinstance(retry_if, str) and "." not in retry_if):
        policy = preset(retry_if).retry_policy
        return lambda error: policy.evaluate(error, 0, 0).action == RetryAction.RETRY
    specs = (retry_if,) if isinstance(retry_if, (str, type)) else tuple(retry_if)
    classes = resolve_exceptions(specs, False, f"call(retry_if={specs!r})")
    return lambda error: isinstance(error, classes)
