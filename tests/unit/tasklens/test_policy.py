"""tasklens.policy: the cluster policy that adopts every task without DAG edits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest
from airflow.exceptions import AirflowClusterPolicyViolation
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, ExceptionRetryPolicy, RetryRule, task

import tasklens
from tasklens import config, metrics, policy, retry
from tasklens.callbacks import FailureCallback
from tasklens.exceptions import ConfigError


@pytest.fixture(autouse=True)
def fresh_config(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))  # no last good rules file from another test
    monkeypatch.delenv("AIRFLOW__TASKLENS__RULES_FILE", raising=False)
    monkeypatch.delenv("AIRFLOW__TASKLENS__DEFAULT_RETRY_PRESET", raising=False)
    config.reset()
    policy._counted.clear()
    yield
    config.reset()


@pytest.fixture
def default_transient(monkeypatch):
    """``[tasklens] default_retry_preset = transient_network`` (opting in; the default is none)."""
    monkeypatch.setenv("AIRFLOW__TASKLENS__DEFAULT_RETRY_PRESET", "transient_network")
    config.reset()


@pytest.fixture
def rules_file(tmp_path, monkeypatch):
    def write(text: str):
        path = tmp_path / "rules.yml"
        path.write_text(textwrap.dedent(text))
        monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(path))
        config.reset()
        return path

    return write


def mine(context):
    """A DAG author's own failure callback."""


def test_appends_failure_callback_and_keeps_existing_ones():
    """The policy keeps the task's own callback and appends tasklens's exactly once, however often it runs."""
    with DAG("tl_policy_callbacks", schedule=None):
        op = EmptyOperator(task_id="t", on_failure_callback=mine)
    policy.task_policy(op)
    policy.task_policy(op)
    assert op.on_failure_callback[0] is mine
    assert [type(cb) for cb in op.on_failure_callback[1:]] == [FailureCallback]


def test_opted_out_dags_are_left_alone():
    """A DAG tagged tasklens:off gets neither the callback nor a retry preset."""
    with DAG("tl_policy_off", schedule=None, tags=["tasklens:off"]):
        op = EmptyOperator(task_id="t")
    policy.task_policy(op)
    assert not op.on_failure_callback
    assert op.retry_policy is None


def test_by_default_no_task_gets_a_preset():
    """Installing tasklens changes no task's retries: default_retry_preset is none, so a task without retry
    settings keeps Airflow's own (and gains only the failure callback)."""
    with DAG("tl_policy_untouched", schedule=None):
        op = EmptyOperator(task_id="t")
        bare = EmptyOperator(task_id="bare")
    policy.task_policy(op)
    assert config.default_retry_preset() is None
    assert (op.retries, op.retry_delay, op.retry_exponential_backoff, op.max_retry_delay, op.retry_policy) == (
        bare.retries, bare.retry_delay, bare.retry_exponential_backoff, bare.max_retry_delay, None)
    assert any(isinstance(cb, FailureCallback) for cb in op.on_failure_callback)


def test_task_without_retry_settings_gets_the_default_preset(default_transient):
    """With default_retry_preset set, a task that sets no retry settings gets the whole preset."""
    with DAG("tl_policy_default", schedule=None):
        op = EmptyOperator(task_id="t")
    policy.task_policy(op)
    expected = retry.preset("transient_network")
    assert (op.retries, op.retry_delay, op.retry_exponential_backoff, op.max_retry_delay) == (
        expected.retries, expected.retry_delay, expected.retry_exponential_backoff, expected.max_retry_delay)
    assert op.retry_policy.preset_name == "transient_network"


@pytest.mark.parametrize("where", ["task", "default_args"])
def test_explicit_retry_timing_is_kept_and_gains_the_retry_policy(where, default_transient):
    """Retries set on the task or in default_args are kept; only the preset's retry_policy is added."""
    own = {"retries": 1, "retry_delay": timedelta(seconds=7)}
    with DAG("tl_policy_explicit", schedule=None, default_args=own if where == "default_args" else {}):
        op = EmptyOperator(task_id="t", **(own if where == "task" else {}))
    assert retry.explicit_fields(op) == {"retries", "retry_delay"}
    policy.task_policy(op)
    assert (op.retries, op.retry_delay, op.retry_exponential_backoff, op.max_retry_delay) == (
        1, timedelta(seconds=7), 0, None)
    assert op.retry_policy.preset_name == "transient_network"


def test_own_retry_policy_is_kept():
    """A task with its own Airflow retry_policy keeps it untouched."""
    own = ExceptionRetryPolicy(rules=[RetryRule(exception=ConnectionError)])
    with DAG("tl_policy_own", schedule=None):
        op = EmptyOperator(task_id="t", retry_policy=own)
    policy.task_policy(op)
    assert op.retry_policy is own


def test_mapped_and_decorated_tasks_are_adopted(default_transient):
    """Mapped operators and @task functions get the callback and the preset too."""
    with DAG("tl_policy_mapped", schedule=None):
        mapped = BashOperator.partial(task_id="mapped").expand(bash_command=["true", "false"])
        mapped_own = BashOperator.partial(task_id="mapped_own", retries=3).expand(bash_command=["true"])

        @task
        def decorated():
            return 1

        deco = decorated().operator
    for op in (mapped, mapped_own, deco):
        policy.task_policy(op)
        assert any(isinstance(cb, FailureCallback) for cb in op.on_failure_callback)
        assert op.retry_policy.preset_name == "transient_network"
    assert mapped.retries == 4
    assert mapped_own.retries == 3


def test_rules_file_selects_presets_by_dag_id_tag_and_operator(rules_file):
    """retry_policies entries match DAG id globs, DAG tags and operator classes (bases too); first match wins."""
    rules_file("""
        retry_policies:
          lakehouse:
            preset: spark_job
            match: {dag_id: ["lakehouse_*"]}
          validation:
            preset: fail_fast
            match: {tags: [quality]}
          python:
            preset: fail_fast
            match: {operator: [PythonOperator]}
    """)
    with DAG("lakehouse_feeder", schedule=None, tags=["quality"]):
        spark = EmptyOperator(task_id="t")
    with DAG("orders", schedule=None, tags=["quality"]):
        quality = EmptyOperator(task_id="t")
    with DAG("other", schedule=None):
        python = PythonOperator(task_id="p", python_callable=print)
        plain = EmptyOperator(task_id="e")
    assert policy.retry_preset_for(spark)[1] == "spark_job"
    for op in (spark, quality, python, plain):
        policy.task_policy(op)
    assert [op.retry_policy.preset_name for op in (spark, quality, python)] == ["spark_job", "fail_fast", "fail_fast"]
    assert plain.retry_policy is None  # no entry matches and default_retry_preset is none


def test_default_preset_none_leaves_unmatched_tasks_retries_alone(monkeypatch):
    """``[tasklens] default_retry_preset = none`` adds callbacks but no retry settings."""
    monkeypatch.setenv("AIRFLOW__TASKLENS__DEFAULT_RETRY_PRESET", "none")
    config.reset()
    with DAG("tl_policy_none", schedule=None):
        op = EmptyOperator(task_id="t")
    policy.task_policy(op)
    assert op.retry_policy is None
    assert any(isinstance(cb, FailureCallback) for cb in op.on_failure_callback)


def test_unknown_preset_in_rules_file_is_skipped_and_reported(rules_file, caplog, monkeypatch):
    """An unknown preset in retry_policies is no DAG import error: the entry is skipped (the next matching entry
    applies), a warning names the entry, the name and the fix, and tasklens.config_errors counts it once."""
    counted: list[str] = []
    monkeypatch.setattr(metrics, "count_config_error", counted.append)
    path = rules_file("""
        retry_policies:
          spark_jobs:
            preset: spark
            match: {tags: [spark]}
          everything:
            preset: fail_fast
    """)
    with DAG("tl_policy_bad_preset", schedule=None, tags=["spark"]):
        op = EmptyOperator(task_id="t")
        other = EmptyOperator(task_id="u")
    policy.task_policy(op)
    policy.task_policy(other)
    assert op.retry_policy.preset_name == "fail_fast"
    (problem,) = config.problems()
    assert (problem.kind, problem.source, problem.key) == ("unknown_preset", str(path),
                                                           "retry_policies.spark_jobs.preset")
    assert "unknown retry preset 'spark'" in problem.message and "did you mean 'spark_job'?" in problem.message
    assert caplog.text.count("unknown retry preset 'spark'") == 1
    assert counted == ["unknown_preset"]


def test_unknown_default_preset_is_skipped_and_reported(monkeypatch):
    """A misspelt default_retry_preset leaves tasks as if it were none and is recorded, not raised."""
    monkeypatch.setenv("AIRFLOW__TASKLENS__DEFAULT_RETRY_PRESET", "transient")
    config.reset()
    with DAG("tl_policy_bad_default", schedule=None):
        op = EmptyOperator(task_id="t")
    policy.task_policy(op)
    assert op.retry_policy is None
    assert [(p.key, p.kind) for p in config.problems()] == [("default_retry_preset", "unknown_preset")]
    assert "did you mean 'transient_network'" in config.problems()[0].fix


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("routes:\n  - name: r\n    channels: [slak]\n", "invalid_rules"),
        ("routes:\n  - name: r\n    channels: [slack]\n    match: {regex: '('}\n", "invalid_rules"),
        ("routes: [unclosed\n", "invalid_yaml"),
        (None, "missing_file"),
    ],
    ids=["unknown-channel", "bad-regex", "invalid-yaml", "missing-file"],
)
def test_bad_rules_file_never_raises_from_the_policy(tmp_path, monkeypatch, text, kind):
    """A bad rules file (unknown channel, bad regex, invalid YAML, missing) is no policy violation: the task is
    adopted with the built-in rules and the problem is recorded with its kind."""
    path = tmp_path / "rules.yml"
    if text is not None:
        path.write_text(text)
    monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(path))
    config.reset()
    with DAG("tl_policy_bad_rules", schedule=None):
        op = EmptyOperator(task_id="t")
    policy.task_policy(op)
    assert any(isinstance(cb, FailureCallback) for cb in op.on_failure_callback)
    assert [p.kind for p in config.problems()] == [kind]


def test_negative_delay_is_a_policy_violation():
    """A negative retry_delay (which Airflow accepts) fails the DAG with the setting and the fix."""
    with DAG("tl_policy_bad_delay", schedule=None):
        negative = EmptyOperator(task_id="n", retries=2, retry_delay=timedelta(seconds=-30))
    pattern = r"tl_policy_bad_delay\.n: .*retry_delay: negative delay.*Fix:"
    with pytest.raises(AirflowClusterPolicyViolation, match=pattern):
        policy.task_policy(negative)


def test_unexpected_errors_never_escape(monkeypatch, caplog):
    """Anything but bad configuration is logged and swallowed: DAG parsing must go on."""
    def broken(task):
        raise RuntimeError("bug")

    monkeypatch.setattr(policy, "apply_retry_preset", broken)
    with DAG("tl_policy_bug", schedule=None):
        op = EmptyOperator(task_id="t")
    policy.task_policy(op)
    assert "tasklens task_policy failed" in caplog.text


def test_defaults_gives_callback_and_preset_kwargs():
    """``tasklens.defaults(preset=...)`` is the callback plus the preset's kwargs, ready for default_args."""
    values = tasklens.defaults(preset="fail_fast", retries=0)
    assert isinstance(values["on_failure_callback"][0], FailureCallback)
    assert values["retries"] == 0
    assert values["retry_policy"].preset_name == "fail_fast"
    with DAG("tl_policy_defaults", schedule=None, default_args=values):
        op = EmptyOperator(task_id="t")
    policy.task_policy(op)
    assert len(op.on_failure_callback) == 1
    assert (op.retries, op.retry_policy.preset_name) == (0, "fail_fast")
    assert set(tasklens.defaults(preset=None)) == {"on_failure_callback"}
    with pytest.raises(ConfigError, match="unknown retry preset"):
        tasklens.defaults(preset="nope")


def test_policy_is_registered_through_the_entry_point():
    """Airflow's policy plugin manager calls tasklens's task_policy (pip mode, no airflow_local_settings.py)."""
    from airflow import settings

    with DAG("tl_policy_entry_point", schedule=None):
        op = EmptyOperator(task_id="t")
    settings.task_policy(op)
    assert any(isinstance(cb, FailureCallback) for cb in op.on_failure_callback)
    assert op.retry_policy is None


def test_policy_registers_when_tasklens_is_imported_before_airflow():
    """A process that imports tasklens's CLI (which imports the policy) before Airflow still gets the policy: Airflow's
    start loads the entry point, and a half-imported policy module would register with no hooks."""
    code = textwrap.dedent("""
        from tasklens.__main__ import main  # imports tasklens.policy first, then Airflow
        from airflow import settings
        from airflow.providers.standard.operators.empty import EmptyOperator
        from airflow.sdk import DAG
        with DAG("tl_policy_import_order", schedule=None):
            op = EmptyOperator(task_id="t")
        settings.task_policy(op)
        print(type(op.on_failure_callback[0]).__name__ if op.on_failure_callback else "none")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True)
    assert done.stdout.strip().splitlines()[-1] == "FailureCallback", done.stdout + done.stderr


def test_bad_configuration_becomes_a_dagbag_import_error(tmp_path):
    """Through a real DagBag, a bad retry setting is an import error of the DAG file that names it and the fix."""
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "tl_bad_retry.py").write_text(textwrap.dedent("""
        from datetime import timedelta
        from airflow.sdk import DAG
        from airflow.providers.standard.operators.empty import EmptyOperator
        with DAG("tl_bad_retry", schedule=None):
            EmptyOperator(task_id="t", retries=2, retry_delay=timedelta(seconds=-1))
    """))
    (tmp_path / "tl_bad_preset.py").write_text(textwrap.dedent("""
        from airflow.sdk import DAG
        from airflow.providers.standard.operators.empty import EmptyOperator
        import tasklens
        with DAG("tl_bad_preset", schedule=None, default_args={**tasklens.retry.preset("transient_netwrk")}):
            EmptyOperator(task_id="t")
    """))
    (tmp_path / "tl_bad_rule.py").write_text(textwrap.dedent("""
        from airflow.sdk import DAG
        from airflow.providers.standard.operators.empty import EmptyOperator
        import tasklens
        with DAG("tl_bad_rule", schedule=None,
                 default_args={**tasklens.retry.preset("transient_network", retry_on=["nosuchlib.Throttled"])}):
            EmptyOperator(task_id="t")
    """))
    bag = DagBag(dag_folder=str(tmp_path))
    assert bag.dags == {}
    errors = {k.rsplit("/", 1)[-1]: v for k, v in bag.import_errors.items()}
    assert errors["tl_bad_retry.py"].startswith("AirflowClusterPolicyViolation: tasklens retry configuration")
    assert "retry_delay: negative delay" in errors["tl_bad_retry.py"]
    assert "unknown retry preset 'transient_netwrk'" in errors["tl_bad_preset.py"]
    assert "did you mean 'transient_network'" in errors["tl_bad_preset.py"]
    assert "cannot import exception class 'nosuchlib.Throttled'" in errors["tl_bad_rule.py"]
    assert "Fix: give the full dotted path" in errors["tl_bad_rule.py"]
