"""Many processes appending to one event stream at once: no torn, interleaved or lost line."""

from __future__ import annotations

import multiprocessing

import pytest

from tasklens import config, logs
from tasklens.events import TaskEvent
from tests.integration.observability import read_stream

pytestmark = pytest.mark.integration

PROCESSES = 8
EVENTS_PER_PROCESS = 10_000


def _writer(worker: int, start) -> None:
    start.wait()
    for number in range(EVENTS_PER_PROCESS):
        # Lines of varying length (about 300 to 3,300 bytes) make a torn or interleaved write visible.
        logs.write_event(
            TaskEvent(
                event="failed",
                dag_id="concurrency",
                task_id=f"writer-{worker}",
                run_id=f"{worker}:{number}",
                exception_message="x" * ((number * 37) % 3000),
            )
        )


def test_eight_processes_append_80k_lines_without_loss(tmp_path, monkeypatch):
    """8 processes x 10,000 events with rotation every 4 MB: every line parses, each event is present exactly once."""
    max_bytes, backups = 4 << 20, 1000
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_PATH", str(path))
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_MAX_BYTES", str(max_bytes))
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_BACKUP_COUNT", str(backups))
    config.reset()
    logs.reset()
    context = multiprocessing.get_context("fork")
    start = context.Event()
    workers = [context.Process(target=_writer, args=(worker, start)) for worker in range(PROCESSES)]
    for process in workers:
        process.start()
    start.set()
    for process in workers:
        process.join(300)
        assert process.exitcode == 0
    lines = read_stream(path)  # json.loads raises on any torn or interleaved line
    seen = [line["run_id"] for line in lines]
    assert len(seen) == PROCESSES * EVENTS_PER_PROCESS
    assert set(seen) == {f"{w}:{n}" for w in range(PROCESSES) for n in range(EVENTS_PER_PROCESS)}
    for line in lines:
        number = int(line["run_id"].split(":")[1])
        assert len(line["exception_message"]) == (number * 37) % 3000
    assert len(list(tmp_path.glob("events.jsonl.*"))) > 5  # it really rotated under load
    config.reset()
    logs.reset()
