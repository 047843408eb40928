"""What tasklens does differently on Airflow 3.1 and 3.2 (the real versions run in ``make test-compat``)."""

from __future__ import annotations

import logging

import pytest

from tasklens import airflow_compat, retry


def test_backoff_is_the_multiplier_from_airflow_3_2(monkeypatch):
    """3.2 and 3.3 operators take the preset's multiplier as it is."""
    monkeypatch.setattr(airflow_compat, "BACKOFF_IS_MULTIPLIER", True)
    assert retry.preset("transient_network")["retry_exponential_backoff"] == 2.0


@pytest.mark.parametrize(("multiplier", "expected"), [(2.0, True), (1.0, False), (0.0, False)])
def test_backoff_is_a_bool_on_airflow_3_1(monkeypatch, multiplier, expected):
    """3.1's operators take a bool (True doubles the delay each try): a growing multiplier becomes True, so the
    DAG still serializes (3.1's schema rejects a float there)."""
    monkeypatch.setattr(airflow_compat, "BACKOFF_IS_MULTIPLIER", False)
    chosen = retry.preset("transient_network", retry_exponential_backoff=multiplier)
    assert chosen["retry_exponential_backoff"] is expected
    assert chosen.kwargs()["retry_exponential_backoff"] is expected


def test_missing_retry_policy_is_said_once_per_process(monkeypatch, caplog):
    """Without ``retry_policy`` (Airflow < 3.3) applying presets logs one info line naming what is off, however many
    tasks get a preset; with it, nothing."""
    monkeypatch.setattr(airflow_compat, "_noted", set())
    monkeypatch.setattr(airflow_compat, "RETRY_POLICY_SUPPORTED", False)
    with caplog.at_level(logging.INFO, logger="tasklens.airflow_compat"):
        for _ in range(3):
            retry.preset("transient_network").kwargs()
    lines = [r.getMessage() for r in caplog.records if r.name == "tasklens.airflow_compat"]
    assert len(lines) == 1 and "no retry_policy" in lines[0] and "per-exception rules" in lines[0]

    caplog.clear()
    monkeypatch.setattr(airflow_compat, "_noted", set())
    monkeypatch.setattr(airflow_compat, "RETRY_POLICY_SUPPORTED", True)
    with caplog.at_level(logging.INFO, logger="tasklens.airflow_compat"):
        retry.preset("transient_network").kwargs()
    assert not [r for r in caplog.records if r.name == "tasklens.airflow_compat"]


def test_retry_policy_stand_ins_decide_like_airflow_3_3():
    """The stand-in decisions have Airflow 3.3's shape, so in-task retries (``tasklens.retry.call``) evaluate a
    preset's rules the same way on every version."""
    policy = retry.preset("transient_network").retry_policy
    assert policy.evaluate(ConnectionError("reset"), 1, 3).action == airflow_compat.RetryAction.RETRY
    assert policy.evaluate(ValueError("bad row"), 1, 3).action != airflow_compat.RetryAction.RETRY
