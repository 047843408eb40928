"""Run-time overhead of tasklens against Airflow without tasklens, on a DAG of 100 independent no-op tasks.

Each round runs ``airflow dags test`` in a fresh subprocess twice, in alternating order: once in the baseline venv
(a copy of ``.venv`` with tasklens uninstalled, see ``baseline_venv.py``) and once in ``.venv`` with tasklens
installed (plugin, cluster policy, listener, JSON Lines stream, StatsD to a local UDP socket, alert stage). The DAG
sets no retry settings, the common case. Compared: the DAG run's own duration as Airflow records it
(``dag_run.end_date - start_date``), and the steady per-task cost (median time between consecutive task ends).

The "with" run also measures where tasklens' time goes per task: import and plugin load, the cluster policy, and
each listener stage (event, log context, stream, StatsD, alert stage/store), and the listener's time per successful
attempt (its running and success events, on the task's thread; median over the run's tasks). The event stream and
StatsD stages run on tasklens's hand-off thread: their time is shown, but the task's thread does not wait for it.
A third run per round alternates tasks with and without tasklens' listener in one DAG run (the listener's cost
alone, free of drift between runs).
Prints ``overhead ratio: X.XX`` last (target <= 1.03).

    python benchmarks/overhead.py [rounds]
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.baseline_venv import baseline_python, check_baseline, clean_env  # noqa: E402
from tests.integration.observability import StatsdSink  # noqa: E402
from tests.integration.stack import airflow_env, migrate  # noqa: E402

TASKS = 100
SPENT: list[dict[str, float]] = []  # seconds per part of tasklens, per "with" run
ATTEMPT_MS: list[float] = []  # median listener milliseconds per successful attempt (running + success), per "with" run
DAG_ID = "tl_bench_overhead"

DAG_FILE = f'''
from airflow.sdk import dag, task


@dag(dag_id="{DAG_ID}", schedule=None, catchup=False)
def bench():
    for number in range({TASKS}):
        @task(task_id=f"noop_{{number}}")
        def noop() -> None:
            return None

        noop()


bench()
'''

# Runs ``airflow dags test`` in the subprocess. "with" times tasklens' import and plugin load, its cluster policy
# and every pipeline stage, and prints the totals. "alternating:<parity>" runs tasklens' listener for the tasks whose
# number has that parity only and stamps the moment each task starts: the time from one task's start to the next is
# that task's whole cost, and neighbouring tasks with and without the listener see the same machine.
RUNNER = """
import atexit, collections, sys, time
variant = sys.argv[1]
if variant != "without":
    # tasklens is imported from inside `import airflow` (the policy entry point) and at plugin load: time every
    # outermost tasklens module's execution, whatever it imports on the way, wherever it happens.
    import importlib.abc, importlib.util
    import_time = [0.0, 0]  # seconds, nesting depth
    class TimedImports(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if not name.startswith("tasklens"):
                return None
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(name)
            finally:
                sys.meta_path.insert(0, self)
            execute = spec.loader.exec_module
            def timed_exec(module):
                import_time[1] += 1
                begin = time.perf_counter()
                try:
                    execute(module)
                finally:
                    import_time[1] -= 1
                    if import_time[1] == 0:
                        import_time[0] += time.perf_counter() - begin
            spec.loader.exec_module = timed_exec
            return spec
    sys.meta_path.insert(0, TimedImports())
    import airflow  # Airflow's own import (it loads the policy, and with it most of tasklens) is not tasklens's cost
    import airflow.listeners, airflow.plugins_manager
    import structlog
    from tasklens import listener, pipeline, policy
    from tasklens.plugin import TasklensPlugin
if variant == "with":
    spent = collections.Counter()
    def timed(name, func):
        def wrapper(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - begin
        return wrapper
    run_stage = pipeline.run_stage
    def timed_stage(stage, func, *args, **kwargs):
        begin = time.perf_counter()
        try:
            return run_stage(stage, func, *args, **kwargs)
        finally:
            spent["stage:" + stage] += time.perf_counter() - begin
    pipeline.run_stage = timed_stage
    listener.pipeline.run_stage = timed_stage
    attempts = collections.Counter()  # listener seconds per task attempt (its running and success events)
    emit = listener._emit
    def timed_emit(kind, task_instance, *args, **kwargs):
        begin = time.perf_counter()
        try:
            return emit(kind, task_instance, *args, **kwargs)
        finally:
            took = time.perf_counter() - begin
            spent["listener"] += took
            attempts[(task_instance.task_id, task_instance.try_number)] += took
    listener._emit = timed_emit
    # The policy runs through the entry point's reference to the function: time the work it delegates.
    policy.add_failure_callback = timed("policy", policy.add_failure_callback)
    policy.apply_retry_preset = timed("policy", policy.apply_retry_preset)
    atexit.register(lambda: print("TASKLENS_SPENT " + " ".join(
        f"{k}={v}" for k, v in {**spent, "import": import_time[0]}.items()), file=sys.stderr))
    atexit.register(lambda: print("TASKLENS_ATTEMPTS " + " ".join(str(v) for v in attempts.values()),
                                  file=sys.stderr))
elif variant.startswith("alternating"):
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


def _steady_per_task_s(home: Path) -> float:
    """Median time between consecutive task ends of the newest run: the per-task cost once the run is going."""
    with sqlite3.connect(home / "airflow.db") as db:
        run_id = db.execute("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (DAG_ID,)
                            ).fetchone()[0]
        ends = sorted(datetime.fromisoformat(end) for (end,) in db.execute(
            "SELECT end_date FROM task_instance WHERE dag_id = ? AND run_id = ?", (DAG_ID, run_id)))
    return statistics.median((b - a).total_seconds() for a, b in itertools.pairwise(ends))


def _run(variant: str, home: Path, envs: dict[str, dict[str, str]], pythons: dict[str, Path]
         ) -> tuple[float, float, float | None]:
    """Run the DAG once; its duration, the steady per-task cost, and for an alternating run the per-task ratio."""
    events = home / "logs" / "tasklens" / "events.jsonl"
    before = events.read_text().count("\n") if events.exists() else 0
    side = "without" if variant == "without" else "with"
    result = subprocess.run(
        [str(pythons[side]), "-c", RUNNER, variant, DAG_ID],
        env=envs[side],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{variant} run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    seconds, state = _last_run_seconds(home)
    for line in result.stderr.splitlines():
        if line.startswith("TASKLENS_SPENT "):
            SPENT.append({k: float(v) for k, v in (item.split("=") for item in line.split()[1:])})
        if line.startswith("TASKLENS_ATTEMPTS "):
            ATTEMPT_MS.append(statistics.median(float(v) * 1000 for v in line.split()[1:]))
    written = (events.read_text().count("\n") if events.exists() else 0) - before
    expected = {"without": 0, "with": 2 * TASKS}.get(variant, TASKS)  # running + success per task with tasklens
    if written != expected or state != "success":
        raise SystemExit(f"{variant}: {written} events written (expected {expected}), run state {state}")
    ratio = _per_task_ratio(result.stderr) if variant.startswith("alternating") else None
    return seconds, _steady_per_task_s(home), ratio


def _breakdown() -> list[str]:
    """Median milliseconds of each part of tasklens per run and per task, from the "with" runs."""
    labels = {"import": "import and plugin load", "policy": "cluster policy (callback, retry preset)",
              "listener": "listener, all stages", "stage:events": "  building the event",
              "stage:logs.context": "  task-log fields",
              "stage:logs.stream": "  event stream (on the hand-off thread, not the task's)",
              "stage:metrics": "  StatsD (on the hand-off thread, not the task's)",
              "stage:alerts": "  alert stage and store (nothing stored on success)",
              "stage:config": "  enabled check"}
    keys = sorted({key for spent in SPENT for key in spent}, key=lambda k: list(labels).index(k) if k in labels else 99)
    lines = []
    for key in keys:
        per_run_ms = statistics.median(spent.get(key, 0.0) for spent in SPENT) * 1000
        lines.append(f"  {labels.get(key, key)}: {per_run_ms:.1f} ms per run, {per_run_ms / TASKS:.3f} ms per task")
    return lines


def main(rounds: int) -> None:
    pythons = {"without": baseline_python(), "with": REPO / ".venv" / "bin" / "python"}
    with tempfile.TemporaryDirectory(prefix="tasklens-bench-overhead-") as tmp:
        home, dags = Path(tmp) / "home", Path(tmp) / "dags"
        dags.mkdir()
        (dags / "bench_dag.py").write_text(DAG_FILE)
        statsd = StatsdSink()  # listening, as a statsd_exporter would (a closed port costs each send an ICMP error)
        env = airflow_env(home, dags, {**statsd.env(), "AIRFLOW__CORE__UNIT_TEST_MODE": "false"})
        # Installed code runs from cached bytecode (make exports PYTHONDONTWRITEBYTECODE; users' installs have .pyc).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        env = clean_env(env, Path(tmp) / "empty-plugins")
        # This checkout's tasklens first, for "with" only: a git worktree shares the venv (whose editable install
        # points at another checkout) and must measure its own code.
        with_path = os.pathsep.join([str(REPO / "plugins"), env["PYTHONPATH"]])
        envs = {"without": env, "with": {**env, "PYTHONPATH": with_path}}
        check_baseline(pythons["without"], env)
        migrate(env)
        _run("with", home, envs, pythons)  # warm-up: serialises the DAG, fills OS caches
        _run("without", home, envs, pythons)
        SPENT.clear()
        ATTEMPT_MS.clear()
        ratios, per_task = [], []
        timings: dict[str, list[float]] = {"without": [], "with": []}
        steady: dict[str, list[float]] = {"without": [], "with": []}
        for number in range(rounds):
            order = ("without", "with") if number % 2 == 0 else ("with", "without")
            result = {variant: _run(variant, home, envs, pythons) for variant in order}
            for variant, (seconds, per_task_s, _) in result.items():
                timings[variant].append(seconds)
                steady[variant].append(per_task_s)
            ratios.append(result["with"][0] / result["without"][0])
            per_task.append(_run(f"alternating:{number % 2}", home, envs, pythons)[2] or float("nan"))
            print(
                f"round {number + 1}: without {result['without'][0]:.2f} s, with {result['with'][0]:.2f} s, "
                f"ratio {ratios[-1]:.3f}; steady per task {result['without'][1] * 1000:.1f} -> "
                f"{result['with'][1] * 1000:.1f} ms; listener alternating in one run: ratio {per_task[-1]:.3f}",
                flush=True,
            )
        print(f"median without tasklens: {statistics.median(timings['without']):.2f} s for {TASKS} tasks")
        print(f"median with tasklens: {statistics.median(timings['with']):.2f} s for {TASKS} tasks")
        extra = [(w - o) * 1000 for w, o in zip(steady["with"], steady["without"], strict=True)]
        print(f"steady per task: {statistics.median(steady['without']) * 1000:.1f} ms without, "
              f"{statistics.median(steady['with']) * 1000:.1f} ms with; extra per task (median of rounds): "
              f"{statistics.median(extra):.2f} ms")
        print("where tasklens' time goes (median of the 'with' runs):")
        print("\n".join(_breakdown()))
        listener_ms = statistics.median(spent.get("listener", 0.0) for spent in SPENT) / (2 * TASKS) * 1000
        print(f"listener time per event (running or success): {listener_ms:.3f} ms")
        print(f"listener time per successful attempt (running + success, median): "
              f"{statistics.median(ATTEMPT_MS):.3f} ms")
        print(f"per-task ratio, tasks with and without the listener alternating in one run: "
              f"{statistics.median(per_task):.3f}")
        print(f"overhead ratio: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
