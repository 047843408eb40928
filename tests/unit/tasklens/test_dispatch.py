"""The dispatcher with an injected clock and fake channels: grouping, rate limits, retries, fallback, escalation."""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta

import pytest

from tasklens.alerts import AlertKind, Notification
from tasklens.dispatch import ChannelConfig, Dispatcher, DispatcherSettings
from tasklens.exceptions import DeliveryError
from tasklens.store import Store

from .test_store import FakeClock, make_alert, resolve_of, slack


class FakeChannels:
    """Records every notification per channel; ``failures[channel]`` is a list of errors raised first."""

    def __init__(self) -> None:
        self.sent: list[Notification] = []
        self.failures: dict[str, list[DeliveryError]] = {}
        self.attempts: list[str] = []

    def factory(self, name: str, channel_type: str, options: object) -> FakeChannels._Target:
        return FakeChannels._Target(self, name)

    class _Target:
        def __init__(self, owner: FakeChannels, name: str) -> None:
            self.owner, self.name = owner, name

        def send(self, notification: Notification, *, timeout_s: float | None = None) -> None:
            self.owner.attempts.append(self.name)
            queue = self.owner.failures.get(self.name)
            if queue:
                raise queue.pop(0)
            self.owner.sent.append(notification)

    def to(self, channel: str) -> list[Notification]:
        return [n for n in self.sent if n.channel == channel]


def channel_config(name: str) -> ChannelConfig:
    return ChannelConfig(type="email" if name == "email" else "slack", options={}, rate_per_s=1.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path, clock) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'tasklens.db'}", clock=clock)
    yield s
    s.dispose()


@pytest.fixture
def channels() -> FakeChannels:
    return FakeChannels()


def make_dispatcher(store, clock, channels, **settings) -> Dispatcher:
    values = {"backoff_jitter_s": 0.0, "max_age_s": 600.0, "digest_max_items": 50}
    values.update(settings)
    return Dispatcher(
        store,
        settings=DispatcherSettings(**values),
        clock=clock,
        sleep=clock.advance,
        rng=random.Random(0),
        channel_config=channel_config,
        channel_factory=channels.factory,
        base_url="http://airflow",
    )


def test_alerts_of_one_group_go_out_as_one_digest(store, clock, channels):
    """Three failures of one DAG run within group_wait: one digest message with three alerts."""
    for task in ("a", "b", "c"):
        store.record([(make_alert(task_id=task), [slack(group_wait_s=30)])])
        clock.advance(5)
    dispatcher = make_dispatcher(store, clock, channels)
    assert dispatcher.run_once().messages_sent == 0  # still inside group_wait
    clock.advance(30)
    report = dispatcher.run_once()
    assert report.messages_sent == 1 and report.deliveries_sent == 3
    assert channels.sent[0].kind == "digest" and len(channels.sent[0].items) == 3


def test_single_alert_is_sent_as_alert_with_stored_snapshot(store, clock, channels):
    """One alert in its group is an "alert" message built from the stored record."""
    store.record([(make_alert(), [slack()])])
    make_dispatcher(store, clock, channels).run_once()
    (message,) = channels.sent
    assert message.kind == "alert" and message.items[0].alert.title == "Task failed: etl.load"
    assert message.items[0].alert_url.startswith("http://airflow/tasklens/alerts/")


def test_digest_is_split_at_digest_max_items(store, clock, channels):
    """A storm of one group is split into messages of at most digest_max_items alerts."""
    store.record([(make_alert(task_id=f"t{i}"), [slack()]) for i in range(7)])
    dispatcher = make_dispatcher(store, clock, channels, digest_max_items=3)
    dispatcher.drain()
    assert [len(n.items) for n in channels.sent] == [3, 3, 1]


def test_messages_to_one_channel_are_spaced_by_its_rate_limit(store, clock, channels):
    """Two groups for one Slack channel: the second waits 1 s (1 msg/s) instead of being sent at once."""
    store.record([(make_alert(run_id="r1"), [slack(group_key="g1")])])
    store.record([(make_alert(task_id="x", run_id="r2"), [slack(group_key="g2")])])
    dispatcher = make_dispatcher(store, clock, channels)
    report = dispatcher.run_once()
    assert report.messages_sent == 1 and report.deferred == 1
    assert dispatcher.run_once().messages_sent == 0
    clock.advance(1.0)
    assert dispatcher.run_once().messages_sent == 1


def test_429_retry_after_blocks_the_channel_for_that_long(store, clock, channels):
    """A 429 with Retry-After 30: nothing goes to that channel for 30 s, then the message is sent."""
    channels.failures["slack"] = [DeliveryError("429", retryable=True, retry_after_s=30)]
    store.record([(make_alert(), [slack()])])
    dispatcher = make_dispatcher(store, clock, channels)
    assert dispatcher.run_once().failed == 1
    store.record([(make_alert(task_id="other"), [slack(group_key="g2")])])
    clock.advance(29)
    assert dispatcher.run_once().messages_sent == 0
    assert channels.attempts == ["slack"]
    clock.advance(1)
    dispatcher.drain()
    assert len(channels.sent) == 2 and not any(s.kind == "resolve" for s in channels.sent)


def test_failed_delivery_backs_off_exponentially(store, clock, channels):
    """Retryable failures are retried 2 s, 4 s, 8 s apart (jitter off) until one succeeds."""
    channels.failures["slack"] = [DeliveryError("HTTP 500") for _ in range(3)]
    store.record([(make_alert(), [slack()])])
    dispatcher = make_dispatcher(store, clock, channels)
    start = clock.now
    attempts_at = []
    for _ in range(4):
        dispatcher.run_once()
        attempts_at.append((clock.now - start).total_seconds())
        due = store.next_due()
        if due is None:
            break
        clock.now = due
    assert attempts_at == [0.0, 2.0, 6.0, 14.0]
    assert len(channels.sent) == 1 and store.deliveries()[0]["attempts"] == 4


def test_backoff_has_jitter_and_a_ceiling():
    """Backoff grows exponentially with random jitter and never exceeds backoff_max_s + jitter."""
    dispatcher = Dispatcher.__new__(Dispatcher)
    dispatcher.settings = DispatcherSettings(backoff_initial_s=2, backoff_max_s=60, backoff_jitter_s=1)
    dispatcher.rng = random.Random(1)
    delays = [dispatcher.backoff_s(n) for n in range(1, 12)]
    assert all(2 * 2 ** (n - 1) <= d or d >= 60 for n, d in enumerate(delays, start=1))
    assert max(delays) <= 61 and len({round(d % 1, 6) for d in delays}) > 1


def test_delivery_failing_past_max_age_goes_to_fallback_and_flags_undelivered(store, clock, channels):
    """Slack down for longer than max_age: the alert goes to the fallback channel and is flagged undelivered."""
    channels.failures["slack"] = [DeliveryError("connection refused") for _ in range(100)]
    store.record([(make_alert(), [slack(fallback_channels=("email",))])])
    dispatcher = make_dispatcher(store, clock, channels, max_age_s=60)
    dispatcher.drain()
    alert = store.list_alerts()[0]
    assert alert["undelivered"] is True and "connection refused" in alert["last_error"]
    assert [n.kind for n in channels.to("email")] == ["alert"]
    states = {(d["channel"], d["state"]) for d in store.deliveries()}
    assert states == {("slack", "dead"), ("email", "sent")}


def test_non_retryable_failure_goes_to_fallback_at_once(store, clock, channels):
    """A 404 (bad webhook) is not retried: fallback immediately, alert flagged undelivered."""
    channels.failures["slack"] = [DeliveryError("HTTP 404 no_service", retryable=False)]
    store.record([(make_alert(), [slack(fallback_channels=("email",))])])
    dispatcher = make_dispatcher(store, clock, channels)
    report = dispatcher.run_once()
    assert report.dead == 1
    dispatcher.run_once()
    assert len(channels.to("email")) == 1 and channels.attempts.count("slack") == 1


def test_undeliverable_without_fallback_is_kept_and_flagged(store, clock, channels):
    """No fallback channel: the delivery is dead, the alert undelivered, nothing is deleted."""
    channels.failures["slack"] = [DeliveryError("bad token", retryable=False)]
    store.record([(make_alert(), [slack()])])
    make_dispatcher(store, clock, channels).run_once()
    assert store.list_alerts()[0]["undelivered"] is True
    assert store.deliveries()[0]["state"] == "dead"


def test_escalation_goes_to_escalation_channels_once(store, clock, channels):
    """Still open after escalate_after: one escalation message to the escalation channel, never again."""
    store.record([(make_alert(), [slack(escalate_after_s=1800, escalation_channels=("email",))])])
    dispatcher = make_dispatcher(store, clock, channels)
    dispatcher.run_once()
    clock.advance(1800)
    dispatcher.run_once()
    clock.advance(3600)
    dispatcher.run_once()
    assert [n.kind for n in channels.to("email")] == ["escalation"]


def test_resolved_alert_does_not_escalate(store, clock, channels):
    """An alert resolved before escalate_after is not escalated."""
    failure = make_alert()
    store.record([(failure, [slack(escalate_after_s=60, escalation_channels=("email",))])])
    dispatcher = make_dispatcher(store, clock, channels)
    dispatcher.run_once()
    store.record([(resolve_of(failure), ())])
    clock.advance(120)
    dispatcher.drain()
    assert channels.to("email") == []


def test_resolve_notice_goes_to_the_channels_that_got_the_alert(store, clock, channels):
    """After the alert went to Slack, its resolve goes to Slack as a resolve message (and not to email)."""
    failure = make_alert()
    store.record([(failure, [slack()])])
    dispatcher = make_dispatcher(store, clock, channels)
    dispatcher.run_once()
    clock.advance(10)
    store.record([(resolve_of(failure), ())])
    dispatcher.drain()
    assert [n.kind for n in channels.sent] == ["alert", "resolve"]
    assert channels.sent[1].items[0].status.value == "resolved"


def test_resolve_notice_waits_for_its_alert(store, clock, channels):
    """A retry resolved inside group_wait: the alert goes out first, then the resolve notice."""
    failure = make_alert(rule="task_retry", kind=AlertKind.RETRY)
    store.record([(failure, [slack(group_wait_s=30)])])
    clock.advance(5)
    store.record([(resolve_of(failure), ())])
    make_dispatcher(store, clock, channels).drain()
    assert [n.kind for n in channels.sent] == ["alert", "resolve"]


def test_two_dispatchers_never_send_a_delivery_twice(store, clock, channels):
    """Claims make concurrent dispatchers safe: each delivery is sent by exactly one of them."""
    for i in range(20):
        store.record([(make_alert(task_id=f"t{i}"), [slack(group_key=f"g{i}", channel=f"c{i}")])])
    first = make_dispatcher(store, clock, channels)
    second = make_dispatcher(store, clock, channels)
    first.run_once()
    second.run_once()
    assert len(channels.sent) == 20
    assert sorted(n.channel for n in channels.sent) == sorted(f"c{i}" for i in range(20))


def test_dispatchers_keep_a_channel_rate_limit_together(store, clock, channels):
    """One dispatcher per api-server worker: the second may not send to a channel the first just used (1 msg/s),
    and a 429's Retry-After seen by one holds the other back too."""
    store.record([(make_alert(run_id="r1"), [slack(group_key="g1")])])
    store.record([(make_alert(task_id="x", run_id="r2"), [slack(group_key="g2")])])
    first, second = make_dispatcher(store, clock, channels), make_dispatcher(store, clock, channels)
    assert first.run_once().messages_sent == 1  # the other group is handed back untried
    assert second.run_once().messages_sent == 0
    clock.advance(1.0)
    assert second.run_once().messages_sent == 1

    channels.failures["slack"] = [DeliveryError("429", retryable=True, retry_after_s=30)]
    store.record([(make_alert(task_id="y", run_id="r3"), [slack(group_key="g3")])])
    clock.advance(1.0)
    assert first.run_once().failed == 1
    store.record([(make_alert(task_id="z", run_id="r4"), [slack(group_key="g4")])])  # due at once
    clock.advance(29)
    held_back = second.run_once()
    assert held_back.messages_sent == 0 and held_back.deferred == 1
    clock.advance(1)
    second.drain()
    assert len(channels.sent) == 4


def test_unexpected_channel_error_is_retried_not_lost(store, clock, channels):
    """A bug in rendering (any exception) is a retryable failure, not a crash or a lost alert."""

    def broken_factory(name, channel_type, options):
        raise RuntimeError("template bug")

    store.record([(make_alert(), [slack()])])
    dispatcher = make_dispatcher(store, clock, channels)
    dispatcher.channel_factory = broken_factory
    report = dispatcher.run_once()
    assert report.failed == 1 and "template bug" in store.deliveries()[0]["last_error"]


def test_drain_sleeps_with_the_injected_sleep(store, clock, channels):
    """drain() waits for group_wait through the injected sleep (tests never sleep for real)."""
    store.record([(make_alert(), [slack(group_wait_s=300)])])
    start = clock.now
    make_dispatcher(store, clock, channels).drain()
    assert clock.now - start == timedelta(seconds=300) and len(channels.sent) == 1


@pytest.mark.parametrize(("retention_days", "kept"), [("30", 0), ("0", 1)])
def test_first_pass_applies_retention_days(store, clock, channels, monkeypatch, retention_days, kept):
    """The dispatcher prunes on its first pass (then hourly) by [tasklens] retention_days; 0 keeps everything."""
    from tasklens import config

    monkeypatch.setenv("AIRFLOW__TASKLENS__RETENTION_DAYS", retention_days)
    config.reset()
    alert = make_alert()
    store.record([(alert, [])])
    store.record([(resolve_of(alert), ())])
    clock.advance(40 * 86400)
    stop = threading.Event()
    try:
        make_dispatcher(store, clock, channels).run_forever(stop, interval_s=0.05, on_pass=stop.set)
    finally:
        config.reset()
    assert len(store.list_alerts()) == kept


class SlowChannels(FakeChannels):
    """Every send takes ``send_s`` of real time (a slow Slack), thread-safe."""

    def __init__(self, send_s: float) -> None:
        super().__init__()
        self.send_s = send_s
        self.lock = threading.Lock()

    def factory(self, name: str, channel_type: str, options: object) -> SlowChannels._SlowTarget:
        return SlowChannels._SlowTarget(self, name)

    class _SlowTarget:
        def __init__(self, owner: SlowChannels, name: str) -> None:
            self.owner, self.name = owner, name

        def send(self, notification: Notification, *, timeout_s: float | None = None) -> None:
            time.sleep(self.owner.send_s)
            with self.owner.lock:
                self.owner.sent.append(notification)


def run_dispatchers_until_drained(store: Store, dispatchers: list[Dispatcher], deadline_s: float = 60.0) -> None:
    """Each dispatcher passes in its own thread, back to back, until nothing is left to send."""
    errors: list[BaseException] = []

    def loop(dispatcher: Dispatcher) -> None:
        end = time.monotonic() + deadline_s
        try:
            while time.monotonic() < end and store.next_due() is not None:
                dispatcher.run_once()
                time.sleep(0.05)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert store.next_due() is None, "the outbox was not drained"


def real_clock_dispatcher(store: Store, channels: FakeChannels, worker: str) -> Dispatcher:
    return Dispatcher(
        store,
        settings=DispatcherSettings(lease_s=1.0, timeout_s=2.0, backoff_jitter_s=0.0),
        channel_config=lambda name: ChannelConfig(type="slack", options={}, rate_per_s=0.0),
        channel_factory=channels.factory,
        base_url="http://airflow",
        worker=worker,
    )


def test_a_lease_expiring_mid_pass_never_sends_a_message_twice(tmp_path):
    """Lease 1 s, sends of 1.5 s, two dispatchers on one store (real clocks): the first renews the lease of each
    message right before sending it, the second takes over the rest, and no message goes out twice."""
    store = Store(f"sqlite:///{tmp_path / 'lease.db'}")  # the real clock: leases on the database's clock
    try:
        for i in range(6):
            store.record([(make_alert(task_id=f"t{i}"), [slack(channel=f"c{i}", group_key=f"g{i}")])])
        channels = SlowChannels(send_s=1.5)
        first = real_clock_dispatcher(store, channels, "first")
        second = real_clock_dispatcher(store, channels, "second")
        run_dispatchers_until_drained(store, [first, second])
        sent_to = sorted(n.channel for n in channels.sent)
        assert sent_to == [f"c{i}" for i in range(6)], f"sent more than once: {sent_to}"
        assert {d["state"] for d in store.deliveries()} == {"sent"}
        assert first.totals.deliveries_sent + second.totals.deliveries_sent == 6
        # The second dispatcher took rows over from the first mid-pass (else this test proved nothing).
        assert first.totals.lost > 0 and second.totals.deliveries_sent > 0
    finally:
        store.dispose()


def test_resolve_is_not_sent_where_the_alert_itself_died(store, clock, channels):
    """Resolved inside group_wait, then Slack rejects the alert for good: Slack never gets a resolve notice for an
    alert it never showed; the notice is kept, not sent, and the alert is flagged undelivered."""
    failure = make_alert()
    store.record([(failure, [slack(group_wait_s=30)])])
    clock.advance(5)
    store.record([(resolve_of(failure), ())])
    channels.failures["slack"] = [DeliveryError("HTTP 404 no_service", retryable=False)]
    report = make_dispatcher(store, clock, channels).drain()
    assert channels.sent == [] and channels.attempts == ["slack"]
    assert report.dead == 1 and report.cancelled == 1
    states = [(d["kind"], d["state"]) for d in store.deliveries()]
    assert states == [("alert", "dead"), ("resolve", "dead")]
    assert "never reached" in store.deliveries()[1]["last_error"]


def test_fallback_channel_that_got_the_alert_gets_its_resolve(store, clock, channels):
    """Resolved while Slack still retried, then Slack rejects the alert for good: email (the fallback) gets the
    alert and then its resolve notice; Slack, which would accept the notice, gets neither."""
    failure = make_alert()
    store.record([(failure, [slack(fallback_channels=("email",))])])
    channels.failures["slack"] = [DeliveryError("HTTP 500"), DeliveryError("HTTP 404", retryable=False)]
    dispatcher = make_dispatcher(store, clock, channels)
    dispatcher.run_once()
    clock.advance(10)
    store.record([(resolve_of(failure), ())])
    dispatcher.drain()
    assert [n.kind for n in channels.to("email")] == ["alert", "resolve"]
    assert channels.to("slack") == []


def test_each_route_escalates_at_its_own_escalate_after(store, clock, channels):
    """Two routes of one alert escalate after 10 and 30 minutes: each at its own time, each once."""
    store.record([(make_alert(), [
        slack(route="team", escalate_after_s=600, escalation_channels=("email",)),
        slack(route="oncall", channel="ops", escalate_after_s=1800, escalation_channels=("pager",)),
    ])])
    dispatcher = make_dispatcher(store, clock, channels)
    dispatcher.run_once()
    clock.advance(600)
    dispatcher.run_once()
    assert [n.kind for n in channels.to("email")] == ["escalation"] and channels.to("pager") == []
    clock.advance(1200)
    dispatcher.run_once()
    clock.advance(3600)
    dispatcher.run_once()
    assert [n.kind for n in channels.to("email")] == ["escalation"]
    assert [n.kind for n in channels.to("pager")] == ["escalation"]


@pytest.mark.parametrize("retry_after", [float("inf"), 1e12, -5.0, float("nan")])
def test_any_retry_after_is_capped_and_the_outbox_keeps_flowing(store, clock, channels, retry_after):
    """A channel's Retry-After of inf, 1e12, -5 or NaN neither breaks the pass nor parks the channel: the wait is
    at most backoff_max_s and the message goes out after it."""
    channels.failures["slack"] = [DeliveryError("429", retryable=True, retry_after_s=retry_after)]
    store.record([(make_alert(), [slack()])])
    dispatcher = make_dispatcher(store, clock, channels, backoff_max_s=300)
    assert dispatcher.run_once().failed == 1
    (row,) = store.deliveries()
    assert row["claimed_by"] is None and row["next_attempt_at"] <= clock.now + timedelta(seconds=300)
    dispatcher.drain()
    assert len(channels.sent) == 1
