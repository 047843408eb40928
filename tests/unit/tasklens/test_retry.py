"""tasklens.retry: presets on Airflow's retry settings, Airflow's next-retry arithmetic, in-task retries."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
import requests
import structlog.testing
from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, ExceptionRetryPolicy, RetryAction, RetryRule
from airflow.serialization.serialized_objects import DagSerialization
from hypothesis import given, settings
from hypothesis import strategies as st

from tasklens import events, retry
from tasklens.exceptions import ConfigError

END = datetime(2024, 5, 1, 14, 0, tzinfo=timezone.utc)
LOGICAL = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def http_error(status: int, headers: dict[str, str] | None = None) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    return requests.HTTPError(f"{status} error", response=response)


def decide(preset_name: str, error: BaseException):
    return retry.preset(preset_name).retry_policy.evaluate(error, try_number=1, max_tries=4)


# --------------------------------------------------------------------------- presets


def test_preset_expands_to_airflow_operator_kwargs():
    """``{**preset("transient_network")}`` gives Airflow's five retry kwargs with a float backoff and a RetryPolicy."""
    kwargs = {**retry.preset("transient_network")}
    assert set(kwargs) == {"retries", "retry_delay", "retry_exponential_backoff", "max_retry_delay", "retry_policy"}
    assert kwargs["retries"] == 4
    assert kwargs["retry_delay"] == timedelta(seconds=30)
    assert kwargs["retry_exponential_backoff"] == 2.0
    assert kwargs["max_retry_delay"] == timedelta(minutes=10)
    assert isinstance(kwargs["retry_policy"], retry.PresetRetryPolicy)


def test_preset_kwargs_build_a_real_operator_through_default_args():
    """A DAG's ``default_args={**preset}`` reaches every operator as Airflow's own retry settings."""
    with DAG("tl_unit_default_args", schedule=None, default_args={**retry.preset("spark_job")}):
        task = EmptyOperator(task_id="t")
    assert task.retries == 2
    assert task.retry_exponential_backoff == 2.0
    assert task.max_retry_delay == timedelta(minutes=10)
    assert task.retry_policy.preset_name == "spark_job"


def test_apply_sets_every_retry_field_on_an_existing_task():
    """``apply(task, name)`` overwrites the task's retry settings with the preset's."""
    with DAG("tl_unit_apply", schedule=None):
        task = EmptyOperator(task_id="t", retries=9, retry_delay=timedelta(seconds=1))
    assert retry.apply(task, "fail_fast") is task
    assert (task.retries, task.retry_delay, task.retry_policy.preset_name) == (1, timedelta(minutes=1), "fail_fast")


def test_preset_overrides_and_extra_rules():
    """Overrides replace settings and extra rules are checked before the preset's own."""
    custom = retry.preset("transient_network", retries=6, retry_delay=5, fail_on=[ConnectionAbortedError])
    assert (custom.retries, custom.retry_delay) == (6, timedelta(seconds=5))
    assert custom.retry_policy.evaluate(ConnectionAbortedError(), 1, 6).action == RetryAction.FAIL
    assert custom.retry_policy.evaluate(ConnectionRefusedError(), 1, 6).action == RetryAction.RETRY
    assert retry.preset("transient_network") is retry.PRESETS["transient_network"]


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError("refused"),
        TimeoutError("timed out"),
        requests.ConnectionError("dns"),
        requests.Timeout("read timeout"),
        http_error(429),
        http_error(500),
        http_error(503),
    ],
    ids=lambda e: type(e).__name__ + str(getattr(getattr(e, "response", None), "status_code", "")),
)
def test_transient_network_retries_network_errors_and_429_5xx(error):
    """Connection errors, timeouts and HTTP 429/5xx are retried (delay left to Airflow's backoff) with a reason."""
    decision = decide("transient_network", error)
    assert decision.action == RetryAction.RETRY
    assert decision.reason.startswith("transient_network: ")


@pytest.mark.parametrize("error", [http_error(400), http_error(404), ValueError("bad date"), KeyError("id")])
def test_transient_network_fails_client_and_data_errors_at_once(error):
    """HTTP 4xx (but 408/425/429) and data errors fail at once: a retry would repeat the same failure."""
    assert decide("transient_network", error).action == RetryAction.FAIL


def test_unclassified_errors_fall_back_to_the_tasks_retries():
    """An error no rule knows gets Airflow's standard retry decision (RetryAction.DEFAULT)."""
    assert decide("transient_network", RuntimeError("boom")).action == RetryAction.DEFAULT


def test_retry_after_header_sets_the_delay_capped_by_max_retry_delay():
    """A 429's Retry-After becomes the retry delay, never longer than the preset's max_retry_delay."""
    assert decide("transient_network", http_error(429, {"Retry-After": "90"})).retry_delay == timedelta(seconds=90)
    assert decide("transient_network", http_error(429, {"Retry-After": "99999"})).retry_delay == timedelta(minutes=10)


def test_http_hook_status_message_is_classified():
    """HttpHook's ``AirflowException("503:Service Unavailable")`` is retried; ``"404:Not Found"`` is not."""
    from airflow.sdk.exceptions import AirflowException

    assert decide("transient_network", AirflowException("503:Service Unavailable")).action == RetryAction.RETRY
    assert decide("transient_network", AirflowException("404:Not Found")).action == RetryAction.DEFAULT


def test_wrapped_causes_are_classified():
    """A wrapper exception is classified by its cause chain (``raise Wrapper from ConnectionResetError``)."""
    try:
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError as cause:
            raise RuntimeError("task failed") from cause
    except RuntimeError as wrapped:
        assert decide("transient_network", wrapped).action == RetryAction.RETRY


def test_spark_job_retries_executor_loss_and_fails_analysis_errors():
    """spark_job: executor loss is retried; AnalysisException fails at once."""
    from pyspark.errors import AnalysisException

    lost = RuntimeError("Job aborted due to stage failure: ExecutorLostFailure (executor 3 exited)")
    assert decide("spark_job", lost).action == RetryAction.RETRY
    assert decide("spark_job", AnalysisException(message="[UNRESOLVED_COLUMN] `x`")).action == RetryAction.FAIL


def test_fail_fast_fails_data_errors_and_retries_others_once():
    """fail_fast: ValueError fails at once; anything else is left to its single retry."""
    assert retry.PRESETS["fail_fast"].retries == 1
    assert decide("fail_fast", ValueError("schema mismatch")).action == RetryAction.FAIL
    assert decide("fail_fast", RuntimeError("flaky")).action == RetryAction.DEFAULT


# --------------------------------------------------------------------------- bad configuration


def test_unknown_preset_names_the_preset_and_suggests_the_fix():
    """A misspelt preset raises ConfigError naming it, the closest preset and the valid ones."""
    with pytest.raises(ConfigError) as raised:
        retry.preset("transient_netwrok")
    message = str(raised.value)
    assert "'transient_netwrok'" in message
    assert "did you mean 'transient_network'" in message
    assert "fail_fast" in message


def test_unimportable_exception_class_is_a_config_error():
    """A rule naming an exception class that cannot be imported fails at construction, not at 3 am."""
    with pytest.raises(ConfigError, match=r"cannot import exception class 'nosuchlib\.ThrottleError'.*Fix:"):
        retry.preset("transient_network", retry_on=["nosuchlib.ThrottleError"])


@pytest.mark.parametrize("setting", ["retry_delay", "max_retry_delay"])
def test_negative_delay_is_a_config_error(setting):
    """A negative delay raises ConfigError naming the preset, the setting and the fix."""
    with pytest.raises(ConfigError, match=rf"retry preset 'fail_fast': {setting}: negative delay.*Fix:"):
        retry.preset("fail_fast", **{setting: timedelta(seconds=-5)})


def test_backoff_below_one_is_a_config_error():
    """A backoff multiplier between 0 and 1 would shrink delays; it is rejected."""
    with pytest.raises(ConfigError, match="retry_exponential_backoff"):
        retry.preset("spark_job", retry_exponential_backoff=0.5)


def test_validate_task_retries_rejects_negative_settings_and_warns_on_unimportable_airflow_rules(caplog):
    """Negative retry settings are rejected; an Airflow RetryRule naming an unimportable class keeps Airflow's
    meaning (it may exist only on workers) and is logged with the task."""
    with DAG("tl_unit_validate", schedule=None):
        unimportable = EmptyOperator(task_id="unimportable", retry_policy=ExceptionRetryPolicy(
            rules=[RetryRule(exception="nosuchlib.Throttled", action=RetryAction.RETRY)]))
        negative = EmptyOperator(task_id="negative", retry_delay=timedelta(seconds=-1))
        negative_rule = EmptyOperator(task_id="negative_rule", retry_policy=ExceptionRetryPolicy(
            rules=[RetryRule(exception=ConnectionError, retry_delay=timedelta(seconds=-5))]))
    with pytest.raises(ConfigError, match="retry_delay: negative delay"):
        retry.validate_task_retries(negative)
    with pytest.raises(ConfigError, match="negative retry_delay"):
        retry.validate_task_retries(negative_rule)
    retry.validate_task_retries(unimportable)
    assert "tl_unit_validate.unimportable: retry_policy RetryRule names exception class 'nosuchlib.Throttled'" in (
        caplog.text)


# --------------------------------------------------------------------------- next retry time


def _airflow_next_retry(task, try_number: int, end: datetime, logical: datetime | None,
                        override: float | None = None) -> datetime:
    """Airflow's own ``TaskInstance.next_retry_datetime()`` for the serialized form of ``task``."""
    serialized = DagSerialization.from_dict(DagSerialization.to_dict(task.dag)).get_task(task.task_id)
    ti = TaskInstance(task=serialized, dag_version_id=uuid.uuid4(), run_id="r")
    ti.dag_run = DagRun(dag_id=task.dag_id, run_id="r", logical_date=logical, run_type="manual")
    ti.try_number = try_number
    ti.end_date = end
    ti.retry_delay_override = override
    return ti.next_retry_datetime()


@settings(max_examples=60, deadline=None)
@given(
    delay_s=st.integers(min_value=0, max_value=3600),
    backoff=st.sampled_from([0.0, 1.0, 1.5, 2.0, 3.0, 10.0]),
    max_delay_s=st.one_of(st.none(), st.integers(min_value=1, max_value=7200)),
    try_number=st.integers(min_value=1, max_value=12),
    logical=st.one_of(st.none(), st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                                              timezones=st.just(timezone.utc))),
)
def test_next_retry_at_matches_airflows_next_retry_datetime(delay_s, backoff, max_delay_s, try_number, logical):
    """For any delay, backoff, cap, try number and logical date, tasklens computes Airflow's exact retry time."""
    with DAG("tl_unit_next_retry", schedule=None) as dag:
        task = EmptyOperator(task_id="t", retries=20, retry_delay=timedelta(seconds=delay_s),
                             retry_exponential_backoff=backoff,
                             max_retry_delay=None if max_delay_s is None else timedelta(seconds=max_delay_s))
    assert dag is task.dag
    expected = _airflow_next_retry(task, try_number, END, logical)
    assert retry.next_retry_at(task, try_number, END, logical_date=logical) == expected


def test_next_retry_at_of_each_preset_matches_airflow():
    """Every built-in preset's retry times (tries 1-4) match Airflow's for the same task."""
    for name in retry.preset_names():
        with DAG(f"tl_unit_{name}", schedule=None):
            task = EmptyOperator(task_id="t", **retry.preset(name))
        for try_number in range(1, 5):
            assert retry.next_retry_at(task, try_number, END, logical_date=LOGICAL) == _airflow_next_retry(
                task, try_number, END, LOGICAL)


def test_next_retry_at_with_a_policy_delay_matches_airflow():
    """A retry policy's delay override (Retry-After) is added to end_date without jitter, as Airflow does."""
    with DAG("tl_unit_override", schedule=None):
        task = EmptyOperator(task_id="t", **retry.preset("transient_network"))
    assert retry.next_retry_at(task, 2, END, logical_date=LOGICAL, delay_override=90) == _airflow_next_retry(
        task, 2, END, LOGICAL, override=90.0)


def _runtime_ti(task, try_number: int = 2, **extra):
    """The fields of a worker RuntimeTaskInstance that retry_schedule reads."""
    context = SimpleNamespace(dag_run=SimpleNamespace(logical_date=LOGICAL))
    return SimpleNamespace(task=task, dag_id=task.dag_id, task_id=task.task_id, run_id="r", try_number=try_number,
                           max_tries=4, end_date=END, _ti_context_from_server=context, state="up_for_retry",
                           map_index=-1, start_date=END - timedelta(seconds=3), **extra)


def test_retry_schedule_gives_the_time_and_the_policy_reason():
    """In the worker, the retry time follows Airflow's math and the reason is the matching preset rule."""
    with DAG("tl_unit_schedule", schedule=None):
        task = EmptyOperator(task_id="t", **retry.preset("transient_network"))
    when, reason = retry.retry_schedule(_runtime_ti(task), ConnectionResetError("reset"))
    assert datetime.fromisoformat(when) == retry.next_retry_at(task, 2, END, logical_date=LOGICAL)
    assert reason == "transient_network: connection error or timeout (ConnectionResetError)"
    when, _ = retry.retry_schedule(_runtime_ti(task), http_error(429, {"Retry-After": "120"}))
    assert datetime.fromisoformat(when) == END + timedelta(seconds=120)


def test_up_for_retry_event_carries_next_retry_at_and_reason():
    """events.from_task_instance fills next_retry_at (ISO UTC) and the policy reason on up_for_retry only."""
    with DAG("tl_unit_event", schedule=None):
        task = EmptyOperator(task_id="t", **retry.preset("transient_network"))
    ti = _runtime_ti(task)
    event = events.from_task_instance("up_for_retry", ti, error=TimeoutError("slow"))
    assert event.next_retry_at == retry.next_retry_at(task, 2, END, logical_date=LOGICAL).isoformat()
    assert event.next_retry_at.endswith("+00:00")
    assert event.reason.startswith("transient_network: connection error or timeout")
    assert events.from_task_instance("failed", ti, error=TimeoutError("slow")).next_retry_at is None


# --------------------------------------------------------------------------- in-task retries


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def test_call_retries_transient_errors_then_returns(monkeypatch):
    """A call failing twice with connection errors is retried with growing jittered waits and returns its value."""
    fake = FakeTime()
    counted = []
    monkeypatch.setattr("tasklens.metrics.incr", lambda name, value=1, **labels: counted.append((name, labels)))
    outcomes = [ConnectionResetError("reset"), http_error(503), "payload"]

    @retry.call(attempts=5, initial_s=1, backoff=2, jitter_s=0.5, sleep=fake.sleep, clock=fake.clock,
                rng=random.Random(7))
    def fetch():
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    with structlog.testing.capture_logs() as logs:
        assert fetch() == "payload"
    assert len(fake.sleeps) == 2
    assert 1 <= fake.sleeps[0] <= 1.5 and 2 <= fake.sleeps[1] <= 2.5
    attempts = [entry for entry in logs if entry["event"] == "retry_attempt"]
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert attempts[0]["exception_type"] == "ConnectionResetError"
    assert attempts[0]["operation"].endswith("fetch")
    assert counted == [("retry_attempts", {"operation": attempts[0]["operation"]})] * 2


def test_call_gives_up_with_the_original_exception():
    """After the last attempt the ORIGINAL exception object is raised (not tenacity's RetryError)."""
    fake = FakeTime()
    errors = [ConnectionRefusedError(f"refused {i}") for i in range(3)]

    @retry.call(attempts=3, sleep=fake.sleep, clock=fake.clock)
    def fetch():
        raise errors[len(fake.sleeps)]

    with structlog.testing.capture_logs() as logs, pytest.raises(ConnectionRefusedError) as raised:
        fetch()
    assert raised.value is errors[2]
    assert len(fake.sleeps) == 2
    assert [e["event"] for e in logs].count("retry_gave_up") == 1


class UnprintableConnectionError(ConnectionError):
    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")


def test_call_retries_an_exception_whose_str_raises():
    """Logging a retried exception whose ``__str__`` raises neither breaks the call nor hides the exception: the
    attempt is logged with a stand-in message, the retry happens, and the last such exception is raised as is."""
    fake = FakeTime()
    errors = [UnprintableConnectionError("down"), UnprintableConnectionError("still down")]

    @retry.call(attempts=2, sleep=fake.sleep, clock=fake.clock)
    def fetch():
        raise errors[len(fake.sleeps)]

    with structlog.testing.capture_logs() as logs, pytest.raises(UnprintableConnectionError) as raised:
        fetch()
    assert raised.value is errors[1] and len(fake.sleeps) == 1
    (attempt,) = [entry for entry in logs if entry["event"] == "retry_attempt"]
    assert attempt["exception_message"] == "UnprintableConnectionError('down')"


def test_call_does_not_retry_what_the_preset_fails_fast():
    """A 404 or ValueError is raised after one attempt: retrying cannot fix it."""
    fake = FakeTime()
    calls = []

    @retry.call(sleep=fake.sleep, clock=fake.clock)
    def fetch():
        calls.append(1)
        raise http_error(404)

    with pytest.raises(requests.HTTPError):
        fetch()
    assert (len(calls), fake.sleeps) == (1, [])


def test_call_stops_at_the_deadline_measured_on_the_injected_clock():
    """``deadline_s`` ends retrying once the injected clock says that much time has passed."""
    fake = FakeTime()

    @retry.call(attempts=100, initial_s=10, backoff=1, jitter_s=0, deadline_s=25, retry_if=[TimeoutError],
                sleep=fake.sleep, clock=fake.clock)
    def fetch():
        raise TimeoutError("slow")

    with pytest.raises(TimeoutError):
        fetch()
    assert fake.sleeps == [10, 10, 10]


def test_call_honours_retry_after_and_caps_waits():
    """A 429's Retry-After lengthens the wait; no wait exceeds max_wait_s plus jitter."""
    fake = FakeTime()
    outcomes = [http_error(429, {"Retry-After": "7"}), http_error(429, {"Retry-After": "500"}), "ok"]

    @retry.call(initial_s=1, max_wait_s=30, jitter_s=0, sleep=fake.sleep, clock=fake.clock)
    def fetch():
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    assert fetch() == "ok"
    assert fake.sleeps == [7, 30]


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"initial_s": -1}, {"backoff": 0.5}, {"retry_if": "nosuch"},
                                    {"retry_if": ["nosuchlib.Err"]}])
def test_call_rejects_bad_settings(kwargs):
    """Bad in-task retry settings raise ConfigError when the function is decorated."""
    with pytest.raises(ConfigError):
        retry.call(**kwargs)
