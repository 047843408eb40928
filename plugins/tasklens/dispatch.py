"""The dispatcher: drains the store's outbox to Slack and email.

One pass (:meth:`Dispatcher.run_once`):

1. queues escalations of alerts still open past their route's ``escalate_after``;
2. claims due deliveries (safe with several dispatchers: claims are leases in the store);
3. groups the claimed deliveries by (channel, message kind, group_key) into one message each (a digest when it
   holds several alerts; at most ``digest_max_items`` per message);
4. rate-limits per channel target (Slack: ``rate_limit_per_s`` of the channel, 1/s by default; a 429's
   ``Retry-After`` blocks that channel for that long) by handing deliveries back untried; the schedule is kept in
   the store, so all dispatchers together keep the rate;
5. sends; a retryable failure is retried with exponential backoff + jitter until ``max_age_s`` after the delivery
   was queued, then (or at once for a non-retryable failure) the delivery is dead: the alert is flagged
   ``undelivered`` with the last error and goes to the route's fallback channels. Nothing is dropped silently:
   dead deliveries stay in the store (``tasklens replay`` re-queues them).

Delivery is **at least once**. Claims are leases measured on the database's clock; right before each send the
dispatcher renews the lease of that message's rows for the send's timeout plus ``lease_s`` and skips rows another
dispatcher has taken meanwhile, and every mark (sent, failed, dead, released) writes only rows whose
``claimed_by`` is still this claim's token (rows it lost are counted in ``DispatchReport.lost`` and logged). So
dispatchers never send one message twice while they run. A dispatcher that dies between a channel's "accepted"
and its mark (SIGKILL, OOM, power loss) leaves its rows claimed: once the lease runs out another dispatcher sends
them again, so that message arrives at most once more. Email carries a stable ``Message-ID`` derived from the
deliveries (:attr:`~tasklens.alerts.Notification.idempotency_key`); Slack accepts no idempotency key.

``Retry-After`` (seconds or an HTTP-date) is honoured up to ``backoff_max_s`` (300 s by default): a larger, infinite
or unparseable value cannot park a channel or break a pass.

Runs in the api-server (:func:`start_background_dispatcher`, from the plugin app's lifespan) and as
``python -m tasklens dispatch``. Clock, sleep and randomness are injectable so tests never wait for real backoff.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import math
import random
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from tasklens import cascades, config, posted_messages
from tasklens.alerts import AlertSnapshot, Notification, PostedMessage
from tasklens.background import BackgroundLoop
from tasklens.channels import build_channel
from tasklens.channels import channel_type as registered
from tasklens.exceptions import DeliveryError
from tasklens.incident_dispatch import IncidentDispatch
from tasklens.redact import redact
from tasklens.routing import message_language
from tasklens.store import ClaimedDelivery, MarkResult, Store, get_store, worker_name

__all__ = [
    "ChannelConfig",
    "DispatchReport",
    "Dispatcher",
    "DispatcherSettings",
    "RateLimiter",
    "channel_config_from_ruleset",
    "dispatcher_state",
    "start_background_dispatcher",
    "stop_background_dispatcher",
]

log = logging.getLogger(__name__)

_MESSAGE_KIND = {"alert": "alert", "repeat": "alert", "escalation": "escalation", "resolve": "resolve", "ack": "ack"}


@dataclasses.dataclass(frozen=True)
class DispatcherSettings:
    """Timing knobs of the dispatcher (defaults from ``[tasklens]`` via :meth:`from_config`)."""

    claim_limit: int = 500
    lease_s: float = 120.0  # a claim's lease (database clock); renewed to the send timeout + this before each send
    max_age_s: float = 3600.0  # retry a delivery this long, then fall back
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 300.0  # also the cap on a Retry-After
    backoff_jitter_s: float = 1.0
    digest_max_items: int = 50
    default_rate_per_s: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"slack": 1.0, "email": 5.0}
    )
    timeout_s: float | None = None  # per network call; None = [tasklens] http_timeout_s

    @classmethod
    def from_config(cls) -> DispatcherSettings:
        return cls(max_age_s=config.delivery_max_age_s(), timeout_s=config.http_timeout_s())


@dataclasses.dataclass
class DispatchReport:
    """What one pass did."""

    messages_sent: int = 0
    deliveries_sent: int = 0
    failed: int = 0  # deliveries that failed and will be retried
    dead: int = 0  # deliveries given up on (fallback queued, alert flagged undelivered)
    deferred: int = 0  # handed back untried (rate limit, Retry-After, waiting for the alert before its resolve)
    escalations_queued: int = 0
    cancelled: int = 0  # resolve notices not sent: the alert itself never reached that channel
    lost: int = 0  # claimed rows another dispatcher took over (lease ran out) before this one sent or marked them
    errors: list[str] = dataclasses.field(default_factory=list)

    def merge(self, other: DispatchReport) -> None:
        for field in (
            "messages_sent", "deliveries_sent", "failed", "dead", "deferred", "escalations_queued", "cancelled",
            "lost",
        ):
            setattr(self, field, getattr(self, field) + getattr(other, field))
        self.errors.extend(other.errors)


class RateLimiter:
    """Per-channel spacing of messages, ``1 / rate`` seconds apart, and nothing before a 429's Retry-After.

    The schedule lives in the store, so every dispatcher (one per api-server worker, plus ``tasklens dispatch``)
    keeps the channel's rate together rather than each on its own.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def take(self, channel: str, now: datetime, rate_per_s: float) -> float:
        """0.0 when this dispatcher may send to ``channel`` now (slot taken), else seconds to wait."""
        interval_s = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        return self.store.take_send_slot(channel, now=now, interval_s=interval_s)

    def blocked_until(self, channel: str, until: datetime) -> None:
        self.store.block_channel(channel, until=until)


@dataclasses.dataclass(frozen=True)
class ChannelConfig:
    type: str
    options: Mapping[str, Any]
    rate_per_s: float | None = None


def channel_config_from_ruleset(name: str) -> ChannelConfig | None:
    """The rules file's settings of channel ``name`` (``None`` when it is not there or cannot be loaded)."""
    try:
        ruleset = config.ruleset()
    except Exception:
        log.warning("tasklens: could not load the rules file; channel %r uses its defaults", name, exc_info=True)
        return None
    channel = ruleset.channels.get(name)
    if channel is None:
        return None
    options = dataclasses.asdict(channel)
    rate = options.pop("rate_limit_per_s", None)
    channel_type = str(options.pop("type", None) or name)
    return ChannelConfig(type=channel_type, options=options, rate_per_s=float(rate) if rate is not None else None)


def message_language_from_ruleset(route: str, channel: str) -> tuple[str | None, str | None]:
    """``(locale, timezone)`` of messages for ``route`` to ``channel`` (:func:`tasklens.routing.message_language`);
    ``(None, None)``, plain English, when the rules file cannot be loaded."""
    try:
        return message_language(config.ruleset(), route, channel)
    except Exception:
        log.warning("tasklens: could not load the rules file; messages to %r are in English", channel, exc_info=True)
        return None, None


def _build_channel(name: str, channel_type: str, options: Mapping[str, Any]) -> Any:
    return build_channel(name, channel_type, options)


def _registered(channel_type: str) -> Any:
    """The registry's entry for ``channel_type`` (``None`` for a type nobody registered)."""

    return registered(channel_type)


class Dispatcher:
    """Drains the outbox of ``store``. ``clock`` returns aware UTC datetimes; ``sleep`` waits in real runs."""

    def __init__(
        self,
        store: Store,
        *,
        settings: DispatcherSettings | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        channel_config: Callable[[str], ChannelConfig | None] = channel_config_from_ruleset,
        channel_factory: Callable[[str, str, Mapping[str, Any]], Any] = _build_channel,
        message_language: Callable[[str, str], tuple[str | None, str | None]] = message_language_from_ruleset,
        base_url: str | None = None,
        worker: str | None = None,
        attribute_cascades: Callable[[tuple[AlertSnapshot, ...]], cascades.Attribution] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or DispatcherSettings()
        self.clock = clock or store.clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.channel_config = channel_config
        self.channel_factory = channel_factory
        self.message_language = message_language
        self.base_url = base_url
        self.worker = worker or worker_name()
        self.limiter = RateLimiter(store)
        self.incidents = IncidentDispatch(store)
        #: Adds what each failure stopped from running (``tasklens.cascades.attribute``; needs Airflow's DB).
        self.attribute_cascades = attribute_cascades
        self.totals = DispatchReport()
        # The first pass already prunes: api-servers may restart more often than hourly.
        self._last_prune = float("-inf")
        self.last_error_by_channel: dict[str, str] = {}

    # -- helpers ---------------------------------------------------------------------------------------------

    def _config(self, name: str, fallback_type: str) -> ChannelConfig:
        found = self.channel_config(name)
        return found if found is not None else ChannelConfig(type=fallback_type, options={})

    def _rate(self, name: str, cfg: ChannelConfig) -> float:
        if cfg.rate_per_s is not None:
            return cfg.rate_per_s
        return float(self.settings.default_rate_per_s.get(cfg.type, 0.0))

    def channel_type_of(self, name: str) -> str:
        """Type of channel ``name`` (rules file; a name like ``slack``/``email`` stands for its own type)."""
        return self._config(name, name if name in ("slack", "email") else "slack").type

    def backoff_s(self, attempts: int) -> float:
        """Exponential backoff with jitter after ``attempts`` failed attempts (1 -> ~initial)."""
        base = self.settings.backoff_initial_s * (2 ** max(0, attempts - 1))
        return min(self.settings.backoff_max_s, base) + self.rng.uniform(0, self.settings.backoff_jitter_s)

    def retry_after_s(self, error: DeliveryError) -> float | None:
        """The error's Retry-After capped at ``backoff_max_s``; ``None`` when it has none or it is not a number >= 0
        (channels registered by users may hand over anything)."""
        value = error.retry_after_s
        if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
            return None
        return min(float(value), self.settings.backoff_max_s)

    def _timeout_s(self) -> float:
        if self.settings.timeout_s is not None:
            return self.settings.timeout_s

        return config.http_timeout_s()

    def _base_url(self) -> str | None:
        if self.base_url is not None:
            return self.base_url
        try:
            return config.base_url()
        except Exception:
            return None

    def _lost(self, channel: str, result: MarkResult, what: str, report: DispatchReport) -> None:
        if not result.lost:
            return
        report.lost += len(result.lost)
        log.warning(
            "tasklens: deliveries %s to %r were taken over by another dispatcher (lease ran out) before this one %s "
            "them; left to it", list(result.lost), channel, what,
        )

    # -- one pass --------------------------------------------------------------------------------------------

    def run_once(self) -> DispatchReport:
        """Deliver everything that is due now. Raises only if the store is unreachable."""
        report = DispatchReport()
        now = self.clock()
        report.escalations_queued = len(self.store.queue_escalations(now=now, channel_types=self.channel_type_of))
        claimed = self.store.claim(self.worker, limit=self.settings.claim_limit, lease_s=self.settings.lease_s, now=now)
        self.incidents.prepare(claimed, now)
        groups: dict[tuple[str, str, str, str], list[ClaimedDelivery]] = collections.OrderedDict()
        for delivery in claimed:
            kind = _MESSAGE_KIND.get(delivery.kind, "alert")
            key = (delivery.channel, delivery.channel_type, kind,
                   self.incidents.group_key(delivery) or delivery.group_key)
            groups.setdefault(key, []).append(delivery)
        for (channel, channel_type, kind, _group), members in groups.items():
            try:
                spec = _registered(self._config(channel, channel_type).type)
                if kind == "ack" and not (spec and spec.mirrors_acknowledge):  # Slack, email: nothing to mirror
                    result = self.store.mark_cancelled([m.id for m in members], token=members[0].claim_token,
                                                       reason="this channel type does not mirror acknowledgements")
                    report.cancelled += len(result.marked)
                    continue
                if kind in ("resolve", "ack"):
                    members = self._resolves_ready(members, report)
                if not self._incident_message_due(channel, kind, members, report):
                    continue
                # Incident tools (PagerDuty, Opsgenie) take one event per alert, each retried on its own.
                one_each = bool(spec and spec.one_alert_per_message)
                limit = 1 if one_each else max(1, self.settings.digest_max_items)
                if not one_each and self.incidents.group_key(members[0]):
                    limit = len(members)  # one message per incident: it lists some members and counts the rest
                for start in range(0, len(members), limit):
                    self._send_group(channel, channel_type, kind, members[start : start + limit], report)
            except Exception as exc:  # a store hiccup on one group: hand the rows back, carry on with the others
                log.warning("tasklens: dispatching to %r failed: %s", channel, _redacted_traceback(exc))
                self._release_quietly(members, self.clock() + timedelta(seconds=self.backoff_s(1)))
        self.totals.merge(report)
        return report

    def _incident_message_due(self, channel: str, kind: str, members: list[ClaimedDelivery],
                              report: DispatchReport) -> bool:
        """False when an incident's message waits (its last update was too recent) or is folded into the
        incident's own resolve notice; ``members`` then changed hands already."""
        if not members or not self.incidents.group_key(members[0]):
            return bool(members)
        token = members[0].claim_token
        hold = self.incidents.hold_until(channel, members, self.clock())
        if hold is not None:
            result = self.store.release([m.id for m in members], token=token, next_attempt_at=hold)
            report.deferred += len(result.marked)
            return False
        if kind == "resolve":
            ready, folded = self.incidents.fold_resolves(members)
            if folded:
                result = self.store.mark_cancelled(folded, token=token,
                                                   reason="folded into its incident's resolve notice")
                report.cancelled += len(result.marked)
            return bool(ready)
        return True

    def _release_quietly(self, members: Sequence[ClaimedDelivery], at: datetime) -> None:
        try:
            self.store.release([m.id for m in members], token=members[0].claim_token, next_attempt_at=at)
        except Exception:
            log.warning("tasklens: could not hand deliveries back; their lease will run out", exc_info=True)

    def _resolves_ready(self, members: list[ClaimedDelivery], report: DispatchReport) -> list[ClaimedDelivery]:
        """A resolve notice waits until the alert it resolves has gone out on that channel, and is not sent at all
        when the alert never reached the channel (its delivery there died)."""
        ready = []
        for delivery in members:
            due = self.store.pending_delivery_before(delivery.alert_id, delivery.channel, delivery.id)
            if due is not None:
                later = max(due, self.clock()) + timedelta(seconds=1)
                result = self.store.release([delivery.id], token=delivery.claim_token, next_attempt_at=later)
                self._lost(delivery.channel, result, "deferred", report)
                report.deferred += len(result.marked)
            elif self.store.delivered_before(delivery.alert_id, delivery.channel, delivery.id):
                ready.append(delivery)
            else:
                result = self.store.mark_cancelled(
                    [delivery.id], token=delivery.claim_token,
                    reason="resolve notice not sent: the alert itself never reached this channel",
                )
                self._lost(delivery.channel, result, "cancelled", report)
                report.cancelled += len(result.marked)
        return ready

    def _send_group(
        self,
        channel: str,
        channel_type: str,
        kind: str,
        members: list[ClaimedDelivery],
        report: DispatchReport,
    ) -> None:
        if not members:
            return
        token = members[0].claim_token
        ids = [m.id for m in members]
        now = self.clock()
        cfg = self._config(channel, channel_type)
        wait = self.limiter.take(channel, now, self._rate(channel, cfg))
        if wait > 0:
            result = self.store.release(ids, token=token, next_attempt_at=now + timedelta(seconds=wait))
            self._lost(channel, result, "deferred", report)
            report.deferred += len(result.marked)
            return
        timeout = self._timeout_s()
        # An earlier message these notices may replace (Slack bot tokens): the incident's, or the alert's own.
        redraw = self.incidents.redraw(channel, members, self.settings.digest_max_items)
        replace = redraw[0] if redraw else self._own_message(channel, kind, members)
        try:
            snapshots = self.store.snapshots([m.alert_id for m in members] + (redraw[1] if redraw else []),
                                             base_url=self._base_url())
            target = self.channel_factory(channel, cfg.type or channel_type, cfg.options)
            # Right before the send: the lease must outlast it, and rows another dispatcher took are not ours to send.
            owned = set(self.store.renew(ids, token=token, lease_s=self.settings.lease_s + timeout))
            if len(owned) < len(members):
                self._lost(channel, MarkResult(lost=tuple(i for i in ids if i not in owned)), "sent", report)
                members = [m for m in members if m.id in owned]
                ids = [m.id for m in members]
                if not members:
                    return
            items = tuple(snapshots[m.alert_id] for m in members if m.alert_id in snapshots)
            # One alert stored twice in a group (a repeat next to the alert) is shown once.
            unique = tuple({item.id: item for item in items}.values())
            if redraw:  # the replaced message lists the incident's first members, not just the new ones
                unique = tuple(snapshots[i] for i in redraw[1] if i in snapshots) or unique
            if self.attribute_cascades is not None and kind == "alert":
                attribution = self.attribute_cascades(unique)
                waited_s = (now - min(m.created_at for m in members)).total_seconds()
                if not attribution.settled and waited_s < config.cascade_wait_s():
                    # The scheduler is still marking the failure's downstream upstream_failed: name them all.
                    result = self.store.release(ids, token=token, next_attempt_at=now + timedelta(seconds=1))
                    report.deferred += len(result.marked)
                    return
                unique = attribution.items
            message_kind = "digest" if kind == "alert" and len(unique) > 1 else kind
            incident = self.incidents.message_fields(channel, members, min(len(unique), self.settings.digest_max_items),
                                                     len(unique), redrawn=redraw is not None)
            if incident:
                unique = unique[: self.settings.digest_max_items]  # the rest are counted ("and 3,912 more")
            locale, zone = self.message_language(members[0].route, channel)  # one group = one route
            notification = Notification(
                kind=message_kind, channel=channel, items=unique, idempotency_key=idempotency_key(members),
                locale=locale, timezone=zone, replace=replace, **incident,
            )
            receipt = target.send(notification, timeout_s=timeout)
        except DeliveryError as exc:
            self._failed(channel, members, exc, report)
            return
        except Exception as exc:  # a rendering or configuration bug: keep the delivery, retry, then fall back
            log.warning("tasklens: delivery to %r failed unexpectedly: %s", channel, _redacted_traceback(exc))
            self._failed(channel, members, DeliveryError(f"{type(exc).__name__}: {exc}"), report)
            return
        result = self.store.mark_sent(ids, token=token, now=self.clock())
        self._lost(channel, result, "marked as sent", report)
        self.incidents.sent(channel, members, receipt)
        if isinstance(receipt, PostedMessage) and kind != "resolve":
            self._remember(channel, [item.id for item in unique], receipt)
        self.last_error_by_channel.pop(channel, None)
        report.messages_sent += 1
        report.deliveries_sent += len(ids)

    def _own_message(self, channel: str, kind: str, members: Sequence[ClaimedDelivery]) -> PostedMessage | None:
        """The message showing exactly the alerts a resolve notice is about, to update it in place (Slack bot
        tokens; None: post the notice)."""
        if kind != "resolve" or self.incidents.group_key(members[0]):
            return None
        try:
            return posted_messages.message_for(self.store, channel, [m.alert_id for m in members])
        except Exception:
            log.warning("tasklens: could not look up the message to update on %r; posting", channel, exc_info=True)
            return None

    def _remember(self, channel: str, alert_ids: list[int], message: PostedMessage) -> None:
        try:
            posted_messages.remember(self.store, channel, alert_ids, message, at=self.clock())
        except Exception:  # the message went out; only a later in-place update is lost (it posts instead)
            log.warning("tasklens: could not remember where the message to %r went", channel, exc_info=True)

    def _failed(
        self, channel: str, members: list[ClaimedDelivery], error: DeliveryError, report: DispatchReport
    ) -> None:
        now = self.clock()
        token = members[0].claim_token
        ids = [m.id for m in members]
        message = redact(str(error))  # DeliveryError redacts already; this also covers subclasses that do not
        self.last_error_by_channel[channel] = message
        report.errors.append(f"{channel}: {message}")
        retry_after = self.retry_after_s(error)
        if retry_after is not None:
            self.limiter.blocked_until(channel, now + timedelta(seconds=retry_after))
        oldest = min(m.created_at for m in members)
        age_s = (now - oldest).total_seconds()
        if error.retryable and age_s < self.settings.max_age_s:
            attempts = max(m.attempts for m in members) + 1
            delay = max(self.backoff_s(attempts), retry_after or 0.0)
            result = self.store.mark_failed(
                ids, token=token, error=message, next_attempt_at=now + timedelta(seconds=delay), now=now
            )
            self._lost(channel, result, "marked as failed", report)
            report.failed += len(result.marked)
            log.warning("tasklens: delivery to %r failed (attempt %d, retry in %.1fs): %s", channel, attempts,
                        delay, message)
            return
        fallback: list[tuple[str, str]] = []
        for member in members:
            for name in member.fallback_channels:
                if name != channel and all(name != f for f, _ in fallback):
                    fallback.append((name, self.channel_type_of(name)))
        why = "not retryable" if not error.retryable else f"still failing after {age_s:.0f}s"
        result = self.store.mark_dead(ids, token=token, error=f"{message} ({why})", fallback=fallback, now=now)
        self._lost(channel, result, "marked as dead", report)
        report.dead += len(result.marked)
        log.error(
            "tasklens: giving up on %d deliveries to %r (%s); alerts flagged undelivered%s: %s",
            len(result.marked), channel, why, f", sent to fallback {[f for f, _ in fallback]}" if fallback else "",
            message,
        )

    # -- loops -----------------------------------------------------------------------------------------------

    def drain(self, *, max_passes: int = 1000, until_idle: bool = True) -> DispatchReport:
        """Run passes until nothing is due any more (sleeping with ``sleep`` until the next due time)."""
        total = DispatchReport()
        for _ in range(max_passes):
            report = self.run_once()
            total.merge(report)
            next_due = self.store.next_due()
            if next_due is None or not until_idle:
                break
            wait = (next_due - self.clock()).total_seconds()
            if wait > 0:
                self.sleep(wait)
        return total

    def run_forever(
        self, stop: threading.Event, *, interval_s: float, on_pass: Callable[[], None] | None = None
    ) -> None:
        """Pass after pass until ``stop`` is set; never raises (errors are logged and retried next pass)."""
        while not stop.is_set():
            stop.wait(self.background_pass(interval_s=interval_s, on_pass=on_pass))

    def background_pass(self, *, interval_s: float, on_pass: Callable[[], None] | None = None) -> float:
        """One pass of the background loop, then ``on_pass``; returns the seconds until the next pass is due (at
        most ``interval_s``: sooner when a delivery comes due). Never raises."""
        wait = interval_s
        try:
            self.run_once()
            _STATE["last_pass_at"] = _iso(self.clock())
            _STATE["last_pass_error"] = None
            next_due = self.store.next_due()
            if next_due is not None:
                wait = min(interval_s, max(0.05, (next_due - self.clock()).total_seconds()))
            if time.monotonic() - self._last_prune > 3600:
                self._last_prune = time.monotonic()
                self._housekeeping()
        except Exception as exc:
            _STATE["last_pass_error"] = f"{type(exc).__name__}: {exc}"
            log.warning("tasklens dispatcher pass failed; retrying in %.1fs", interval_s, exc_info=True)
        if on_pass is not None:
            on_pass()
        return wait

    def _housekeeping(self) -> None:
        days = config.retention_days()
        removed = self.store.prune(older_than=timedelta(days=days)) if days > 0 else 0
        self.store.optimize()
        if removed:
            log.info("tasklens store: removed %d rows older than %g days (retention_days)", removed, days)


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat()


def idempotency_key(members: Sequence[ClaimedDelivery]) -> str:
    """A message's key, the same on every send of the same deliveries (by any dispatcher): their ids and when each
    was queued (which keeps keys of different stores apart)."""
    parts = sorted(f"{m.id}@{_iso(m.created_at)}" for m in members)
    return hashlib.sha256(",".join(parts).encode()).hexdigest()[:32]


def _redacted_traceback(exc: BaseException) -> str:
    """A traceback for the log without URLs' paths or tokens (library errors quote the webhook URL)."""
    return redact("".join(traceback.format_exception(exc)).rstrip())


# -- the background dispatcher of the api-server ----------------------------------------------------------------

_STATE: dict[str, Any] = {"running": False, "last_pass_at": None, "last_pass_error": None, "worker": None}
_loop: BackgroundLoop | None = None
_dispatcher: Dispatcher | None = None
_lock = threading.Lock()


def start_background_dispatcher(
    store: Store | None = None, *, interval_s: float | None = None, on_pass: Callable[[], None] | None = None
) -> bool:
    """Start the dispatcher thread of this process (idempotent). Returns True when it is running.

    ``on_pass`` runs after every pass (the api-server ingests the spool there)."""
    global _loop, _dispatcher
    with _lock:
        if _loop is not None and _loop.running:
            return True

        try:
            store = store or get_store()
            settings = DispatcherSettings.from_config()
            interval = interval_s if interval_s is not None else config.dispatch_interval_s()
        except Exception:
            log.warning("tasklens: the dispatcher could not start (store or configuration)", exc_info=True)
            _STATE["last_pass_error"] = "could not start; see the api-server log"  # noqa: S105 - not a secret
            return False
        dispatcher = _dispatcher = Dispatcher(store, settings=settings, attribute_cascades=cascades.attribute)
        _loop = BackgroundLoop(
            "tasklens-dispatcher", lambda: dispatcher.background_pass(interval_s=interval, on_pass=on_pass),
            interval_s=interval,
        )
        _STATE.update(running=True, worker=dispatcher.worker)
        _loop.start()
        return True


def stop_background_dispatcher(timeout_s: float = 10.0) -> None:
    """Stop the dispatcher thread (waits up to ``timeout_s`` for the current pass)."""
    global _loop
    with _lock:
        if _loop is not None:
            _loop.stop(timeout_s)
        _loop = None
        _STATE["running"] = False


def dispatcher_state() -> dict[str, Any]:
    """The background dispatcher's state, for health checks (no alert content)."""
    state = dict(_STATE)
    state["running"] = bool(_loop is not None and _loop.running)
    if _dispatcher is not None:
        state["messages_sent"] = _dispatcher.totals.messages_sent
        state["last_error_by_channel"] = dict(_dispatcher.last_error_by_channel)
    return state
