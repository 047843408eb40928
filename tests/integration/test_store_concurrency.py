"""Eight OS processes raising alerts at once into one fresh SQLite store: nothing lost, nothing duplicated."""

from __future__ import annotations

import multiprocessing

import pytest

pytestmark = pytest.mark.integration

PROCESSES = 8
UNIQUE_PER_PROCESS = 25
TIMEOUT_S = 240


def _raise_alerts(url: str, index: int, start: multiprocessing.synchronize.Event, done: multiprocessing.Queue) -> None:
    from tasklens.store import Store
    from tests.unit.tasklens.test_store import make_alert, slack

    start.wait(60)
    store = Store(url)  # every process migrates the fresh database on first use at the same moment
    results = []
    for n in range(UNIQUE_PER_PROCESS):
        # A distinct problem of this process: a new alert each.
        results.append(store.record([(make_alert(task_id=f"p{index}_t{n}"), [slack(group_key=f"g{index}")])]))
        # The same problem in every process, a different attempt each: one alert, one occurrence per process.
        results.append(store.record([(make_alert(task_id="shared", run_id=f"run{index}_{n}"), [slack()])]))
        # The very same attempt reported by every process (listener + callbacks + reconciler): one occurrence.
        results.append(store.record([(make_alert(task_id="same_attempt", run_id=f"r{n}"), [slack()])]))
    done.put((index, sum(r.new_alerts for r in results), sum(r.duplicates for r in results)))
    store.dispose()


def test_eight_processes_lose_and_duplicate_nothing(tmp_path):
    """Concurrent first use migrates once; every unique alert is stored once; shared attempts count once."""
    from tasklens.store import Store

    url = f"sqlite:///{tmp_path / 'concurrent.db'}"
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    done = ctx.Queue()
    workers = [ctx.Process(target=_raise_alerts, args=(url, i, start, done)) for i in range(PROCESSES)]
    for worker in workers:
        worker.start()
    start.set()
    reports = [done.get(timeout=TIMEOUT_S) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        if worker.is_alive():
            worker.kill()
    assert all(w.exitcode == 0 for w in workers)

    store = Store(url)
    alerts = store.list_alerts(limit=10_000)
    by_task = {a["task_id"]: a for a in alerts}
    assert len(alerts) == PROCESSES * UNIQUE_PER_PROCESS + 2
    assert by_task["shared"]["occurrences"] == PROCESSES * UNIQUE_PER_PROCESS
    assert by_task["same_attempt"]["occurrences"] == UNIQUE_PER_PROCESS
    expected_occurrences = PROCESSES * UNIQUE_PER_PROCESS * 2 + UNIQUE_PER_PROCESS
    assert store.occurrence_count() == expected_occurrences
    assert sum(dups for _, _, dups in reports) == (PROCESSES - 1) * UNIQUE_PER_PROCESS
    # One message per unique alert, one for the shared problem, one for the same-attempt problem.
    assert len(store.deliveries()) == PROCESSES * UNIQUE_PER_PROCESS + 2
    store.dispose()
