"""StatsD datagrams on the wire: one per task event, the statsd package's line formats, never past the MTU."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tasklens import config, metrics
from tasklens.events import TaskEvent


@pytest.fixture
def udp(monkeypatch) -> Iterator[socket.socket]:
    """A real UDP socket on 127.0.0.1 that tasklens's StatsD settings point at."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(sock.getsockname()[1]))
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PREFIX", "airflow")
    config.reset()
    metrics.reset()
    yield sock
    sock.close()
    config.reset()
    metrics.reset()


def _datagrams(sock: socket.socket) -> list[bytes]:
    """tasklens's datagrams received so far (Airflow's own metrics go to the same port; a marker sent last ends the
    read)."""
    marker = b"end-of-test"
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(marker, sock.getsockname())
    received = []
    while (data := sock.recv(65535)) != marker:
        if data.startswith(b"airflow.tasklens."):
            received.append(data)
    return received


def test_a_task_event_is_one_datagram_of_newline_separated_lines(udp):
    """A success sends its counter, try-number gauge and duration timer in one datagram, each line as the statsd
    package formats it."""
    metrics.record_event(TaskEvent(event="success", dag_id="d", task_id="t", run_id="r", try_number=2,
                                   state="success", operator="PythonOperator", owner="data", duration_s=1.25))
    (datagram,) = _datagrams(udp)
    tags = ",dag_id=d,task_id=t,state=success,operator=PythonOperator,owner=data"
    assert datagram.decode().split("\n") == [
        f"airflow.tasklens.task.success{tags}:1|c",
        f"airflow.tasklens.task.try_number{tags}:2|g",
        f"airflow.tasklens.task.duration{tags}:1250.000000|ms",
    ]


def test_non_ascii_ids_split_into_datagrams_within_the_mtu_by_bytes(udp):
    """Long non-ASCII ids (two UTF-8 bytes per letter) never make a datagram longer than 1432 bytes, and no line is
    lost or cut."""
    long_id = "ü" * 150  # 300 bytes: a line of about 1 kB, two fit the limit in characters, not in bytes
    metrics.record_event(TaskEvent(event="success", dag_id=long_id, task_id=long_id, run_id="r", state="success",
                                   operator=long_id, duration_s=0.5))
    received = _datagrams(udp)
    assert all(len(datagram) <= 1432 for datagram in received)
    lines = [line for datagram in received for line in datagram.decode("utf-8").split("\n")]
    assert [line.split(",", 1)[0] for line in lines] == [
        "airflow.tasklens.task.success", "airflow.tasklens.task.try_number", "airflow.tasklens.task.duration"]
    assert all(f"dag_id={long_id},task_id={long_id}" in line for line in lines)


def test_a_negative_gauge_is_set_through_zero(udp):
    """A negative custom gauge is sent as 0 then the value, so StatsD does not read it as a decrement."""
    metrics.gauge("drift", -2.5)
    (datagram,) = _datagrams(udp)
    stat = "airflow.tasklens.custom.drift,dag_id=none,task_id=none"  # outside a task: no task labels
    assert datagram.decode().split("\n") == [f"{stat}:0|g", f"{stat}:-2.5|g"]
