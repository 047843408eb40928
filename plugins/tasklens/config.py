"""One cached accessor per ``[tasklens]`` configuration key.

Values come from Airflow's configuration (``airflow.cfg`` section ``[tasklens]`` or
``AIRFLOW__TASKLENS__<KEY>`` environment variables). Every accessor is cached; tests call
:func:`reset` after changing the environment.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from tasklens.exceptions import ConfigError

if TYPE_CHECKING:
    from types import ModuleType

    from tasklens.ruleset import Ruleset

__all__ = [
    "ConfigProblem",
    "airflow_home",
    "base_url",
    "cascade_wait_s",
    "config_check_interval_s",
    "default_retry_preset",
    "delivery_max_age_s",
    "dispatch_interval_s",
    "dispatcher_enabled",
    "enabled",
    "events_backup_count",
    "events_max_bytes",
    "events_path",
    "http_timeout_s",
    "incident_update_interval_s",
    "incident_window_s",
    "last_good_rules_path",
    "otel_metrics_settings",
    "problems",
    "reconcile_enabled",
    "reconcile_grace_s",
    "reconcile_interval_s",
    "record_problem",
    "reset",
    "rules_file",
    "rules_problem",
    "ruleset",
    "slack_conn_id",
    "smtp_conn_id",
    "spark_conf",
    "spark_conn_id",
    "spark_master",
    "spark_shuffle_partitions",
    "spark_ui_port",
    "spool_dir",
    "statsd_settings",
    "store_timeout_s",
    "store_url",
    "templates_dir",
]

log = logging.getLogger(__name__)

SECTION = "tasklens"
_F = TypeVar("_F", bound=Callable[..., Any])
_cached: list[Any] = []


def _conf() -> Any:
    # The task SDK's parser works in worker-only installs; core's is the same file elsewhere. Imported on first
    # use: Airflow's configuration loads only in processes that read a key.
    try:
        from airflow.sdk.configuration import conf  # noqa: PLC0415
    except ImportError:  # pragma: no cover - core-only environments
        from airflow.configuration import conf  # noqa: PLC0415
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
    """Forget every cached value, the loaded rules and the recorded problems (after changing configuration in
    tests)."""
    global _loaded, _last_good
    for func in _cached:
        func.cache_clear()
    with _rules_lock:
        _loaded = _last_good = None
    with _problems_lock:
        _problems.clear()
        _warned.clear()


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
def store_timeout_s() -> float:
    """How long one store call may wait (lock, connection, statement) before the write is spooled instead."""
    return _as_float("store_timeout_s", 3.0, minimum=0.1)


@_cache
def spool_dir() -> Path:
    """Where writes the store could not take in time wait (next to the event stream by default)."""
    raw = _get("spool_dir")
    if raw:
        return Path(raw)
    stream = events_path()
    return (stream.parent if stream is not None else airflow_home() / "logs" / "tasklens") / "spool"


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
def cascade_wait_s() -> float:
    """How long a failure's message may wait for the scheduler to mark its downstream ``upstream_failed`` (the
    message names them); default 15 s."""
    return _as_float("cascade_wait_s", 15.0)


@_cache
def incident_window_s() -> float:
    """Failures this close in time that share a signature or a dependency form one incident; 0 turns incidents
    off (default 900 s)."""
    return _as_float("incident_window_s", 900.0)


@_cache
def incident_update_interval_s() -> float:
    """Least time between two messages of one incident on one channel: later members wait and go out together
    (default 60 s)."""
    return _as_float("incident_update_interval_s", 60.0)


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


DEFAULT_CONFIG_CHECK_INTERVAL_S = 30.0


@_cache
def config_check_interval_s() -> float:
    """How often the api-server re-checks the configuration (rules file, presets, settings) and reports errors."""
    return _as_float("config_check_interval_s", DEFAULT_CONFIG_CHECK_INTERVAL_S, minimum=1.0)


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


class OtelMetricsSettings(NamedTuple):
    """Airflow's own ``[metrics]`` OpenTelemetry settings, which tasklens reuses (``OTEL_*`` variables win)."""

    on: bool
    prefix: str
    host: str | None
    port: int | None
    ssl_active: bool
    interval_ms: float | None
    service: str | None


@_cache
def otel_metrics_settings() -> OtelMetricsSettings:
    """``[metrics] otel_on/otel_prefix/otel_host/otel_port/otel_ssl_active/otel_interval_milliseconds/otel_service``."""
    conf = _conf()
    port, interval = (conf.get("metrics", key, fallback="") for key in ("otel_port", "otel_interval_milliseconds"))
    return OtelMetricsSettings(
        on=conf.getboolean("metrics", "otel_on", fallback=False),
        prefix=conf.get("metrics", "otel_prefix", fallback="airflow") or "airflow",
        host=conf.get("metrics", "otel_host", fallback=None) or None,
        port=int(port) if port and port.isdigit() else None,
        ssl_active=conf.getboolean("metrics", "otel_ssl_active", fallback=False),
        interval_ms=float(interval) if interval and interval.replace(".", "", 1).isdigit() else None,
        service=conf.get("metrics", "otel_service", fallback=None) or None,
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



# --------------------------------------------------------------------------- configuration problems



@functools.cache
def _rules_model() -> ModuleType:
    """The rules model module, imported on first use: with PyYAML it costs every process that merely loads the plugin
    (each task process) ~12 ms, and a task process needs it only for a rules file or an alert."""
    from tasklens import ruleset as model  # noqa: PLC0415 - see the docstring

    model.use_default_conn_ids(lambda: (slack_conn_id(), smtp_conn_id()))
    return model

@dataclasses.dataclass(frozen=True)
class ConfigProblem:
    """A configuration error tasklens found and worked around: what is wrong, where, the fix, and what
    tasklens uses meanwhile (``fallback``). ``kind`` labels the ``tasklens.config_errors`` metric."""

    kind: str
    source: str
    key: str
    problem: str
    fix: str
    fallback: str

    @classmethod
    def from_error(cls, error: ConfigError, fallback: str, *, kind: str | None = None) -> ConfigProblem:
        return cls(kind or error.kind, error.source, error.key, error.problem, error.fix, fallback)

    @property
    def fingerprint(self) -> str:
        """Identity of this error (not of its fallback): one alert per fingerprint."""
        text = "\x1f".join((self.kind, self.source, self.key, self.problem))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    @property
    def message(self) -> str:
        return f"{self.source}: {self.key}: {self.problem}. Fix: {self.fix}. Meanwhile tasklens uses {self.fallback}."

    def to_dict(self) -> dict[str, str]:
        return {**dataclasses.asdict(self), "fingerprint": self.fingerprint, "message": self.message}


_problems: dict[str, ConfigProblem] = {}
_problems_lock = threading.Lock()
_warned: set[str] = set()


def record_problem(slot: str, problem: ConfigProblem | None) -> bool:
    """Set (or with None clear) the problem of one configuration ``slot`` (``rules_file``,
    ``retry_policies.<name>``, ...) in this process; logs a warning the first time a problem is seen.
    Returns True when the problem is new in this process."""
    with _problems_lock:
        if problem is None:
            _problems.pop(slot, None)
            return False
        _problems[slot] = problem
        new = problem.fingerprint not in _warned
        _warned.add(problem.fingerprint)
    if new:
        log.warning("tasklens configuration error: %s", problem.message)
    return new


def problems() -> tuple[ConfigProblem, ...]:
    """The configuration errors this process currently works around."""
    with _problems_lock:
        return tuple(_problems.values())


# --------------------------------------------------------------------------- the rules file


LAST_GOOD_RULES = "last_good_rules.yml"


def last_good_rules_path() -> Path:
    """Where the last rules file that validated is kept, so a freshly started process falls back to it too."""
    return airflow_home() / "tasklens" / LAST_GOOD_RULES


class _LoadedRules(NamedTuple):
    path: Path | None
    signature: tuple[Any, ...]
    ruleset: Ruleset


_rules_lock = threading.Lock()
_loaded: _LoadedRules | None = None
_last_good: Ruleset | None = None  # of this process


def _signature(path: Path | None) -> tuple[Any, ...]:
    """What tells a changed rules file from the one already loaded (one stat call)."""
    if path is None:
        return ("built-in",)
    try:
        st = path.stat()
    except OSError as error:
        return ("error", error.errno)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def ruleset() -> Ruleset:
    """The rules of ``[tasklens] rules_file`` (re-read when the file changes), or the built-in rules when none is
    set. Never raises.

    A file that cannot be used (missing, unreadable, invalid YAML, invalid rules) is a configuration problem
    (:func:`problems`, a warning naming the file, the key and the fix) and tasklens keeps the last good rules:
    this process's, else the copy saved at :func:`last_good_rules_path` when a file last validated, else the
    built-in rules. Running DAGs are never broken by a bad deploy. Strict checking: ``tasklens check-config``.
    """
    global _loaded
    path = rules_file()
    signature = _signature(path)
    current = _loaded
    if current is not None and current.path == path and current.signature == signature:
        return current.ruleset
    with _rules_lock:
        current = _loaded
        if current is None or current.path != path or current.signature != signature:
            current = _LoadedRules(path, signature, _load_rules(path))
            _loaded = current
    return current.ruleset


def _load_rules(path: Path | None) -> Ruleset:
    global _last_good
    if path is None:
        record_problem("rules_file", None)
        return _rules_model().default_ruleset()
    try:
        text = _rules_model().read_rules_file(path)
        loaded = _rules_model().parse_rules_text(text, source=str(path), path=path)
    except ConfigError as error:
        fallback, description = _fallback_rules()
        record_problem("rules_file", ConfigProblem.from_error(error, description))
        return fallback
    except Exception as error:  # a loader bug must not break DAGs either
        log.warning("tasklens: loading the rules file %s failed unexpectedly", path, exc_info=True)
        fallback, description = _fallback_rules()
        record_problem("rules_file", ConfigProblem(
            "invalid_rules", str(path), "rules_file", f"could not be loaded ({type(error).__name__})",
            "run `tasklens check-config` and report the error if the file looks right", description))
        return fallback
    record_problem("rules_file", None)
    _last_good = loaded
    _rules_model().save_last_good(last_good_rules_path(), path, text)
    return loaded


def _fallback_rules() -> tuple[Ruleset, str]:
    if _last_good is not None:
        return _last_good, f"the last good rules this process loaded ({_last_good.source})"
    saved = last_good_rules_path()
    loaded = _rules_model().read_last_good(saved)
    if loaded is not None:
        return loaded, f"the last good rules file ({saved})"
    return _rules_model().default_ruleset(), "the built-in rules"


def rules_problem() -> ConfigProblem | None:
    """The problem of the rules file as last loaded by :func:`ruleset` (None when it is fine)."""
    with _problems_lock:
        return _problems.get("rules_file")


@_cache
def default_retry_preset() -> str | None:
    """Retry preset the cluster policy gives tasks no ``retry_policies`` entry matches; ``none`` (the default)
    leaves them alone, so installing tasklens changes no task's retries."""
    raw = (_get("default_retry_preset", "none") or "none").strip()
    return None if raw.lower() in {"none", "off", "false"} else raw


# The built-in Slack and email channels use the [tasklens] connection ids (the ruleset reads no configuration).
