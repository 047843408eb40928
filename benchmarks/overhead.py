"""Run-time overhead of tasklens on a DAG of 100 independent no-op tasks.

Each round runs ``airflow dags test`` in a fresh subprocess, once without tasklens (its listener
removed before Airflow loads plugins) and once with it (listener, JSON Lines stream, StatsD to a
local UDP socket, alert stage), in alternating order. The time compared is the DAG run's own
duration as Airflow records it (``dag_run.end_date - start_date``), not CLI start-up. Prints the median ratio
``with / without`` last as ``overhead ratio: X.XX`` (target <= 1.03). On a shared machine that wall-clock ratio
swings by +-15 % between rounds, so it also prints two steadier views: the CPU seconds the DAG run used (both
variants, ``time.process_time`` around ``DAG.test``) and the time spent inside tasklens' listener.

    python benchmarks/overhead.py [rounds]
"""

from __future__ import annotations

import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

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
RUNNER = """
import atexit, sys, time
from tasklens.plugin import TasklensPlugin  # both variants import the same modules in the same order
from tasklens import listener
from airflow.sdk.definitions.dag import DAG
run_dag = DAG.test
def cpu_timed_test(*args, **kwargs):  # CPU seconds of the DAG run (all threads): other processes barely move it
    start = time.process_time()
    try:
        return run_dag(*args, **kwargs)
    finally:
        print(f"DAG_RUN_CPU_SECONDS {time.process_time() - start}", file=sys.stderr)
DAG.test = cpu_timed_test
if sys.argv[1] == "without":
    TasklensPlugin.listeners = []
else:
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


def _udp_sink() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def drain() -> None:
        while True:
            sock.recv(65535)

    threading.Thread(target=drain, daemon=True).start()
    return int(sock.getsockname()[1])


def _run(variant: str, home: Path, dags: Path, env: dict[str, str]) -> tuple[float, float]:
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
    cpu_seconds = float("nan")
    for line in result.stderr.splitlines():
        if line.startswith("TASKLENS_SECONDS "):
            inside, count = line.split()[1:]
            IN_TASKLENS.append((float(inside), int(count)))
        elif line.startswith("DAG_RUN_CPU_SECONDS "):
            cpu_seconds = float(line.split()[1])
    written = (events.read_text().count("\n") if events.exists() else 0) - before
    expected = 0 if variant == "without" else 2 * TASKS  # running + success per task
    if written != expected or state != "success":
        raise SystemExit(f"{variant}: {written} events written (expected {expected}), run state {state}")
    return seconds, cpu_seconds


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="tasklens-bench-overhead-") as tmp:
        home, dags = Path(tmp) / "home", Path(tmp) / "dags"
        dags.mkdir()
        (dags / "bench_dag.py").write_text(DAG_FILE)
        env = airflow_env(
            home,
            dags,
            {
                "AIRFLOW__METRICS__STATSD_ON": "True",
                "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
                "AIRFLOW__METRICS__STATSD_PORT": str(_udp_sink()),
                "AIRFLOW__CORE__UNIT_TEST_MODE": "false",
            },
        )
        # Installed code runs from cached bytecode; without this every run would compile tasklens' lazily imported
        # modules (store, rules) from source, a cost only the "with" variant pays (make exports DONTWRITEBYTECODE).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        migrate(env)
        _run("with", home, dags, env)  # warm-up: serialises the DAG, fills OS caches
        ratios, cpu_ratios = [], []
        timings: dict[str, list[float]] = {"without": [], "with": []}
        for number in range(rounds):
            order = ("without", "with") if number % 2 == 0 else ("with", "without")
            result = {variant: _run(variant, home, dags, env) for variant in order}
            for variant, (seconds, _) in result.items():
                timings[variant].append(seconds)
            (wall_with, cpu_with), (wall_without, cpu_without) = result["with"], result["without"]
            ratios.append(wall_with / wall_without)
            cpu_ratios.append(cpu_with / cpu_without)
            print(
                f"round {number + 1}: without {wall_without:.2f} s, with {wall_with:.2f} s, ratio {ratios[-1]:.3f}; "
                f"CPU without {cpu_without:.2f} s, with {cpu_with:.2f} s, ratio {cpu_ratios[-1]:.3f}",
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
        print(f"CPU-time ratio of the DAG run (less sensitive to other load): {statistics.median(cpu_ratios):.3f}")
        print(f"overhead ratio: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
