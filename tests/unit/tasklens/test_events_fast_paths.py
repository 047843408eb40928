"""The event's cheap paths give exactly what Airflow's own code gives: log URLs and secrets masking."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tasklens import events, logs


@pytest.fixture
def fresh_log_urls(monkeypatch):
    """A process that has built no log URL yet."""
    monkeypatch.setattr(events, "_log_urls", {})
    monkeypatch.setattr(events, "_worker_log_base", None)


def _worker_ti_class(reads: list[str], url_of=None):
    """A class named like the task SDK's RuntimeTaskInstance whose ``log_url`` is Airflow's own property, counted."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance as Airflows

    class RuntimeTaskInstance(SimpleNamespace):
        @property
        def log_url(self) -> str:
            reads.append(self.task_id)
            return url_of(self) if url_of else Airflows.log_url.fget(self)  # type: ignore[attr-defined]

    return RuntimeTaskInstance, Airflows


@pytest.mark.parametrize(
    ("task_id", "run_id", "map_index", "try_number"),
    [("load", "manual__2026-01-01T00:00:00+00:00", -1, 1), ("ünï", "a b/c?d", 7, 3), ("t", "r", None, 0)],
)
def test_worker_log_urls_after_the_first_are_built_without_reading_airflows_config(
        fresh_log_urls, task_id, run_id, map_index, try_number):
    """The first worker attempt of a process asks Airflow for its log URL; later attempts (``dags test`` runs every
    task in one process) get the same URL as Airflow's property would build, without its config read."""
    reads: list[str] = []
    worker_ti, airflows = _worker_ti_class(reads)
    first = worker_ti(dag_id="sales.daily", task_id="first", run_id="r0", map_index=-1, try_number=1)
    events.from_task_instance("running", first)
    later = worker_ti(dag_id="sales.daily", task_id=task_id, run_id=run_id, map_index=map_index,
                      try_number=try_number)
    event = events.from_task_instance("running", later)
    assert reads == ["first"]
    assert event.log_url == airflows.log_url.fget(later)  # type: ignore[attr-defined]


def test_a_log_url_of_another_shape_is_always_airflows(fresh_log_urls):
    """When Airflow's URL does not end with the path tasklens expects (another Airflow version), every attempt asks
    Airflow."""
    reads: list[str] = []
    worker_ti, _ = _worker_ti_class(reads, url_of=lambda ti: f"http://airflow/log?task={ti.task_id}")
    urls = [events.from_task_instance("running", worker_ti(dag_id="d", task_id=name, run_id="r", map_index=-1,
                                                           try_number=1)).log_url for name in ("a", "b")]
    assert reads == ["a", "b"]
    assert urls == ["http://airflow/log?task=a", "http://airflow/log?task=b"]


def test_strings_without_a_registered_secret_skip_the_maskers_walk(monkeypatch):
    """With secrets registered, the masker's own walk runs only when one of them occurs in the strings: the result
    is the same either way."""
    from airflow.sdk._shared import secrets_masker

    secrets_masker.mask_secret("fast-path-s3cret-42")
    walks: list[object] = []
    real_redact = secrets_masker.redact

    def counting_redact(value, *args, **kwargs):
        walks.append(value)
        return real_redact(value, *args, **kwargs)

    monkeypatch.setattr(secrets_masker, "redact", counting_redact)
    clean = ["sales.daily", "load", "manual__1", "ValueError: bad row 12"]
    assert events.redact_strings(clean) == clean
    assert walks == []
    assert events.redact_strings(["load", "token fast-path-s3cret-42 leaked"]) == ["load", "token *** leaked"]
    assert len(walks) == 1


def test_a_secret_in_an_id_field_is_masked_in_the_stream(tmp_path, monkeypatch):
    """Every text field of a stream line stays masked, ids included (a run id is user-controlled)."""
    from airflow.sdk._shared import secrets_masker

    from tasklens import config

    secrets_masker.mask_secret("runid-s3cret-77")
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_PATH", str(path))
    config.reset()
    logs.reset()
    try:
        logs.write_event(events.TaskEvent(event="success", dag_id="d", task_id="t", run_id="manual__runid-s3cret-77"))
        assert "runid-s3cret-77" not in path.read_text()
        assert '"run_id":"manual__***"' in path.read_text()
    finally:
        logs.reset()
        config.reset()
