"""The reliability table: every fault of the fault-injection issue injected into real components, one row each.

Faults 1-4 run against real Airflow stacks (scheduler, dag-processor, api-server; ``tests/faults/scenarios.py``),
built here as ``tests/faults/conftest.py`` builds them, once per group (the SQLite stack for 1 and 3, the PostgreSQL
stack for each variant of 2, a fresh home for 4, the killed-task DAGs for 7), each stopped as soon as no later fault
needs it. Faults 5, 6 and 19 run ``airflow dags test`` in isolated homes, 16 the real stages
(``tests/faults/run_scenarios.py``); 8-15, 18 and 20 real components (``tests/faults/component_scenarios.py``); 17
``benchmarks/reconcile_scale.py`` on a real PostgreSQL metadata DB of 1,000,000 task instances. Prints the markdown
table, then ``faults survived: N of M`` last.

    python benchmarks/faults.py                  # everything (about 20 minutes)
    python benchmarks/faults.py --skip-stack     # faults 5, 6, 8-20 without an Airflow stack
    python benchmarks/faults.py --only 1,8,11

A new fault joins with one line in :data:`FAULTS`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "include"), str(REPO)]

import tests.conftest  # noqa: E402,F401 - the tests' isolated AIRFLOW_HOME and paths, set before Airflow is imported
from tasklens.testing import SlackSink  # noqa: E402
from tests.faults import component_scenarios as components  # noqa: E402
from tests.faults import run_scenarios as runs  # noqa: E402
from tests.faults import scenarios  # noqa: E402
from tests.faults.harness import FaultOutcome, StallingProxy, markdown_table  # noqa: E402
from tests.integration.observability import StatsdSink  # noqa: E402
from tests.integration.postgres import PostgresServer  # noqa: E402
from tests.integration.stack import AirflowStack  # noqa: E402


class Resources:
    """What the scenarios need, started on first use and kept until :meth:`release` of its group (or the end).

    Shared by every group: the Slack sink, the PID markers directory, the StatsD sink, a PostgreSQL server for the
    component scenarios. Groups: ``sqlite`` (stack), ``postgres-stopped`` and ``postgres-stalled`` (server, proxy,
    stack each: a store that kept the first variant's open alerts would fold the second's failures into them).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._shared = contextlib.ExitStack()
        self._groups: dict[str, contextlib.ExitStack] = {}
        self._cache: dict[str, Any] = {}

    def _get(self, key: str, group: str | None, start: Callable[[contextlib.ExitStack], Any]) -> Any:
        if key not in self._cache:
            stack = self._shared if group is None else self._groups.setdefault(group, contextlib.ExitStack())
            self._cache[key] = start(stack)
        return self._cache[key]

    def release(self, group: str) -> None:
        stack = self._groups.pop(group, None)
        if stack is not None:
            self._cache = {k: v for k, v in self._cache.items() if not k.startswith(f"{group}.")}
            stack.close()

    def close(self) -> None:
        for group in list(self._groups):
            self.release(group)
        self._shared.close()

    # -- shared --
    def slack(self) -> SlackSink:
        return self._get("slack", None, lambda s: s.enter_context(SlackSink()))

    def markers(self) -> Path:
        def make(_: contextlib.ExitStack) -> Path:
            path = self.root / "markers"
            path.mkdir()
            return path

        return self._get("markers", None, make)

    def statsd(self) -> StatsdSink:
        def start(stack: contextlib.ExitStack) -> StatsdSink:
            sink = StatsdSink()
            stack.callback(sink.close)
            return sink

        return self._get("statsd", None, start)

    def component_postgres(self) -> PostgresServer:
        return self._get("component_postgres", None, lambda s: s.enter_context(PostgresServer()))

    # -- group "sqlite" --
    def sqlite_stack(self) -> AirflowStack:
        def start(stack: contextlib.ExitStack) -> AirflowStack:
            env = scenarios.stack_env(self.slack(), self.markers(), {
                "AIRFLOW__METRICS__STATSD_ON": "True",
                "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
                "AIRFLOW__METRICS__STATSD_PORT": str(self.statsd().port),
            })
            return stack.enter_context(AirflowStack(self.root / "faults-sqlite", scenarios.DAGS, env))

        return self._get("sqlite.stack", "sqlite", start)

    # -- groups "postgres-*" --
    def postgres(self, group: str) -> PostgresServer:
        def start(stack: contextlib.ExitStack) -> PostgresServer:
            server = stack.enter_context(PostgresServer())
            server.create_database("tasklens")
            return server

        return self._get(f"{group}.server", group, start)

    def postgres_proxy(self, group: str) -> StallingProxy:
        return self._get(f"{group}.proxy", group,
                         lambda s: s.enter_context(StallingProxy(self.postgres(group).port)))

    def postgres_stack(self, group: str) -> AirflowStack:
        def start(stack: contextlib.ExitStack) -> AirflowStack:
            store_url = f"postgresql+psycopg2://pgadmin@127.0.0.1:{self.postgres_proxy(group).port}/tasklens"
            env = scenarios.stack_env(self.slack(), self.markers(), {"AIRFLOW__TASKLENS__STORE_URL": store_url})
            return stack.enter_context(AirflowStack(self.root / f"faults-{group}", scenarios.DAGS, env))

        return self._get(f"{group}.stack", group, start)

    # -- group "killed" --
    def killed_stack(self) -> AirflowStack:
        def start(stack: contextlib.ExitStack) -> AirflowStack:
            env = {"AIRFLOW_CONN_TASKLENS_SLACK": self.slack().conn_uri(), "TASKLENS_TEST_MARKERS": str(self.markers()),
                   "AIRFLOW__TASKLENS__DISPATCH_INTERVAL_S": "0.5"}  # the reconciler at its defaults
            return stack.enter_context(AirflowStack(self.root / "faults-killed", runs.KILLED_DAGS, env))

        return self._get("killed.stack", "killed", start)

    def postgres_unreachable(self, mode: str) -> FaultOutcome:
        group = f"postgres-{mode}"
        return scenarios.postgres_store_unreachable(self.postgres_stack(group), self.slack(), self.postgres(group),
                                                    self.postgres_proxy(group), mode=mode)


#: Fault 17's target: one reconciler pass over a 1,000,000-task-instance metadata DB.
RECONCILE_TARGET_MS = 50.0


def reconciler_at_scale() -> FaultOutcome:
    """Fault 17: ``benchmarks/reconcile_scale.py`` (a real PostgreSQL Airflow metadata DB with 1,000,000 task
    instances): one pass of the api-server's checks, median of interleaved rounds, against the 50 ms target."""
    outcome = FaultOutcome("reconciler at scale", tasks_changed=None)
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "reconcile_scale.py"), "1000000", "7"],
                          capture_output=True, text=True, timeout=3600, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("reconcile pass ms:")), None)
    if line is None:
        outcome.violations.append(f"reconcile_scale.py failed: {(done.stdout + done.stderr)[-500:]}")
        return outcome
    pass_ms = float(line.split(":")[1])
    outcome.worst_added_s = pass_ms / 1000
    outcome.fault = f"reconciler at scale (1,000,000 TIs): {pass_ms:.1f} ms per pass"
    outcome.expect(pass_ms <= RECONCILE_TARGET_MS, f"{pass_ms:.1f} ms per pass, over {RECONCILE_TARGET_MS:.0f} ms")
    return outcome


@dataclasses.dataclass(frozen=True)
class Fault:
    """One row of the table: the issue's fault ``number``, a ``title`` and the scenario to run.

    ``group`` names the stack the scenario needs (released when no later fault needs it); ``None`` for scenarios
    that bring their own components.
    """

    number: int
    title: str
    run: Callable[[Resources], FaultOutcome]
    group: str | None = None

    @property
    def on_stack(self) -> bool:
        return self.group is not None


FAULTS: list[Fault] = [
    Fault(1, "SQLite store locked 60 s",
          lambda r: scenarios.sqlite_store_locked(r.sqlite_stack(), r.slack()), group="sqlite"),
    Fault(3, "scheduler and dag-processor reports, store locked",
          lambda r: scenarios.scheduler_path_with_store_locked(r.sqlite_stack(), r.slack(), r.markers(), r.statsd()),
          group="sqlite"),
    Fault(2, "PostgreSQL store stopped", lambda r: r.postgres_unreachable("stopped"), group="postgres-stopped"),
    Fault(2, "PostgreSQL store not answering", lambda r: r.postgres_unreachable("stalled"), group="postgres-stalled"),
    Fault(4, "store schema older than tasklens",
          lambda r: scenarios.old_schema_until_api_server_starts(r.root / "faults-old-schema", r.slack(),
                                                                  r.markers()), group="fresh-home"),
    Fault(5, "bad rules file deployed while DAGs run", lambda r: runs.bad_rules_files()),
    Fault(6, "installing tasklens changes no task", lambda r: runs.example_dags_with_and_without_tasklens()),
    Fault(7, "slow or failed report is never a kill",
          lambda r: runs.slow_or_lost_reports(r.killed_stack(), r.slack()), group="killed"),
    Fault(8, "dispatcher lease expires mid-pass", lambda r: components.lease_expires_mid_pass()),
    Fault(9, "dispatcher SIGKILLed between send and mark",
          lambda r: components.dispatcher_killed_between_send_and_mark()),
    Fault(10, "two dispatchers escalate the same alerts (PostgreSQL)",
          lambda r: components.concurrent_escalations_on_postgresql(r.component_postgres())),
    Fault(11, "bad Retry-After values", lambda r: components.bad_retry_after_values()),
    Fault(12, "secrets backend blip", lambda r: components.secrets_backend_blip()),
    Fault(13, "webhook token in errors, UI, health, logs", lambda r: components.no_secret_in_errors()),
    Fault(14, "long non-ASCII ids (PostgreSQL)",
          lambda r: components.long_non_ascii_ids_on_postgresql(r.component_postgres())),
    Fault(15, "hostile exceptions", lambda r: components.hostile_exceptions()),
    Fault(16, "one attempt reported by several processes", lambda r: runs.one_attempt_many_reporters()),
    Fault(17, "reconciler on 1,000,000 task instances (PostgreSQL)", lambda r: reconciler_at_scale()),
    Fault(18, "resolve and escalation edge cases", lambda r: components.resolve_and_escalation_edge_cases()),
    Fault(19, "explicit calls with bad input fail loudly", lambda r: runs.explicit_calls_with_bad_input()),
    Fault(20, "no inline delivery from a task's process", lambda r: components.no_inline_delivery()),
]


def select(faults: list[Fault], only: set[int] | None, skip_stack: bool) -> list[Fault]:
    return [f for f in faults if (only is None or f.number in only) and not (skip_stack and f.on_stack)]


def run_all(faults: list[Fault], root: Path) -> list[tuple[Fault, FaultOutcome]]:
    """Run ``faults`` in registry order (grouped by stack), releasing each stack once no later fault needs it."""
    results: list[tuple[Fault, FaultOutcome]] = []
    resources = Resources(root)
    try:
        for index, fault in enumerate(faults):
            print(f"fault {fault.number}: {fault.title} ...", file=sys.stderr, flush=True)
            try:
                outcome = fault.run(resources)
            except Exception as exc:  # a scenario that breaks is a row that says so, not a lost table
                traceback.print_exc()
                outcome = FaultOutcome(fault.title, violations=[f"the scenario raised {type(exc).__name__}: {exc}"])
            results.append((fault, outcome))
            if fault.group and all(later.group != fault.group for later in faults[index + 1:]):
                resources.release(fault.group)
    finally:
        resources.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated fault numbers, e.g. 1,8,11")
    parser.add_argument("--skip-stack", action="store_true", help="skip the faults that need an Airflow stack (1-4)")
    args = parser.parse_args(argv)
    only = {int(n) for n in args.only.split(",") if n.strip()} if args.only else None
    faults = select(FAULTS, only, args.skip_stack)
    if not faults:
        parser.error("no fault selected")
    with _workdir() as root, _stdout_to_stderr():
        results = run_all(faults, root)
    results.sort(key=lambda pair: pair[0].number)
    rows = [dataclasses.replace(o, fault=f"{f.number}. {o.fault}") for f, o in results]
    print(markdown_table(rows))
    print(f"faults survived: {sum(o.survived for o in rows)} of {len(rows)}")
    return 0 if all(o.survived for o in rows) else 1


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 on stderr for the block: Airflow's log handler holds the original stdout stream, and the
    table should stand alone on stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tasklens-bench-faults-") as path:
        yield Path(path)


if __name__ == "__main__":
    sys.exit(main())
