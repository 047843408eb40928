"""One cached accessor per ``[tasklens]`` configuration key.

Values come from Airflow's configuration (``airflow.cfg`` section ``[tasklens]`` or
``AIRFLOW__TASKLENS__<KEY>`` environment variables). Every accessor is cached; tests call
:func:`reset` after changing the environment.
"""

from __future__ import annotations

import functools
import os
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from tasklens.exceptions import ConfigError

__all__ = [
    "airflow_home",
    "base_url",
    "default_retry_preset",
    "delivery_budget_s",
    "delivery_max_age_s",
    "dispatch_interval_s",
    "dispatcher_enabled",
    "enabled",
    "events_backup_count",
    "events_max_bytes",
    "events_path",
    "http_timeout_s",
    "reconcile_enabled",
    "reconcile_grace_s",
    "reconcile_interval_s",
    "reset",
    "rules_file",
    "ruleset",
    "slack_conn_id",
    "smtp_conn_id",
    "spark_conf",
    "spark_conn_id",
    "spark_master",
    "spark_shuffle_partitions",
    "spark_ui_port",
    "statsd_settings",
    "store_url",
    "templates_dir",
]

SECTION = "tasklens"
_F = TypeVar("_F", bound=Callable[..., Any])
_cached: list[Any] = []


def _conf() -> Any:
    # The task SDK's parser works in worker-only installs; core's is the same file elsewhere.
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # pragma: no cover - core-only environments
        from airflow.configuration import conf
    return conf


def _get(key: str, default: str | None = None, section: str = SECTION) -> str | None:
    value = _conf().get(section, key, fallback=None)
    if value is None or value == "":
        return default
    return str(value)


def _cache(func: _F) -> _F:
    cached = functools.cache(func)
    _cached.append(cached)
    return cached  # type: ignore[return-value]


def reset() -> None:
    """Forget every cached value (after changing configuration in tests)."""
    for func in _cached:
        func.cache_clear()


def _as_float(key: str, default: float, *, minimum: float = 0.0) -> float:
    raw = _get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(
            "[tasklens]", key, f"{raw!r} is not a number", f"set {key} to a number such as {default}"
        ) from None
    if value < minimum:
        raise ConfigError("[tasklens]", key, f"{value} is below {minimum}", f"set {key} to at least {minimum}")
    return value


def _as_bool(key: str, default: bool) -> bool:
    raw = _get(key)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError("[tasklens]", key, f"{raw!r} is not a boolean", f"set {key} to true or false")


@_cache
def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")


@_cache
def enabled() -> bool:
    """Master switch: ``false`` turns every tasklens hook into a no-op."""
    return _as_bool("enabled", True)


@_cache
def store_url() -> str:
    return _get("store_url") or f"sqlite:///{airflow_home() / 'tasklens.db'}"


@_cache
def events_path() -> Path | None:
    """JSON Lines event stream; an explicitly empty value turns it off."""
    raw = _conf().get(SECTION, "events_path", fallback=None)
    if raw is None:
        return airflow_home() / "logs" / "tasklens" / "events.jsonl"
    return Path(raw) if raw.strip() else None


@_cache
def events_max_bytes() -> int:
    return int(_as_float("events_max_bytes", 50 * 1024 * 1024, minimum=1024))


@_cache
def events_backup_count() -> int:
    return int(_as_float("events_backup_count", 5, minimum=0))


@_cache
def rules_file() -> Path | None:
    raw = _get("rules_file")
    return Path(raw) if raw else None


@_cache
def templates_dir() -> Path | None:
    """Directory whose Jinja templates override the built-in message templates."""
    raw = _get("templates_dir")
    return Path(raw) if raw else None


@_cache
def slack_conn_id() -> str:
    return _get("slack_conn_id", "tasklens_slack") or "tasklens_slack"


@_cache
def smtp_conn_id() -> str:
    return _get("smtp_conn_id", "tasklens_smtp") or "tasklens_smtp"


@_cache
def base_url() -> str:
    return (_get("base_url") or _get("base_url", section="api") or "http://localhost:8080").rstrip("/")


@_cache
def http_timeout_s() -> float:
    """Timeout of every network call a channel makes."""
    return _as_float("http_timeout_s", 10.0, minimum=0.1)


@_cache
def delivery_budget_s() -> float:
    """How long a task process may spend on an inline delivery attempt before leaving it to the dispatcher."""
    return _as_float("delivery_budget_ms", 0.0) / 1000.0


@_cache
def dispatcher_enabled() -> bool:
    """Run the outbox dispatcher inside the api-server (plugin app lifespan)."""
    return _as_bool("dispatcher_enabled", True)


@_cache
def delivery_max_age_s() -> float:
    """How long the dispatcher retries a failed delivery before it goes to the fallback channels."""
    return _as_float("delivery_max_age_s", 3600.0, minimum=1.0)


@_cache
def retention_days() -> float:
    """Stored events, sent deliveries and resolved alerts older than this are deleted (0 keeps everything)."""
    return _as_float("retention_days", 30.0)


@_cache
def dispatch_interval_s() -> float:
    return _as_float("dispatch_interval_s", 1.0, minimum=0.05)


@_cache
def reconcile_interval_s() -> float:
    return _as_float("reconcile_interval_s", 5.0, minimum=0.5)


@_cache
def reconcile_grace_s() -> float:
    """How long after an attempt ended the reconciler waits before judging it from its task log (an up_for_retry
    attempt with no evidence of a death also waits Airflow's ``[core] task_success_overtime`` + 10 s)."""
    return _as_float("reconcile_grace_s", 2.0, minimum=0.0)


@_cache
def reconcile_enabled() -> bool:
    """Look for killed task attempts from the api-server (needs the metadata DB)."""
    return _as_bool("reconcile_enabled", True)


@_cache
def spark_master() -> str:
    return _get("spark_master", "local[*]") or "local[*]"


class StatsdSettings(NamedTuple):
    """Airflow's own ``[metrics]`` StatsD settings, which tasklens reuses."""

    on: bool
    host: str
    port: int
    prefix: str
    ipv6: bool


@_cache
def statsd_settings() -> StatsdSettings:
    """``[metrics] statsd_on/statsd_host/statsd_port/statsd_prefix/statsd_ipv6`` (Airflow's section, not ours)."""
    conf = _conf()
    raw_port = conf.get("metrics", "statsd_port", fallback="8125") or "8125"
    try:
        port = int(raw_port)
    except ValueError:
        raise ConfigError(
            "[metrics]", "statsd_port", f"{raw_port!r} is not a port number", "set statsd_port to e.g. 8125"
        ) from None
    return StatsdSettings(
        on=conf.getboolean("metrics", "statsd_on", fallback=False),
        host=conf.get("metrics", "statsd_host", fallback="localhost") or "localhost",
        port=port,
        prefix=conf.get("metrics", "statsd_prefix", fallback="airflow") or "",
        ipv6=conf.getboolean("metrics", "statsd_ipv6", fallback=False),
    )


@_cache
def spark_ui_port() -> int | None:
    """Port of the Spark UI for local sessions; empty (default) keeps the UI off."""
    port = int(_as_float("spark_ui_port", 0, minimum=0))
    return port or None


@_cache
def spark_shuffle_partitions() -> int:
    """``spark.sql.shuffle.partitions`` for local sessions (the Spark default of 200 is slow on small data)."""
    return int(_as_float("spark_shuffle_partitions", 4, minimum=1))


@_cache
def spark_conf() -> dict[str, str]:
    """Extra Spark configuration as a JSON object, e.g. ``{"spark.driver.memory": "2g"}``."""
    import json

    raw = _get("spark_conf")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError(
            "[tasklens]", "spark_conf", f"{raw!r} is not a JSON object", 'use e.g. {"spark.driver.memory": "2g"}'
        )
    return {str(k): str(v) for k, v in value.items()}


@_cache
def spark_conn_id() -> str | None:
    """Airflow connection (Spark type) giving the master.

    Its extra ``{"tasklens-submit": true}`` selects spark-submit."""
    return _get("spark_conn_id")


if typing.TYPE_CHECKING:
    from tasklens.ruleset import Ruleset


@_cache
def ruleset() -> Ruleset:
    """The validated rules file (``rules_file``), or the built-in rules when none is set.

    Raises :class:`~tasklens.exceptions.ConfigError` naming the file, the key and the fix.
    """
    from tasklens.ruleset import load_ruleset

    return load_ruleset(rules_file())


@_cache
def default_retry_preset() -> str | None:
    """Retry preset the cluster policy gives tasks no ``retry_policies`` entry matches; ``none`` = leave them alone."""
    raw = (_get("default_retry_preset", "transient_network") or "transient_network").strip()
    return None if raw.lower() in {"none", "off", "false"} else raw
