"""Long non-ASCII ids on a real PostgreSQL store: PostgreSQL's VARCHAR(n) counts characters and rejects longer values
(SQLite does not), so this is where an unfitted key loses an alert.

Airflow allows ``\\w`` in ids, so 250 CJK characters is a valid dag_id and task_id; percent-encoded in a group key they
take 2,250 characters each. The failure goes through the real alert stage (rules, routing, ``Store.record``) and the
dispatcher posts it to a local Slack sink.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest
import sqlalchemy as sa

from tasklens import config, pipeline
from tasklens.dispatch import Dispatcher
from tasklens.events import TaskEvent
from tasklens.store import Store, deliveries_table, events_table, get_store, occurrences_table, reset_stores
from tasklens.testing import SlackSink
from tests.integration.postgres import PostgresServer, postgres_server
from tests.unit.tasklens.test_store import FakeClock, assert_every_value_fits_its_column, make_alert, slack

pytestmark = pytest.mark.integration

__all__ = ["postgres_server"]  # the fixture, re-exported for pytest

LONG_DAG = "数据管道" * 62 + "日次"  # 250 characters, the longest dag_id Airflow allows
LONG_TASK = "加载订单" * 62 + "任务"
LONG_RUNS = ("manual__" + "运行" * 150 + "-1", "manual__" + "运行" * 150 + "-2")  # 310 characters, differ at the end
RULES = """\
routes:
  - name: every_failure
    channels: [slack]
    group_by: [dag_id, task_id, run_id]
    group_wait: 0s
"""
_database_ids = count()


@pytest.fixture
def alert_stage(postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """The real alert stage on a fresh PostgreSQL database, routing every failure to a Slack sink."""
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES, encoding="utf-8")
    url = postgres_server.create_database(f"tasklens_long_{next(_database_ids)}")
    monkeypatch.setenv("AIRFLOW__TASKLENS__STORE_URL", url)
    monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(rules))
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_PATH", str(tmp_path / "events.jsonl"))
    config.reset()
    reset_stores()
    pipeline.ERROR_COUNTS.clear()
    yield get_store(migrate=True)  # as `tasklens db upgrade` would
    reset_stores()
    config.reset()


def _failure(run_id: str, *, dag_id: str = LONG_DAG) -> TaskEvent:
    return TaskEvent(
        event="failed", dag_id=dag_id, task_id=LONG_TASK, run_id=run_id, try_number=1, max_tries=0,
        # one exception type per DAG: the same error in two DAGs would be one incident (one message)
        exception_type="ValueError" if dag_id == LONG_DAG else "LookupError", exception_message="订单表为空",
        traceback="Traceback ...\nValueError: 订单表为空",
    )


def test_long_cjk_ids_are_stored_and_delivered_on_postgresql(alert_stage: Store, monkeypatch: pytest.MonkeyPatch):
    """A task with 250-character CJK dag and task ids fails in two runs whose 310-character ids differ only at the
    end, and a DAG whose id differs only in its last character fails too: every attempt is stored once (the fitted
    run ids stay distinct), each DAG's alert gets its own group key although both keys share their first 2,000
    characters, and both alerts are posted to Slack."""
    other_dag = LONG_DAG[:-1] + "周"
    for event in (_failure(LONG_RUNS[0]), _failure(LONG_RUNS[1]), _failure(LONG_RUNS[0], dag_id=other_dag)):
        pipeline.handle(event)
    assert not pipeline.ERROR_COUNTS, pipeline.ERROR_COUNTS  # no stage failed (it would have lost the alert)

    alerts = {a["dag_id"]: a for a in alert_stage.list_alerts()}
    assert set(alerts) == {LONG_DAG, other_dag} and {a["task_id"] for a in alerts.values()} == {LONG_TASK}
    assert alerts[LONG_DAG]["occurrences"] == 2 and alert_stage.occurrence_count() == 3
    with alert_stage.engine.connect() as conn:
        run_ids = set(conn.execute(sa.select(occurrences_table.c.run_id)).scalars())
        event_runs = list(conn.execute(sa.select(events_table.c.run_id)).scalars())
        group_keys = list(conn.execute(sa.select(deliveries_table.c.group_key)).scalars())
    assert len(run_ids) == 2 and all(len(r) == 250 and r.startswith("manual__运行") for r in run_ids)
    assert len(event_runs) == 3 and set(event_runs) == run_ids
    assert len(group_keys) == 2 and len(set(group_keys)) == 2 and all(len(k) <= 500 for k in group_keys)
    assert_every_value_fits_its_column(alert_stage)

    with SlackSink() as sink:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SLACK", sink.conn_uri())
        clock = FakeClock()
        clock.now = alert_stage.clock()
        dispatcher = Dispatcher(alert_stage, clock=clock)
        dispatcher.run_once()
        clock.advance(1.0)  # Slack takes one message per second per webhook
        dispatcher.run_once()
    assert len(sink.messages) == 2, dispatcher.totals
    assert all(LONG_TASK[:20] in text and "订单表为空" in text for text in sink.texts())
    assert {d["state"] for d in alert_stage.deliveries()} == {"sent"}


def test_over_long_keys_and_names_are_fitted_on_postgresql(alert_stage: Store):
    """``Store.record`` on PostgreSQL accepts a rule, fingerprint, route, channel and group key longer than their
    columns and folds a later try into the same alert (the fitted keys are stable)."""
    alert = make_alert(dag_id=LONG_DAG, task_id=LONG_TASK, run_id=LONG_RUNS[0], rule="规则" * 150,
                       exception_type="E" * 300)
    alert = dataclasses.replace(alert, fingerprint="f" * 100, title="标题" * 400)
    delivery = slack(route="路由" * 150, channel="频道" * 150, group_key="组" * 2000)
    first = alert_stage.record([(alert, [delivery])])
    again = alert_stage.record([(dataclasses.replace(alert, try_number=2), [delivery])])
    assert first.new_alerts == 1 and again.folded == 1 and again.alert_ids == first.alert_ids
    assert alert_stage.occurrence_count() == 2 and len(alert_stage.deliveries()) == 1
    assert_every_value_fits_its_column(alert_stage)
