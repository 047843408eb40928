"""Configuration errors, found once and reported loudly, from the api-server.

Task processes, the dag-processor and the scheduler never fail on bad tasklens configuration: they fall back
(:func:`tasklens.config.ruleset`, :func:`tasklens.policy.retry_preset_for`), log a warning and count it. The
api-server runs :func:`check` every ``[tasklens] config_check_interval_s``; it

* finds every current problem (:func:`find_problems`, also what ``tasklens check-config`` prints);
* counts each one in ``tasklens.config_errors{kind=...}`` (once per check while it lasts);
* raises exactly one alert per distinct error through the normal alert path: the process remembers what it
  alerted, and the store's per-attempt dedup (one fixed attempt identity per error) keeps restarts and
  several api-servers from adding a second one;
* keeps the result for ``/tasklens/health`` and the Alerts page banner (:func:`current_problems`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from tasklens import config, metrics, pipeline, policy
from tasklens.background import BackgroundLoop
from tasklens.config import ConfigProblem
from tasklens.events import TaskEvent
from tasklens.exceptions import ConfigError

__all__ = [
    "ALERT_DAG_ID",
    "SETTINGS",
    "check",
    "current_problems",
    "find_problems",
    "start_background_checker",
    "stop_background_checker",
]

log = logging.getLogger(__name__)

#: The ``dag_id``/``task_id`` configuration alerts carry (they belong to no DAG).
ALERT_DAG_ID = "tasklens"
ALERT_TASK_ID = "config"
#: ``[tasklens]`` accessors whose value is checked (a missing one is skipped: settings come and go).
SETTINGS: tuple[str, ...] = (
    "enabled", "dispatcher_enabled", "reconcile_enabled", "events_max_bytes", "events_backup_count",
    "http_timeout_s", "delivery_max_age_s", "retention_days", "dispatch_interval_s", "reconcile_interval_s",
    "reconcile_grace_s", "config_check_interval_s", "statsd_settings", "spark_conf", "spark_ui_port",
    "spark_shuffle_partitions",
)

_lock = threading.Lock()
_current: tuple[ConfigProblem, ...] | None = None
_alerted: set[str] = set()
_loop: BackgroundLoop | None = None


def _setting_problems() -> list[ConfigProblem]:
    found = []
    for name in SETTINGS:
        accessor = getattr(config, name, None)
        if accessor is None:
            continue
        try:
            accessor()
        except ConfigError as error:
            found.append(ConfigProblem.from_error(error, "the setting's default", kind="invalid_setting"))
    return found


def find_problems() -> list[ConfigProblem]:
    """Every configuration error now: the rules file (re-read when it changed), the retry presets it and
    ``default_retry_preset`` name, and each ``[tasklens]`` setting. Never raises for bad configuration."""
    # policy imports Airflow's policy machinery: only the processes that check need it.

    ruleset = config.ruleset()
    found = [problem for problem in (config.rules_problem(),) if problem is not None]
    found += [problem for _, problem in policy.retry_preset_problems(ruleset)]
    found += _setting_problems()
    return found


def _alert(problem: ConfigProblem) -> bool:
    """Raise the one alert of ``problem``; False when it could not be stored (tried again next check)."""
    # A fixed attempt identity per error: the store records one occurrence of it, however often it is raised.
    subject = TaskEvent(event="custom", dag_id=ALERT_DAG_ID, task_id=ALERT_TASK_ID,
                        run_id=f"config-error-{problem.fingerprint}", source="api-server")
    failures = pipeline.ERROR_COUNTS["alerts.custom"]
    pipeline.raise_custom_alert(
        f"tasklens configuration error: {problem.source}: {problem.key}: {problem.problem}",
        "warning",
        None,
        {"problem": problem.problem, "fix": problem.fix, "meanwhile": problem.fallback, "kind": problem.kind,
         "config_error": problem.fingerprint},
        context=subject,
    )
    return pipeline.ERROR_COUNTS["alerts.custom"] == failures


def check(*, alert: bool = True) -> tuple[ConfigProblem, ...]:
    """Find the configuration errors, count them and (``alert``) raise one alert for each new one. Never raises."""
    global _current
    try:
        found = tuple(find_problems())
    except Exception:
        log.warning("tasklens: the configuration check failed", exc_info=True)
        metrics.count_error("config")
        return current_problems()
    with _lock:
        _current = found
    for problem in found:
        metrics.count_config_error(problem.kind)
        if alert and problem.fingerprint not in _alerted and _alert(problem):
            _alerted.add(problem.fingerprint)
    return found


def current_problems() -> tuple[ConfigProblem, ...]:
    """The problems of the last :func:`check` (checking now when none ran yet, without alerting)."""
    with _lock:
        known = _current
    return known if known is not None else check(alert=False)


def reset() -> None:
    """Forget the last check and what was alerted (tests)."""
    global _current
    with _lock:
        _current = None
        _alerted.clear()


def _background_check() -> None:
    check()


def start_background_checker(interval_s: float | None = None) -> bool:
    """Check every ``interval_s`` (``[tasklens] config_check_interval_s``) in a daemon thread of this process."""
    global _loop
    if _loop is not None and _loop.running:
        return False
    try:
        interval = interval_s if interval_s is not None else config.config_check_interval_s()
    except ConfigError:
        interval = config.DEFAULT_CONFIG_CHECK_INTERVAL_S  # the check itself reports the bad value
    _loop = BackgroundLoop("tasklens-config-check", _background_check, interval_s=interval)
    return _loop.start()


def stop_background_checker(timeout_s: float = 5.0) -> None:
    global _loop
    if _loop is not None:
        _loop.stop(timeout_s)
    _loop = None


def problem_views(problems: Sequence[ConfigProblem]) -> list[dict[str, str]]:
    """The problems as the health route and the Alerts page show them."""
    return [problem.to_dict() for problem in problems]
