"""The outbox, the dispatcher's side of the store: queueing deliveries, claims with leases on the database clock,
marks that touch only rows a claim still owns, channel send slots (rate limits shared by every dispatcher),
escalation and replay."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasklens.alerts import Delivery, Status
from tasklens.exceptions import StoreError
from tasklens.store.engine import StoreEngine
from tasklens.store.rows import delivery_from_json, fitted_delivery, parse_ts
from tasklens.store.schema import MAX_ERROR, alerts_table, channel_slots_table, deliveries_table
from tasklens.text import bounded as _bounded

__all__ = ["ClaimedDelivery", "MarkResult", "Outbox", "has_delivery", "queue_delivery"]


@dataclasses.dataclass(frozen=True)
class ClaimedDelivery:
    """An outbox row claimed by one dispatcher until ``claimed_until``; ``claim_token`` proves the claim (every
    mark and renewal checks that the row's ``claimed_by`` is still this token)."""

    id: int
    alert_id: int
    kind: str
    route: str
    channel: str
    channel_type: str
    group_key: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    fallback_channels: tuple[str, ...]
    claim_token: str


@dataclasses.dataclass(frozen=True)
class MarkResult:
    """What a mark (sent, failed, dead, cancelled) or a release wrote: ``marked`` rows were still this claim's;
    ``lost`` rows were not (their lease ran out and another dispatcher claimed them) and were left untouched."""

    marked: tuple[int, ...] = ()
    lost: tuple[int, ...] = ()
    queued: tuple[int, ...] = ()  # mark_dead: deliveries queued to fallback channels


def queue_delivery(
    conn: Connection,
    alert_id: int,
    kind: str,
    delivery: Delivery,
    now: datetime,
    *,
    not_before: datetime | None = None,
) -> int:
    """Add one outbox row. A fresh row joins the pending batch of its (channel, group_key) if one is waiting."""
    delivery = fitted_delivery(delivery)
    due = now + timedelta(seconds=max(0.0, delivery.group_wait_s))
    if delivery.group_wait_s > 0:
        waiting = conn.execute(
            sa.select(sa.func.min(deliveries_table.c.next_attempt_at)).where(
                deliveries_table.c.channel == delivery.channel,
                deliveries_table.c.group_key == delivery.group_key,
                deliveries_table.c.kind == kind,
                deliveries_table.c.state == "pending",
                deliveries_table.c.attempts == 0,
                deliveries_table.c.next_attempt_at > now,
            )
        ).scalar()
        if waiting is not None:
            due = min(due, waiting)
    if not_before is not None:
        due = max(due, not_before)
    return int(
        conn.execute(
            deliveries_table.insert().values(
                alert_id=alert_id,
                kind=kind,
                route=delivery.route,
                channel=delivery.channel,
                channel_type=delivery.channel_type,
                group_key=delivery.group_key,
                state="pending",
                attempts=0,
                created_at=now,
                next_attempt_at=due,
                fallback_channels=list(delivery.fallback_channels),
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    )


def has_delivery(conn: Connection, alert_id: int, channel: str, kind: str) -> bool:
    """Whether ``alert_id`` has a ``kind`` message to ``channel`` in the outbox, whatever its state."""
    d = deliveries_table.c
    query = sa.select(d.id).where(d.alert_id == alert_id, d.channel == channel, d.kind == kind).limit(1)
    return conn.execute(query).first() is not None


class Outbox(StoreEngine):
    """The outbox's operations on :class:`~tasklens.store.Store` (the dispatcher calls them)."""

    # -- channel send slots (rate limits shared by every dispatcher) ----------------------------------------------

    def take_send_slot(self, channel: str, *, now: datetime, interval_s: float) -> float:
        """Take ``channel``'s send slot: 0.0 when it is free now (the next one opens ``interval_s`` later), else the
        seconds until it opens (nothing taken). Atomic across processes, so dispatchers together keep the rate."""
        slot = channel_slots_table.c
        with self._write() as conn:
            self._insert(conn, channel_slots_table, {"channel": channel, "next_allowed_at": now})
            query = sa.select(slot.next_allowed_at).where(slot.channel == channel)
            if self.dialect == "postgresql":
                query = query.with_for_update()
            allowed = conn.execute(query).scalar_one()
            if allowed > now:
                return (allowed - now).total_seconds()
            conn.execute(
                channel_slots_table.update()
                .where(slot.channel == channel)
                .values(next_allowed_at=now + timedelta(seconds=max(0.0, interval_s)))
            )
            return 0.0

    def block_channel(self, channel: str, *, until: datetime) -> None:
        """No dispatcher sends to ``channel`` before ``until`` (a 429's Retry-After); never moves a block earlier."""
        slot = channel_slots_table.c
        with self._write() as conn:
            self._insert(conn, channel_slots_table, {"channel": channel, "next_allowed_at": until})
            conn.execute(
                channel_slots_table.update()
                .where(slot.channel == channel, slot.next_allowed_at < until)
                .values(next_allowed_at=until)
            )

    def claim(
        self, worker: str, *, limit: int = 200, lease_s: float = 60.0, now: datetime | None = None,
        ids: Sequence[int] | None = None,
    ) -> list[ClaimedDelivery]:
        """Claim deliveries due at ``now`` for ``worker``, leased for ``lease_s`` on the database's clock; other
        dispatchers skip them meanwhile. Each call has its own claim token (:attr:`ClaimedDelivery.claim_token`).

        PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED``; SQLite: one atomic UPDATE under the write lock.
        """
        now = now or self.clock()
        d = deliveries_table.c
        token = f"{worker}#{uuid.uuid4().hex[:12]}"
        try:
            with self._write() as conn:
                lease_now = self._lease_now(conn)
                until = lease_now + timedelta(seconds=lease_s)
                due = sa.and_(
                    d.state.in_(("pending", "failed")),
                    d.next_attempt_at <= now,
                    sa.or_(d.claimed_until.is_(None), d.claimed_until < lease_now),
                )
                if ids is not None:
                    due = sa.and_(due, d.id.in_(list(ids)))
                candidates = sa.select(d.id).where(due).order_by(d.next_attempt_at, d.id).limit(limit)
                if self.dialect == "postgresql":
                    claimed_ids = list(conn.execute(candidates.with_for_update(skip_locked=True)).scalars())
                    if not claimed_ids:
                        return []
                    conn.execute(
                        deliveries_table.update()
                        .where(d.id.in_(claimed_ids))
                        .values(claimed_by=token, claimed_until=until)
                    )
                else:
                    conn.execute(
                        deliveries_table.update()
                        .where(d.id.in_(candidates.scalar_subquery()))
                        .values(claimed_by=token, claimed_until=until)
                    )
                rows = conn.execute(
                    sa.select(deliveries_table).where(d.claimed_by == token).order_by(d.id)
                ).mappings().all()
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"could not claim from the tasklens outbox: {exc}") from exc
        return [
            ClaimedDelivery(
                id=r["id"],
                alert_id=r["alert_id"],
                kind=r["kind"],
                route=r["route"],
                channel=r["channel"],
                channel_type=r["channel_type"],
                group_key=r["group_key"],
                attempts=r["attempts"],
                created_at=r["created_at"],
                next_attempt_at=r["next_attempt_at"],
                fallback_channels=tuple(r["fallback_channels"] or ()),
                claim_token=token,
            )
            for r in rows
        ]

    def _owned(self, conn: Connection, ids: Sequence[int], token: str) -> list[int]:
        """The rows of ``ids`` still claimed with ``token`` (locked until the transaction ends on PostgreSQL)."""
        d = deliveries_table.c
        query = sa.select(d.id).where(d.id.in_(list(ids)), d.claimed_by == token).order_by(d.id)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        return list(conn.execute(query).scalars())

    @staticmethod
    def _result(ids: Sequence[int], owned: Sequence[int], queued: Sequence[int] = ()) -> MarkResult:
        mine = set(owned)
        return MarkResult(
            marked=tuple(owned), lost=tuple(i for i in ids if i not in mine), queued=tuple(queued)
        )

    def renew(self, ids: Sequence[int], *, token: str, lease_s: float) -> list[int]:
        """Extend the lease of the rows of ``ids`` still claimed with ``token`` to ``lease_s`` from now (database
        clock). Returns those rows: the dispatcher sends only them, since another one owns the rest."""
        if not ids:
            return []
        with self._write() as conn:
            owned = self._owned(conn, ids, token)
            if owned:
                until = self._lease_now(conn) + timedelta(seconds=lease_s)
                conn.execute(
                    deliveries_table.update().where(deliveries_table.c.id.in_(owned)).values(claimed_until=until)
                )
        return owned

    def release(self, ids: Sequence[int], *, token: str, next_attempt_at: datetime) -> MarkResult:
        """Give claimed deliveries back untried (rate limit, ordering): no attempt is counted."""
        return self._update_owned(ids, token, claimed_by=None, claimed_until=None, next_attempt_at=next_attempt_at)

    def _update_owned(self, ids: Sequence[int], token: str, **values: Any) -> MarkResult:
        """Set ``values`` on the rows of ``ids`` this dispatcher (``token``) still owns; others are reported lost."""
        if not ids:
            return MarkResult()
        with self._write() as conn:
            owned = self._owned(conn, ids, token)
            if owned:
                conn.execute(deliveries_table.update().where(deliveries_table.c.id.in_(owned)).values(**values))
        return self._result(ids, owned)

    def _end_attempt(
        self, conn: Connection, ids: Sequence[int], token: str, now: datetime, **values: Any
    ) -> MarkResult:
        """Record one delivery attempt of the rows ``token`` still owns and release the claim on them."""
        owned = self._owned(conn, ids, token)
        if owned:
            conn.execute(
                deliveries_table.update()
                .where(deliveries_table.c.id.in_(owned))
                .values(
                    last_attempt_at=now,
                    attempts=deliveries_table.c.attempts + 1,
                    claimed_by=None,
                    claimed_until=None,
                    **values,
                )
            )
        return self._result(ids, owned)

    def mark_sent(self, ids: Sequence[int], *, token: str, now: datetime | None = None) -> MarkResult:
        """These deliveries went out (as one message)."""
        if not ids:
            return MarkResult()
        now = now or self.clock()
        batch = uuid.uuid4().hex
        with self._write() as conn:
            return self._end_attempt(conn, ids, token, now, state="sent", sent_at=now, batch_id=batch)

    def mark_failed(
        self, ids: Sequence[int], *, token: str, error: str, next_attempt_at: datetime, now: datetime | None = None
    ) -> MarkResult:
        """A retryable failure: try again at ``next_attempt_at``."""
        if not ids:
            return MarkResult()
        now = now or self.clock()
        with self._write() as conn:
            return self._end_attempt(
                conn, ids, token, now, state="failed", last_error=_bounded(error, MAX_ERROR),
                next_attempt_at=next_attempt_at,
            )

    def mark_cancelled(
        self, ids: Sequence[int], *, token: str, reason: str, now: datetime | None = None
    ) -> MarkResult:
        """Never send these deliveries (a resolve notice for an alert that never reached its channel). They are
        kept as ``dead`` with ``reason``, the alert is not flagged, and ``tasklens replay`` brings them back with
        the alert's own dead delivery."""
        return self._update_owned(ids, token, state="dead", last_error=_bounded(reason, MAX_ERROR), claimed_by=None,
                                  claimed_until=None)

    def mark_dead(
        self,
        ids: Sequence[int],
        *,
        token: str,
        error: str,
        fallback: Sequence[tuple[str, str]] = (),
        now: datetime | None = None,
    ) -> MarkResult:
        """Give up on these deliveries: flag their alerts undelivered and queue them to ``fallback`` channels
        (``(name, type)`` pairs; channels that already had them are skipped). A fallback channel that gets an
        alert already resolved gets its resolve notice too; a resolve notice itself has no fallback (it goes only
        where the alert went). ``MarkResult.queued`` holds the new delivery ids."""
        if not ids:
            return MarkResult()
        now = now or self.clock()
        error = _bounded(error, MAX_ERROR) or "unknown error"
        d = deliveries_table.c
        queued: list[int] = []
        with self._write() as conn:
            ended = self._end_attempt(conn, ids, token, now, state="dead", last_error=error)
            if not ended.marked:
                return ended
            rows = conn.execute(
                sa.select(deliveries_table).where(d.id.in_(ended.marked)).order_by(d.id)
            ).mappings().all()
            alert_ids = sorted({r["alert_id"] for r in rows})
            conn.execute(
                alerts_table.update()
                .where(alerts_table.c.id.in_(alert_ids))
                .values(undelivered=True, last_error=f"{rows[0]['channel']}: {error}")
            )
            resolved = set(
                conn.execute(
                    sa.select(alerts_table.c.id).where(
                        alerts_table.c.id.in_(alert_ids), alerts_table.c.status == Status.RESOLVED.value
                    )
                ).scalars()
            )
            for row in rows:
                if row["kind"] == "resolve":
                    continue
                for name, channel_type in fallback:
                    if name == row["channel"] or has_delivery(conn, row["alert_id"], name, row["kind"]):
                        continue
                    delivery = Delivery(
                        route=row["route"], channel=name, channel_type=channel_type, group_key=row["group_key"]
                    )
                    queued.append(queue_delivery(conn, row["alert_id"], row["kind"], delivery, now))
                    if row["alert_id"] in resolved and not has_delivery(
                        conn, row["alert_id"], name, "resolve"
                    ):
                        queued.append(queue_delivery(conn, row["alert_id"], "resolve", delivery, now))
        return dataclasses.replace(ended, queued=tuple(queued))

    def pending_delivery_before(self, alert_id: int, channel: str, delivery_id: int) -> datetime | None:
        """When an earlier, unsent message of ``alert_id`` to ``channel`` is due (resolve notices wait for it)."""
        d = deliveries_table.c
        with self._read() as conn:
            return conn.execute(
                sa.select(sa.func.max(d.next_attempt_at)).where(
                    d.alert_id == alert_id,
                    d.channel == channel,
                    d.id < delivery_id,
                    d.kind != "resolve",
                    d.state.in_(("pending", "failed")),
                )
            ).scalar()

    def delivered_before(self, alert_id: int, channel: str, delivery_id: int) -> bool:
        """Whether an earlier message of ``alert_id`` (not a resolve notice) went out to ``channel``."""
        d = deliveries_table.c
        query = sa.select(d.id).where(
            d.alert_id == alert_id, d.channel == channel, d.id < delivery_id, d.kind != "resolve", d.state == "sent"
        )
        with self._read() as conn:
            return conn.execute(query.limit(1)).first() is not None

    def queue_escalations(
        self, *, now: datetime | None = None, channel_types: Callable[[str], str] | None = None
    ) -> list[int]:
        """Alerts still open past a route's ``escalate_after`` go to that route's escalation channels, once per
        channel; each route escalates at its own time.

        Safe with several dispatchers: each due alert is taken by one of them (``FOR UPDATE SKIP LOCKED`` on
        PostgreSQL, the write lock on SQLite) and its update is conditional on it being still due and unchanged.
        """
        now = now or self.clock()
        a, d = alerts_table.c, deliveries_table.c
        queued: list[int] = []
        with self._write() as conn:
            query = (
                sa.select(a.id, a.routes, a.first_seen, a.escalate_at)
                .where(a.status == Status.OPEN.value, a.escalate_at <= now, a.escalated_at.is_(None))
                .order_by(a.id)
            )
            if self.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            for row in conn.execute(query).mappings().all():
                escalated = set(
                    conn.execute(sa.select(d.channel).where(d.alert_id == row["id"], d.kind == "escalation")).scalars()
                )
                due: list[Delivery] = []
                later: list[datetime] = []
                for stored in row["routes"] or ():
                    route = delivery_from_json(stored)
                    if route.escalate_after_s is None or set(route.escalation_channels) <= escalated:
                        continue
                    # A route the alert joined later (its severity rose) counts from then.
                    since = parse_ts(stored.get("since")) or row["first_seen"]
                    at = since + timedelta(seconds=route.escalate_after_s)
                    if at <= now:
                        due.append(route)
                    else:
                        later.append(at)
                next_at = min(later, default=None)
                taken = conn.execute(
                    alerts_table.update()
                    .where(a.id == row["id"], a.escalated_at.is_(None), a.escalate_at == row["escalate_at"])
                    .values(escalate_at=next_at or row["escalate_at"], escalated_at=None if next_at else now)
                ).rowcount
                if not taken:  # another dispatcher escalated it first
                    continue
                for route in due:
                    for name in route.escalation_channels:
                        if name in escalated:
                            continue
                        escalated.add(name)
                        delivery = Delivery(
                            route=route.route,
                            channel=name,
                            channel_type=channel_types(name) if channel_types else route.channel_type,
                            group_key=f"escalation:{row['id']}",
                            fallback_channels=route.fallback_channels,
                        )
                        queued.append(queue_delivery(conn, row["id"], "escalation", delivery, now))
        return queued

    def replay(self, *, now: datetime | None = None) -> int:
        """Re-queue every dead delivery and clear the undelivered flags. Returns how many were re-queued."""
        now = now or self.clock()
        d = deliveries_table.c
        with self._write() as conn:
            alert_ids = list(conn.execute(sa.select(d.alert_id).where(d.state == "dead").distinct()).scalars())
            count = conn.execute(
                deliveries_table.update()
                .where(d.state == "dead")
                .values(state="pending", attempts=0, created_at=now, next_attempt_at=now, claimed_by=None,
                        claimed_until=None)
            ).rowcount
            if alert_ids:
                conn.execute(
                    alerts_table.update().where(alerts_table.c.id.in_(alert_ids)).values(undelivered=False)
                )
        return int(count)
