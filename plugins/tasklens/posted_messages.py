"""Where each alert's message went (migration 0007): the Slack channel id and ``ts`` a bot-token connection answered,
per alert and tasklens channel, so a later notice about the same alert changes that message instead of posting
another (its resolve; an acknowledgement, mute or resolve made in the UI, PagerDuty or Opsgenie).

Incoming webhooks answer no ``ts``: nothing is stored for them and their notices stay new posts. Rows go with their
alert (``ON DELETE CASCADE``, so ``retention_days`` prunes them too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa

from tasklens.alerts import PostedMessage
from tasklens.store import Store, alerts_table, metadata
from tasklens.store.schema import UTCDateTime

__all__ = ["message_among", "message_for", "messages_showing_only", "posted_messages_table", "remember"]

posted_messages_table = sa.Table(
    "tasklens_posted_messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.Integer, sa.ForeignKey("tasklens_alerts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("channel", sa.String(250), nullable=False),  # the rules file's channel name
    sa.Column("message_channel", sa.String(250), nullable=False),  # Slack's channel id (C0123...)
    sa.Column("message_ts", sa.String(64), nullable=False),
    sa.Column("posted_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("alert_id", "channel"),
    sa.Index(None, "channel", "message_ts"),
)

_CHUNK = 500  # bounded IN lists


def remember(store: Store, channel: str, alert_ids: Iterable[int], message: PostedMessage, *, at: datetime) -> None:
    """``channel``'s message ``message`` now shows ``alert_ids`` (each alert's latest message there wins)."""
    ids = sorted(set(alert_ids))
    if not ids:
        return
    p = posted_messages_table.c
    with store.engine.begin() as conn:
        existing = set(conn.execute(sa.select(alerts_table.c.id).where(alerts_table.c.id.in_(ids))).scalars())
        ids = [alert_id for alert_id in ids if alert_id in existing]  # pruned meanwhile: nothing to point at
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            conn.execute(posted_messages_table.delete().where(p.channel == channel, p.alert_id.in_(chunk)))
            conn.execute(posted_messages_table.insert(), [
                {"alert_id": alert_id, "channel": channel, "message_channel": message.channel,
                 "message_ts": message.ts, "posted_at": at} for alert_id in chunk
            ])


def message_for(store: Store, channel: str, alert_ids: Sequence[int]) -> PostedMessage | None:
    """The one message of ``channel`` that shows exactly ``alert_ids`` (and no other alert), or None: a notice about
    those alerts may then replace it without hiding anything about another alert."""
    ids = sorted(set(alert_ids))
    if not ids or len(ids) > _CHUNK:
        return None
    p = posted_messages_table.c
    with store.engine.execution_options(tasklens_read_only=True).begin() as conn:
        rows = conn.execute(
            sa.select(p.message_channel, p.message_ts).where(p.channel == channel, p.alert_id.in_(ids))).all()
        refs = {(row[0], row[1]) for row in rows}
        if len(rows) != len(ids) or len(refs) != 1:
            return None  # an alert without a message here, or the alerts are in several messages
        (message_channel, ts), = refs
        shown = conn.execute(sa.select(sa.func.count()).where(
            p.channel == channel, p.message_channel == message_channel, p.message_ts == ts)).scalar()
    return PostedMessage(message_channel, ts) if shown == len(ids) else None


def message_among(store: Store, channel: str, alert_ids: Sequence[int]) -> PostedMessage | None:
    """The earliest message of ``channel`` that shows only alerts of ``alert_ids`` (an incident's first message
    takes it over), or None."""
    wanted = set(alert_ids)
    p = posted_messages_table.c
    by_message: dict[tuple[str, str], list[int]] = {}
    with store.engine.execution_options(tasklens_read_only=True).begin() as conn:
        ids = sorted(wanted)
        for start in range(0, len(ids), _CHUNK):
            for row in conn.execute(sa.select(p.message_channel, p.message_ts, p.alert_id, p.posted_at)
                                    .where(p.channel == channel, p.alert_id.in_(ids[start : start + _CHUNK]))
                                    .order_by(p.posted_at, p.id)):
                by_message.setdefault((row[0], row[1]), []).append(row[2])
    for shown in by_message.values():
        message = message_for(store, channel, shown)
        if message is not None:
            return message
    return None


def messages_showing_only(store: Store, alert_id: int) -> list[tuple[str, PostedMessage]]:
    """``(channel, message)`` of every message that shows alert ``alert_id`` alone (not a digest or an incident)."""
    p = posted_messages_table.c
    other = posted_messages_table.alias("other")
    shared = (sa.select(other.c.id).where(other.c.channel == p.channel, other.c.message_ts == p.message_ts,
                                          other.c.message_channel == p.message_channel,
                                          other.c.alert_id != p.alert_id).exists())
    with store.engine.execution_options(tasklens_read_only=True).begin() as conn:
        rows = conn.execute(sa.select(p.channel, p.message_channel, p.message_ts)
                            .where(p.alert_id == alert_id, ~shared).order_by(p.channel)).all()
    return [(row[0], PostedMessage(row[1], row[2])) for row in rows]
