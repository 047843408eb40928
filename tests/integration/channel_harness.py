"""A real outbox (SQLite store on a fake clock) and the real Dispatcher, with channels configured as the rules file
would, for the channel tests: alerts go in through ``Store.record`` and out through ``Dispatcher.run_once``."""

from __future__ import annotations

import random
from typing import Any

import sqlalchemy as sa

from tasklens.channels import mirrors_acknowledge
from tasklens.dispatch import ChannelConfig, Dispatcher, DispatcherSettings
from tasklens.store import Store, alerts_table, deliveries_table
from tests.unit.tasklens.test_store import FakeClock, make_alert, slack

__all__ = ["Outbox"]


class Outbox:
    """``configs``: channel name -> (type, options). Alerts are routed with :meth:`raise_alert`."""

    def __init__(self, tmp_path: Any, configs: dict[str, tuple[str, dict[str, Any]]]) -> None:
        self.clock = FakeClock()
        self.store = Store(f"sqlite:///{tmp_path / 'tasklens.db'}", clock=self.clock)
        self.configs = {name: ChannelConfig(kind, options) for name, (kind, options) in configs.items()}

    def close(self) -> None:
        self.store.dispose()

    def dispatcher(self, **settings: Any) -> Dispatcher:
        values: dict[str, Any] = {"backoff_jitter_s": 0.0, "max_age_s": 600.0, "timeout_s": 5.0}
        values.update(settings)
        return Dispatcher(
            self.store, settings=DispatcherSettings(**values), clock=self.clock, sleep=self.clock.advance,
            rng=random.Random(0), channel_config=self.configs.get, base_url="http://airflow.example",
        )

    def raise_alert(self, channel: str, *, fallback: tuple[str, ...] = (), group_key: str = "g", **alert: Any):
        """Record one alert routed to ``channel`` (``fallback`` channels when it dies); returns the Alert."""
        made = make_alert(**alert)
        delivery = slack(channel=channel, channel_type=self.configs[channel].type, group_key=group_key,
                         fallback_channels=fallback)
        self.store.record([(made, [delivery])])
        return made

    def states(self, channel: str) -> list[str]:
        return [d["state"] for d in self.store.deliveries() if d["channel"] == channel]

    def acknowledge(self, alert_id: int) -> bool:
        """What the UI's Acknowledge does: the store queues an ``ack`` to each channel that got the alert and whose
        type mirrors acknowledgements."""
        return self.store.acknowledge(alert_id, by="on-call", mirror_to=mirrors_acknowledge)

    def queue_ack(self, alert_id: int, channel: str) -> None:
        """An ``ack`` delivery put straight into the outbox (for a channel type the store would not send one to)."""
        now = self.clock()
        with self.store.engine.begin() as conn:
            conn.execute(deliveries_table.insert().values(
                alert_id=alert_id, channel=channel, channel_type=self.configs[channel].type, kind="ack",
                route="default", group_key="ack", state="pending", attempts=0, next_attempt_at=now, created_at=now,
            ))

    def alert_id(self) -> int:
        with self.store.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.min(alerts_table.c.id))).scalar())
