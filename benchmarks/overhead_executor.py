"""tasklens' overhead on the executor path, where every task is its own process, against Airflow without tasklens.

Two real stacks run side by side (scheduler with LocalExecutor, dag-processor, api-server): one from ``.venv`` with
tasklens installed, one from the baseline venv without it (``baseline_venv.py``). Both get the same chain of 30
no-op tasks with no retry settings; runs alternate between the stacks. Per run it records:

- the DAG run's duration (``dag_run`` start to end, as Airflow records it);
- each task process's whole life as its supervisor reports it ("Workload finished ... duration"): process start,
  DAG parse, the task, listeners, exit. Its excess over the task's own span (``end_date - start_date``) is the time
  the process holds a worker slot outside the task; tasklens' listeners run there.

Prints the medians, the extra milliseconds per task process, and ``executor overhead ratio: X.XX`` last.

    python benchmarks/overhead_executor.py [rounds]
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.baseline_venv import baseline_python, check_baseline, clean_env  # noqa: E402
from tests.integration.observability import StatsdSink  # noqa: E402
from tests.integration.stack import AirflowStack  # noqa: E402

TASKS = 30
DAG_ID = "tl_bench_executor"
DAG_FILE = f'''
from airflow.sdk import chain, dag, task


@dag(dag_id="{DAG_ID}", schedule=None, catchup=False)
def bench():
    steps = []
    for number in range({TASKS}):
        @task(task_id=f"noop_{{number}}")
        def noop() -> None:
            return None

        steps.append(noop())
    chain(*steps)


bench()
'''
_WORKLOAD = re.compile(r"Workload finished.*?duration=([0-9.]+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _run(stack: AirflowStack) -> tuple[float, list[float], list[float]]:
    """One DAG run: its duration, each task's own span, and each task process's life (seconds)."""
    log_before = len(stack.component_log("scheduler"))
    run_id = stack.trigger(DAG_ID)
    state = stack.wait_for_run(DAG_ID, run_id, timeout=900)
    if state != "success":
        raise SystemExit(f"{stack.home.name}: run {run_id} ended {state}")
    run = stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
    duration = (_parse(run["end_date"]) - _parse(run["start_date"])).total_seconds()
    spans = [(_parse(ti["end_date"]) - _parse(ti["start_date"])).total_seconds()
             for ti in stack.task_instances(DAG_ID, run_id)]
    deadline = time.monotonic() + 60  # the executor's workers write their last lines a moment after the run ends
    while True:
        log_text = _ANSI.sub("", stack.component_log("scheduler")[log_before:])
        lives = [float(m.group(1)) for m in _WORKLOAD.finditer(log_text)]
        if len(lives) >= TASKS or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if len(lives) != TASKS:
        raise SystemExit(f"{stack.home.name}: {len(lives)} 'Workload finished' lines for {TASKS} tasks")
    return duration, spans, lives


def main(rounds: int) -> None:
    baseline = baseline_python()
    with tempfile.TemporaryDirectory(prefix="tasklens-bench-executor-") as tmp:
        root = Path(tmp)
        dags = root / "dags"
        dags.mkdir()
        (dags / "bench_dag.py").write_text(DAG_FILE)
        statsd = StatsdSink()
        stacks: dict[str, AirflowStack] = {}
        for variant, python in (("without", baseline), ("with", REPO / ".venv" / "bin" / "python")):
            stack = AirflowStack(root / variant, dags, {**statsd.env(), "AIRFLOW__CORE__UNIT_TEST_MODE": "false"},
                                 python=python)
            stack.env.update(clean_env(stack.env, root / "empty-plugins"))
            stack.env.pop("PYTHONDONTWRITEBYTECODE", None)  # installed code runs from .pyc, as in deployments
            if variant == "with":  # this checkout's tasklens: a git worktree shares a venv installed from another
                stack.env["PYTHONPATH"] = os.pathsep.join([str(REPO / "plugins"), stack.env["PYTHONPATH"]])
            stacks[variant] = stack
        check_baseline(baseline, stacks["without"].env)
        try:
            for stack in stacks.values():
                stack.start()
            for stack in stacks.values():
                _run(stack)  # warm-up: DAG serialised, caches filled
            results: dict[str, list[tuple[float, list[float], list[float]]]] = {"without": [], "with": []}
            for number in range(rounds):
                order = ("without", "with") if number % 2 == 0 else ("with", "without")
                for variant in order:
                    results[variant].append(_run(stacks[variant]))
                print(f"round {number + 1}: without {results['without'][-1][0]:.2f} s, "
                      f"with {results['with'][-1][0]:.2f} s", flush=True)
        finally:
            for variant, stack in stacks.items():
                stack.stop()
                kept = REPO / ".airflow" / "bench" / "executor-logs" / variant
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(stack.home / "component-logs", kept)  # for a look after the run
                cleaned = stack.component_log("scheduler").count("Process exited with open sockets")
                print(f"{variant}: {cleaned} task processes waited out the supervisor's socket cleanup "
                      f"(logs kept in {kept})")
            statsd.close()
        run_s = {v: statistics.median(r[0] for r in results[v]) for v in results}
        life = {v: statistics.median(x for r in results[v] for x in r[2]) for v in results}
        span = {v: statistics.median(x for r in results[v] for x in r[1]) for v in results}
        outside = {v: life[v] - span[v] for v in results}
        print(f"median DAG run ({TASKS} chained tasks): without {run_s['without']:.2f} s, with {run_s['with']:.2f} s; "
              f"extra per task {(run_s['with'] - run_s['without']) / TASKS * 1000:.1f} ms")
        print(f"median task process life: without {life['without'] * 1000:.0f} ms, with {life['with'] * 1000:.0f} ms;"
              f" extra per task process {(life['with'] - life['without']) * 1000:.1f} ms")
        print(f"median time a process holds its slot outside the task itself: without "
              f"{outside['without'] * 1000:.0f} ms, with {outside['with'] * 1000:.0f} ms")
        print(f"executor overhead ratio: {run_s['with'] / run_s['without']:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
