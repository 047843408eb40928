"""The rules file's deadlines: section: parsing, bad input named with file, key and fix, due times."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tasklens.exceptions import ConfigError
from tasklens.ruleset import parse_rules_text


def _deadlines(body: str):
    return parse_rules_text(f"deadlines:\n{body}", source="rules.yml").deadlines


def test_by_a_time_of_day_in_a_timezone():
    """by: "06:00 Europe/Paris": the first 06:00 Paris time after the run is due (05:00 UTC in winter)."""
    (deadline,) = _deadlines('  nightly:\n    match: {dag_id: "lakehouse_*"}\n    by: "06:00 Europe/Paris"\n')
    assert deadline.dag_id == ("lakehouse_*",) and deadline.quantile == 0.9
    due = deadline.due_at(run_after=datetime(2026, 11, 26, 23, 0, tzinfo=timezone.utc), start=None,
                          data_interval_end=None)
    assert due == datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc)


def test_within_from_the_run_start_or_the_data_interval_end():
    """within: 2h counts from the start by default, from the data interval end when asked."""
    start = datetime(2026, 11, 27, 1, 0, tzinfo=timezone.utc)
    end = datetime(2026, 11, 27, 0, 0, tzinfo=timezone.utc)
    first, second = _deadlines("  a:\n    match: {tags: [ml]}\n    within: 2h\n"
                               "  b:\n    match: {tags: [ml]}\n    within: 2h\n    from: data_interval_end\n")
    assert first.due_at(run_after=None, start=start, data_interval_end=end).hour == 3
    assert second.due_at(run_after=None, start=start, data_interval_end=end).hour == 2


@pytest.mark.parametrize(
    ("body", "key", "fix"),
    [
        ('    match: {dag_id: x}\n    by: "06:00 Mars/Olympus"\n', "deadlines.d.by", "IANA name"),
        ('    match: {dag_id: x}\n    by: "25:00 UTC"\n', "deadlines.d.by", "06:00"),
        ('    match: {dag_id: x}\n    by: "soon"\n', "deadlines.d.by", "HH:MM"),
        ('    match: {dag_id: x}\n    by: "06:00"\n    within: 1h\n', "deadlines.d.by", "exactly one"),
        ("    match: {dag_id: x}\n    within: 1h\n    from: lunch\n", "deadlines.d.from", "start"),
        ("    within: 1h\n", "deadlines.d.match", "dag_id"),
    ],
)
def test_bad_deadlines_name_the_file_the_key_and_the_fix(body, key, fix):
    """An unknown timezone, an impossible by:, both or neither of by/within, a bad anchor, no match."""
    with pytest.raises(ConfigError) as raised:
        _deadlines(f"  d:\n{body}")
    error = raised.value
    assert error.source == "rules.yml" and error.key == key and fix in f"{error.problem} {error.fix}"


def test_the_example_rules_file_documents_every_deadline_key():
    """Every key of a deadlines: entry appears in include/tasklens_rules.example.yml, and the file loads."""
    from pathlib import Path

    from tasklens.deadlines import DEADLINE_KEYS
    from tasklens.ruleset import load_ruleset

    example = Path(__file__).resolve().parents[3] / "include" / "tasklens_rules.example.yml"
    text = example.read_text(encoding="utf-8")
    assert [key for key in DEADLINE_KEYS if f"{key}:" not in text] == []
    assert {d.name for d in load_ruleset(example).deadlines} == {"nightly_ml", "hourly_feed"}


def test_a_glob_matching_no_dag_is_named_with_its_key():
    """check-config reports each deadlines.<name>.match.dag_id glob that matches none of Airflow's DAGs."""
    from tasklens.deadlines import unmatched_globs

    (deadline,) = _deadlines('  d:\n    match: {dag_id: ["lakehouse_*", "nightly_lod"]}\n    within: 1h\n')
    unmatched = unmatched_globs([deadline], ["lakehouse_ml", "nightly_load"])
    assert unmatched == [("deadlines.d.match.dag_id", "nightly_lod")]
    assert unmatched_globs([deadline], ["lakehouse_ml", "nightly_lod"]) == []
