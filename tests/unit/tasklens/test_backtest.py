"""`tasklens backtest`: a fixed stored history replayed through the built-in rules and a candidate file, checked
against counts worked out by hand (see the comments), through the CLI; nothing is sent and nothing is written."""

from __future__ import annotations

import pytest

from tasklens import config
from tasklens.__main__ import main
from tasklens.events import TaskEvent
from tasklens.store import get_store, reset_stores

# The history (all stored as `tasklens_events` rows, as the listener and the api-server store them):
HISTORY = [
    ("2026-11-01T02:00:00+00:00", "etl", "load", "run1", "failed", "ValueError", "boom"),       # e1
    ("2026-11-01T02:00:01+00:00", "etl", "transform", "run1", "failed", "ValueError", "boom"),  # e2
    ("2026-11-01T05:00:00+00:00", "etl", "load", "run2", "failed", "ValueError", "boom"),       # e3
    ("2026-11-01T06:00:00+00:00", "etl", "load", "run3", "success", None, None),                # e4
    ("2026-11-02T03:00:00+00:00", "ml", "train", "run1", "up_for_retry", "KeyError", "'customer_id'"),  # e5
    ("2026-11-02T03:10:00+00:00", "ml", "train", "run1", "failed", "KeyError", "'customer_id'"),  # e6 (try 2)
    ("2026-11-02T03:11:00+00:00", "crm", "sync", "run1", "failed", "KeyError", "'customer_id'"),  # e7
]
# Built-in rules: task_failed (critical) -> slack, escalated to email after 30 min unacknowledged; repeats hourly.
#   day 1, slack: e1+e2 one digest (same run, within 3 s); e3 folds into e1's open alert 3 h later: a repeat;
#                 e4 resolves etl.load: a resolve notice                                          -> 3
#   day 1, email: e1+e2 escalated at 02:30 (one digest); e4's resolve notice (email got the alert) -> 2
#   day 2, slack: e5 is a retry (notify: false): nothing; e6; e7 (another DAG run)                   -> 2
#   day 2, email: e6 and e7 escalated 30 min later, two groups                                      -> 2
#   pages (critical messages, resolves excluded): 1 + 1 + 1 (day 1) + 2 + 2 (day 2)                 -> 7
# Candidate: critical -> slack only, no escalation, repeat every 6 h:
#   day 1, slack: e1+e2; e3 within 6 h: folded, silent; e4 resolve -> 2. day 2, slack: e6, e7 -> 2. pages: 1 + 2 = 3
# Incidents (both): e6 and e7 share the KeyError signature across two DAGs within 15 min -> 1 (etl is one DAG).
# Noisiest: "Task failed: etl.load" twice (e1, e3), everything else once.
CANDIDATE = """
routes:
  - name: critical
    match: {severity: critical}
    channels: [slack]
    repeat_interval: 6h
"""


@pytest.fixture
def history_store(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__TASKLENS__STORE_URL", f"sqlite:///{tmp_path / 'history.db'}")
    monkeypatch.delenv("AIRFLOW__TASKLENS__RULES_FILE", raising=False)
    config.reset()
    reset_stores()
    store = get_store(migrate=True)
    for ts, dag_id, task_id, run_id, kind, exc_type, message in HISTORY:
        event = TaskEvent(event=kind, dag_id=dag_id, task_id=task_id, run_id=run_id, ts=ts, end_date=ts,
                          try_number=2 if (dag_id, kind) == ("ml", "failed") else 1, exception_type=exc_type,
                          exception_message=message, duration_s=10.0)
        store.record([], event=event.to_dict())
    yield store
    reset_stores()
    config.reset()


def test_backtest_counts_match_the_hand_computed_history(history_store, tmp_path, capsys):
    """Messages per day and channel, pages, incidents and the noisiest fingerprints, side by side."""
    candidate = tmp_path / "candidate.yml"
    candidate.write_text(CANDIDATE)
    before = (history_store.deliveries(), history_store.list_alerts())
    assert main(["backtest", "--rules", str(candidate), "--since", "90d"]) == 0
    out = capsys.readouterr().out
    rows = {" ".join(line.split()[:-2]): tuple(int(n) for n in line.split()[-2:])
            for line in out.splitlines() if line[:4].isdigit() or line.startswith(("messages in", "pages", "incid"))}
    assert rows == {
        "2026-11-01 slack": (3, 2),
        "2026-11-01 email": (2, 0),
        "2026-11-02 slack": (2, 2),
        "2026-11-02 email": (2, 0),
        "messages in all": (9, 4),
        "pages (critical)": (7, 3),
        "incidents": (1, 1),
    }
    assert "7 events since" in out and "current = the built-in rules" in out
    noisy = out.split("ten noisiest fingerprints")[1]
    assert noisy.count("2  Task failed: etl.load") == 2  # first in both lists
    assert (history_store.deliveries(), history_store.list_alerts()) == before == ([], [])  # changes nothing


def test_backtest_names_a_bad_candidate_file(history_store, tmp_path, capsys):
    """A candidate with an invalid classifier regex: exit 1 with the file and the key."""
    candidate = tmp_path / "bad.yml"
    candidate.write_text("failure_classes:\n  - class: infra\n    message: '(oops'\n")
    assert main(["backtest", "--rules", str(candidate)]) == 1
    out = capsys.readouterr().out
    assert "bad.yml" in out and "failure_classes[0].message" in out
