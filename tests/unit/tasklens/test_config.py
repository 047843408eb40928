"""tasklens.config: the rules file with last-good fallback, and the configuration problems it records."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasklens import config

REPO = Path(__file__).resolve().parents[3]
GOOD = "version: 1\nchannels:\n  pager:\n    type: email\n    to: [oncall@example.com]\n"


@pytest.fixture
def rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The rules file path (not written yet) in a fresh AIRFLOW_HOME."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    path = tmp_path / "rules.yml"
    monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(path))
    config.reset()
    yield path
    config.reset()


def test_a_bad_deploy_keeps_the_rules_this_process_loaded_last(rules: Path) -> None:
    """The file turns into invalid YAML while the process runs: the next call sees the change, keeps the last good
    rules (the custom channel is still there) and records the problem with the file, the place and the fix."""
    rules.write_text(GOOD)
    assert "pager" in config.ruleset().channels and config.problems() == ()
    rules.write_text("channels: [unclosed\n")
    kept = config.ruleset()
    assert "pager" in kept.channels
    (problem,) = config.problems()
    assert (problem.kind, problem.source) == ("invalid_yaml", str(rules))
    assert problem.key.startswith("line ") and "malformed YAML" in problem.problem and problem.fix
    assert "last good rules this process loaded" in problem.fallback
    rules.write_text(GOOD.replace("pager", "phone"))
    assert "phone" in config.ruleset().channels and config.problems() == ()


def test_a_validated_file_is_saved_and_a_fresh_process_falls_back_to_it(rules: Path) -> None:
    """A file that validates is copied to $AIRFLOW_HOME/tasklens/last_good_rules.yml; a new process that finds the
    rules file missing (as on a worker the deploy missed) uses that copy, not the built-in rules."""
    rules.write_text(GOOD)
    config.ruleset()
    saved = config.last_good_rules_path()
    assert saved == Path(os.environ["AIRFLOW_HOME"]) / "tasklens" / "last_good_rules.yml"
    assert saved.read_text().endswith(GOOD)
    rules.unlink()
    code = ("from tasklens import config; r = config.ruleset(); (p,) = config.problems(); "
            "print(sorted(r.channels), p.kind, p.fallback)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                          check=True)
    assert done.stdout.strip().splitlines()[-1] == (
        f"['email', 'pager', 'slack'] missing_file the last good rules file ({saved})")


def test_without_a_last_good_copy_the_built_in_rules_are_used(rules: Path) -> None:
    """A missing rules file and nothing saved: the built-in rules, and the problem says so."""
    loaded = config.ruleset()
    assert loaded.source is None and set(loaded.channels) == {"slack", "email"}
    (problem,) = config.problems()
    assert (problem.kind, problem.key, problem.fallback) == ("missing_file", "rules_file", "the built-in rules")


def test_the_saved_copy_is_written_only_when_the_file_changed(rules: Path) -> None:
    """Loading the same valid file again (a new process) does not rewrite the saved copy."""
    rules.write_text(GOOD)
    config.ruleset()
    saved = config.last_good_rules_path()
    os.utime(saved, ns=(1, 1))
    config.reset()
    config.ruleset()
    assert saved.stat().st_mtime_ns == 1
    rules.write_text(GOOD.replace("pager", "phone"))
    config.ruleset()
    assert "phone" in saved.read_text()


def test_problem_fingerprint_names_the_error_not_the_fallback() -> None:
    """One fingerprint per distinct error, whatever tasklens falls back to."""
    problem = config.ConfigProblem("invalid_rules", "r.yml", "routes[0]", "unknown channel 'slak'", "fix", "a")
    assert problem.fingerprint == config.ConfigProblem("invalid_rules", "r.yml", "routes[0]", "unknown channel 'slak'",
                                                       "fix", "b").fingerprint
    assert problem.fingerprint != config.ConfigProblem("invalid_rules", "r.yml", "routes[0]", "unknown channel 'x'",
                                                       "fix", "a").fingerprint


def test_default_retry_preset_is_none_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installing tasklens changes no task's retries: the default preset is none."""
    monkeypatch.delenv("AIRFLOW__TASKLENS__DEFAULT_RETRY_PRESET", raising=False)
    config.reset()
    assert config.default_retry_preset() is None
    monkeypatch.setenv("AIRFLOW__TASKLENS__DEFAULT_RETRY_PRESET", "fail_fast")
    config.reset()
    assert config.default_retry_preset() == "fail_fast"


def test_an_unexpected_loader_error_falls_back_too(rules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a bug in the loader never reaches a DAG: the built-in rules, and the problem names the error type."""
    from tasklens import ruleset as ruleset_module

    rules.write_text(GOOD)
    monkeypatch.setattr(ruleset_module, "parse_rules_text", lambda *a, **k: (_ for _ in ()).throw(TypeError("bug")))
    assert config.ruleset().source is None
    (problem,) = config.problems()
    assert (problem.kind, problem.problem) == ("invalid_rules", "could not be loaded (TypeError)")
