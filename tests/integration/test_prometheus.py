"""The shipped Prometheus config and rules, checked by promtool and run by a real Prometheus on 127.0.0.1.

The live test rewrites ``include/monitoring/prometheus.yml`` to scrape a small HTTP server of this test that serves
series named and labelled as statsd-exporter exposes them with ``statsd_mapping.yml``, and to load the shipped rules.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.stack import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "include" / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
RULES = MONITORING / "prometheus_rules.yml"
RULES_TESTS = MONITORING / "prometheus_rules.test.yml"
LIVE_TIMEOUT_S = 90


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} missing: run `make system-deps` (Debian package prometheus)"
    return path


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("promtool"), *args], capture_output=True, text=True, timeout=120, check=False)


def test_promtool_accepts_the_shipped_config() -> None:
    """``promtool check config`` passes on the compose stack's prometheus.yml."""
    result = _promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_shipped_rules() -> None:
    """``promtool check rules`` passes on prometheus_rules.yml and finds its five alerts."""
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 rules found" in result.stdout


def test_shipped_rule_unit_tests_pass() -> None:
    """``promtool test rules prometheus_rules.test.yml``: alerts fire on sick series, stay quiet on healthy ones."""
    result = _promtool("test", "rules", str(RULES_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_cover_every_alert() -> None:
    """The shipped rule tests expect each alert of prometheus_rules.yml to fire at least once."""
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    fired = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts == fired


def test_config_scrapes_the_exporter_the_compose_file_runs() -> None:
    """prometheus.yml scrapes statsd-exporter on the web port compose starts it on, and loads the mounted rules dir."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for sc in jobs["statsd-exporter"]["static_configs"] for t in sc["targets"]]
    exporter_flags = compose["services"]["statsd-exporter"]["command"]
    web_port = next(f.rsplit(":", 1)[1] for f in exporter_flags if f.startswith("--web.listen-address="))
    assert targets == [f"statsd-exporter:{web_port}"]
    mounts = compose["services"]["prometheus"]["volumes"]
    assert any(m.startswith("./include/monitoring/prometheus_rules.yml:/etc/prometheus/rules/") for m in mounts)
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]


# -- a real Prometheus ------------------------------------------------------------------------------------------


class _Exporter:
    """Serves /metrics as statsd-exporter would after a few tasklens events; the error counter grows per scrape."""

    def __init__(self) -> None:
        self.scrapes = 0
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                exporter.scrapes += 1
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-statsd-exporter", daemon=True)

    def render(self) -> str:
        labels = 'dag_id="sales.daily",task_id="load-orders",operator="PythonOperator",owner="data"'
        return "\n".join(
            [
                "# TYPE tasklens_task_events_total counter",
                f'tasklens_task_events_total{{event="success",state="success",{labels}}} 12',
                f'tasklens_task_events_total{{event="failed",state="failed",{labels}}} 3',
                "# TYPE tasklens_errors_total counter",
                f'tasklens_errors_total{{stage="store"}} {self.scrapes}',
                "",
            ]
        )

    def __enter__(self) -> _Exporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _wait_for(what: str, probe: Any, prometheus: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + LIVE_TIMEOUT_S
    last: Any = None
    while time.monotonic() < deadline:
        assert prometheus.poll() is None, f"prometheus exited:\n{log.read_text()[-3000:]}"
        try:
            last = probe()
        except OSError as error:  # not listening yet
            last = error
        else:
            if last:
                return last
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; last answer: {last!r}\n{log.read_text()[-3000:]}")


@pytest.fixture
def live_prometheus(tmp_path: Path) -> Iterator[tuple[str, _Exporter]]:
    """Prometheus with the shipped config and rules, rewritten to scrape a local fake exporter every second."""
    with _Exporter() as exporter:
        port = free_port()
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(RULES)]
        for job in config["scrape_configs"]:
            local = {"statsd-exporter": exporter.port, "prometheus": port}[job["job_name"]]
            job["static_configs"] = [{"targets": [f"127.0.0.1:{local}"]}]
        config_file = tmp_path / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        check = _promtool("check", "config", str(config_file))
        assert check.returncode == 0, check.stdout + check.stderr

        log = tmp_path / "prometheus.log"
        with open(log, "wb") as log_handle:
            process = subprocess.Popen(
                [
                    _tool("prometheus"),
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_for("prometheus ready", lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200,
                      process, log)
            yield url, exporter
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def test_real_prometheus_scrapes_the_exporter_and_fires_a_rule(live_prometheus: tuple[str, _Exporter]) -> None:
    """A real Prometheus running the shipped config scrapes the exporter target, keeps the dotted/dashed task labels,
    loads all five shipped rules and fires TasklensInternalErrors once the error counter grows."""
    url, exporter = live_prometheus

    def targets_up() -> list[dict[str, Any]]:
        active = _get(f"{url}/api/v1/targets")["data"]["activeTargets"]
        return [t for t in active if t["labels"]["job"] == "statsd-exporter" and t["health"] == "up"]

    def query(expr: str) -> list[dict[str, Any]]:
        return _get(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")["data"]["result"]

    def firing() -> list[dict[str, Any]]:
        alerts = _get(f"{url}/api/v1/alerts")["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "TasklensInternalErrors" and a["state"] == "firing"]

    deadline = time.monotonic() + LIVE_TIMEOUT_S
    up = events = fired = []
    while time.monotonic() < deadline and not (up and events and fired):
        up = up or targets_up()
        events = events or query('tasklens_task_events_total{event="failed"}')
        fired = fired or firing()
        time.sleep(0.5)
    assert up, "the statsd-exporter target never came up"
    assert [(e["metric"]["dag_id"], e["metric"]["task_id"], e["value"][1]) for e in events] == [
        ("sales.daily", "load-orders", "3")
    ]
    assert fired, f"TasklensInternalErrors did not fire after {exporter.scrapes} scrapes"
    assert fired[0]["labels"]["stage"] == "store"

    groups = _get(f"{url}/api/v1/rules")["data"]["groups"]
    loaded = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
    assert loaded == {
        "TasklensConfigErrors": "ok",
        "TasklensTaskFailureRateHigh": "ok",
        "TasklensTaskDurationHigh": "ok",
        "TasklensNoRecentSuccess": "ok",
        "TasklensInternalErrors": "ok",
    }
