"""How fast the Alerts page and the alert-list API answer with 100,000 alerts in the store, against an empty store.

Both stores are SQLite files in a temp dir; the app runs in-process (FastAPI TestClient) with Airflow's real
security dependencies and a stand-in auth manager that lets the user read all 200 DAGs (so every query carries
the per-DAG filter, as in production). The big store also holds 100,000 failed-attempt events over the last 7 days
(the chart's source). Rounds interleave the two stores; medians are reported.

    python benchmarks/ui_list.py [--alerts 100000] [--rounds 15]

Last line: ``ui_list_100k_ms: <median ms of the slower of page and API at 100k alerts>``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO / "plugins", REPO):
    sys.path.insert(0, str(extra))

_home = Path(tempfile.mkdtemp(prefix="tasklens-bench-ui-"))
os.environ.setdefault("AIRFLOW_HOME", str(_home))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "true")
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_home / 'airflow.db'}")
os.environ["AIRFLOW__TASKLENS__DISPATCHER_ENABLED"] = "false"

DAGS = [f"dag_{n:03d}" for n in range(200)]


def seed(store: Any, alerts: int, events: int, rng: random.Random) -> None:
    """Bulk rows shaped like a busy installation: most alerts resolved, a fifth open, spread over 30 days."""
    from tasklens.store import alerts_table, events_table

    now = datetime.now(timezone.utc)
    chunk = 5_000
    with store.engine.begin() as conn:
        for start in range(0, alerts, chunk):
            rows = []
            for n in range(start, min(alerts, start + chunk)):
                status = rng.choices(("resolved", "open", "acknowledged", "muted"), (70, 20, 5, 5))[0]
                seen = now - timedelta(seconds=rng.randint(0, 30 * 86400))
                dag = rng.choice(DAGS)
                rows.append({
                    "fingerprint": f"fp{n}", "open_key": None if status == "resolved" else f"fp{n}",
                    "rule": rng.choice(("task_failed", "task_retry", "task_duration")), "kind": "failure",
                    "severity": rng.choices(("critical", "warning", "info"), (30, 50, 20))[0], "status": status,
                    "title": f"{dag}.task_{n % 40} failed", "summary": "", "dag_id": dag, "task_id": f"task_{n % 40}",
                    "run_id": f"scheduled__{n}", "map_index": -1, "try_number": 1, "first_seen": seen,
                    "last_seen": seen, "occurrences": 1, "exception_type": "ValueError",
                    "exception_message": f"row {n} failed validation: amount must be >= 0", "labels": {},
                    "data": {}, "routes": [], "undelivered": False,
                })
            conn.execute(alerts_table.insert(), rows)
        outcome = {"outcome": "failure"} if "outcome" in events_table.c else {}
        for start in range(0, events, chunk):
            rows = []
            for n in range(start, min(events, start + chunk)):
                ts = now - timedelta(seconds=rng.randint(0, 7 * 86400))
                rows.append({"dag_id": rng.choice(DAGS), "task_id": f"task_{n % 40}", "run_id": f"scheduled__{n}",
                             "map_index": -1, "try_number": 1, "event": rng.choice(("failed", "up_for_retry")),
                             "ts": ts, "duration_s": 1.0, "payload": {}, **outcome})
            conn.execute(events_table.insert(), rows)


def make_client() -> Any:
    import airflow.api_fastapi.app as airflow_app
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
    from airflow.api_fastapi.core_api import security
    from airflow.models.dag import DagModel
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from tasklens.ui.app import create_app

    class User(BaseUser):
        def get_id(self) -> str:
            return "admin"

        def get_name(self) -> str:
            return "admin"

    class AllDagsAuthManager:
        async def get_user_from_token(self, token: str) -> User:
            return User()

        def is_authorized_dag(self, **kwargs: Any) -> bool:
            return True

        def get_authorized_dag_ids(self, **kwargs: Any) -> set[str]:
            return set(DAGS)

    manager = AllDagsAuthManager()
    security.get_auth_manager = lambda: manager  # type: ignore[assignment]
    airflow_app.get_auth_manager = lambda: manager  # type: ignore[assignment]
    DagModel.get_team_name = staticmethod(lambda dag_id, session=None: None)  # type: ignore[method-assign]
    main = FastAPI()
    main.mount("/tasklens", create_app())
    return TestClient(main, headers={"Authorization": "Bearer admin"})


def use_store(url: str) -> None:
    from tasklens import config

    os.environ["AIRFLOW__TASKLENS__STORE_URL"] = url
    config.reset()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    from tasklens.store import get_store

    tmp = Path(tempfile.mkdtemp(prefix="tasklens-bench-stores-"))
    urls = {"empty": f"sqlite:///{tmp / 'empty.db'}", "big": f"sqlite:///{tmp / 'big.db'}"}
    for url in urls.values():
        get_store(url, migrate=True)  # as `tasklens db upgrade` would
    started = time.perf_counter()
    seed(get_store(urls["big"]), args.alerts, args.events, random.Random(42))
    print(f"seeded {args.alerts:,} alerts + {args.events:,} events in {time.perf_counter() - started:.1f}s")

    client = make_client()
    endpoints = {
        "api list": "/tasklens/api/alerts",
        "alerts page": "/tasklens/alerts",
        "api search": "/tasklens/api/alerts?q=validation&status=open",
        "api dag filter": "/tasklens/api/alerts?dag_id=dag_007&severity=critical",
        "api summary": "/tasklens/api/summary",
    }
    timings: dict[tuple[str, str], list[float]] = {(s, e): [] for s in urls for e in endpoints}
    for url in urls.values():  # warm-up: caches, templates, first connections
        use_store(url)
        for path in endpoints.values():
            assert client.get(path).status_code == 200, path
    for _ in range(args.rounds):
        for store_name, url in urls.items():
            use_store(url)
            for name, path in endpoints.items():
                started = time.perf_counter()
                response = client.get(path)
                timings[(store_name, name)].append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
    medians = {key: statistics.median(values) for key, values in timings.items()}
    for name in endpoints:
        empty, big = medians[("empty", name)], medians[("big", name)]
        print(f"{name:15s} empty {empty:7.1f} ms   {args.alerts:,} alerts {big:7.1f} ms   ratio {big / empty:5.2f}")
    worst = max(medians[("big", "api list")], medians[("big", "alerts page")])
    worst_empty = max(medians[("empty", "api list")], medians[("empty", "alerts page")])
    print(f"page + list at {args.alerts:,} alerts vs empty store: {worst / worst_empty:.2f}x")
    print(f"ui_list_100k_ms: {worst:.1f}")


if __name__ == "__main__":
    main()
