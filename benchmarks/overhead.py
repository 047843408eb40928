"""Run-time overhead of tasklens on a DAG of 100 independent no-op tasks.

Each round runs ``airflow dags test`` in a fresh subprocess, once without tasklens (its listener
removed before Airflow loads plugins) and once with it (listener, JSON Lines stream, StatsD to a
local UDP socket, alert stage), in alternating order. The time compared is the DAG run's own
duration as Airflow records it (``dag_run.end_date - start_date``), not CLI start-up. Prints the median ratio
``with / without`` last as ``overhead ratio: X.XX`` (target <= 1.03). On a shared machine that ratio swings by
+-15 % between rounds (CPU time swings with it: the host's speed varies, not just the load), so it also prints two
steadier views: the time spent inside tasklens' listener, and a third run per round in which tasks with and without
tasklens alternate, compared task by task (median time from one task's start to the next).

    python benchmarks/overhead.py [rounds]
"""

from __future__ import annotations

import itertools
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.observability import StatsdSink  # noqa: E402
from tests.integration.stack import airflow_env, migrate  # noqa: E402

TASKS = 100
IN_TASKLENS: list[tuple[float, int]] = []  # (seconds inside tasklens' listener, events) per "with" run
DAG_ID = "tl_bench_overhead"

DAG_FILE = f'''
from airflow.sdk import dag, task


@dag(dag_id="{DAG_ID}", schedule=None, catchup=False, default_args={{"retries": 0}})
def bench():
    for number in range({TASKS}):
        @task(task_id=f"noop_{{number}}")
        def noop() -> None:
            return None

        noop()


bench()
'''

# Runs ``airflow dags test`` in the subprocess; "without" removes tasklens' listener before Airflow loads plugins.
# "with" also sums the time spent inside tasklens' listener hooks: a noise-free view of its cost.
# "alternating:<parity>" runs tasklens for the tasks whose number has that parity only and stamps the moment each task
# starts: the time from one task's start to the next is that task's whole cost (Airflow's and tasklens'), and
# neighbouring tasks with and without tasklens see the same machine, whatever the other load does.
RUNNER = """
import atexit, sys, time
import structlog
from tasklens.plugin import TasklensPlugin  # every variant imports the same modules in the same order
from tasklens import listener
variant = sys.argv[1]
if variant == "without":
    TasklensPlugin.listeners = []
elif variant == "with":
    spent = [0.0, 0]
    emit = listener._emit
    def timed_emit(*args, **kwargs):
        start = time.perf_counter()
        try:
            return emit(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start
            spent[1] += 1
    listener._emit = timed_emit
    atexit.register(lambda: print(f"TASKLENS_SECONDS {spent[0]} {spent[1]}", file=sys.stderr))
else:
    parity = int(variant.split(":")[1])
    starts = []
    emit = listener._emit
    def alternating_emit(kind, task_instance, *args, **kwargs):
        on = int(task_instance.task_id.rsplit("_", 1)[1]) % 2 == parity
        if kind == "running":
            starts.append((time.perf_counter(), int(on)))
            if not on:  # dags test runs every task in this process: drop the previous task's bound log fields
                structlog.contextvars.unbind_contextvars(
                    "dag_id", "task_id", "run_id", "map_index", "try_number", "tasklens_event")
        if on:
            return emit(kind, task_instance, *args, **kwargs)
    listener._emit = alternating_emit
    atexit.register(lambda: print("TASK_STARTS " + " ".join(f"{t}:{on}" for t, on in starts), file=sys.stderr))
from airflow.__main__ import main
sys.argv = ["airflow", "dags", "test", sys.argv[2]]
main()
"""


def _last_run_seconds(home: Path) -> tuple[float, str]:
    """Duration of the newest run of the DAG as Airflow recorded it (dag_run start/end), and its state."""
    with sqlite3.connect(home / "airflow.db") as db:
        start, end, state = db.execute(
            "SELECT start_date, end_date, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (DAG_ID,)
        ).fetchone()
    parse = datetime.fromisoformat
    return (parse(end) - parse(start)).total_seconds(), state


def _per_task_ratio(stderr: str) -> float:
    """Median time per task with tasklens over the median without, from one alternating run's task starts."""
    line = next(line for line in stderr.splitlines() if line.startswith("TASK_STARTS "))
    starts = sorted((float(t), on == "1") for t, on in (item.split(":") for item in line.split()[1:]))
    spans: dict[bool, list[float]] = {True: [], False: []}
    for (start, on), (following, _) in itertools.pairwise(starts):
        spans[on].append(following - start)
    return statistics.median(spans[True]) / statistics.median(spans[False])


def _run(variant: str, home: Path, env: dict[str, str]) -> tuple[float, float | None]:
    """Run the DAG once; its duration, and for an alternating run the per-task ratio."""
    events = home / "logs" / "tasklens" / "events.jsonl"
    before = events.read_text().count("\n") if events.exists() else 0
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, variant, DAG_ID],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{variant} run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    seconds, state = _last_run_seconds(home)
    for line in result.stderr.splitlines():
        if line.startswith("TASKLENS_SECONDS "):
            inside, count = line.split()[1:]
            IN_TASKLENS.append((float(inside), int(count)))
    written = (events.read_text().count("\n") if events.exists() else 0) - before
    expected = {"without": 0, "with": 2 * TASKS}.get(variant, TASKS)  # running + success per task with tasklens
    if written != expected or state != "success":
        raise SystemExit(f"{variant}: {written} events written (expected {expected}), run state {state}")
    return seconds, _per_task_ratio(result.stderr) if variant.startswith("alternating") else None


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="tasklens-bench-overhead-") as tmp:
        home, dags = Path(tmp) / "home", Path(tmp) / "dags"
        dags.mkdir()
        (dags / "bench_dag.py").write_text(DAG_FILE)
        env = airflow_env(
            home,
            dags,
            {
                **StatsdSink().env(),
                "AIRFLOW__CORE__UNIT_TEST_MODE": "false",
            },
        )
        # Installed code runs from cached bytecode; without this every run would compile tasklens' lazily imported
        # modules (store, rules) from source, a cost only the "with" variant pays (make exports DONTWRITEBYTECODE).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        migrate(env)
        _run("with", home, env)  # warm-up: serialises the DAG, fills OS caches
        ratios, per_task = [], []
        timings: dict[str, list[float]] = {"without": [], "with": []}
        for number in range(rounds):
            order = ("without", "with") if number % 2 == 0 else ("with", "without")
            result = {variant: _run(variant, home, env)[0] for variant in order}
            for variant, seconds in result.items():
                timings[variant].append(seconds)
            ratios.append(result["with"] / result["without"])
            per_task.append(_run(f"alternating:{number % 2}", home, env)[1] or float("nan"))
            print(
                f"round {number + 1}: without {result['without']:.2f} s, with {result['with']:.2f} s, "
                f"ratio {ratios[-1]:.3f}; alternating tasks in one run: ratio {per_task[-1]:.3f}",
                flush=True,
            )
        print(f"median without: {statistics.median(timings['without']):.2f} s for {TASKS} tasks")
        print(f"median with: {statistics.median(timings['with']):.2f} s for {TASKS} tasks")
        inside = statistics.median(seconds for seconds, _ in IN_TASKLENS)
        per_event = statistics.median(seconds / max(count, 1) for seconds, count in IN_TASKLENS) * 1000
        print(
            f"time inside tasklens' listener: median {inside:.2f} s per run ({per_event:.2f} ms per event), "
            f"{inside / statistics.median(timings['without']):.1%} of the baseline run"
        )
        alternating = statistics.median(per_task)
        print(f"per-task ratio, tasks with and without tasklens alternating in one run: {alternating:.3f}")
        print(f"overhead ratio: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
