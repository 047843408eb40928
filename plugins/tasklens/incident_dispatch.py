"""What the dispatcher does with incidents: one message per incident and channel, later members as updates, one
resolve when every member resolved.

With a Slack bot-token connection the incident has one message per channel and everything after it changes that
message in place (``chat.update``: member count, DAGs, first/latest, the first members listed and "and N more", then
its resolved state); its first message even takes over the message a member already got on its own. Channels that
cannot update (incoming webhooks, email) get short follow-ups, at most one per ``incident_update_interval_s``, and
one resolve notice.

The dispatcher calls :meth:`IncidentDispatch.prepare` with what it claimed, groups deliveries by
:meth:`IncidentDispatch.group_key` instead of their route's key when they belong to an incident, and asks for the
message's incident fields before it sends. An error here never stops a delivery: the alerts then go out as they
would without incidents (logged, counted in ``tasklens.errors{stage="incidents"}``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from tasklens import config, incident_store, metrics, posted_messages
from tasklens._once import WarnOnce
from tasklens.alerts import PostedMessage
from tasklens.incident_store import Incident
from tasklens.store import ClaimedDelivery, Store

__all__ = ["IncidentDispatch"]

log = logging.getLogger(__name__)
_warnings = WarnOnce(log)
#: Outbox kinds that are an incident's messages (repeats and escalations stay per alert).
_INCIDENT_DELIVERIES = frozenset({"alert", "resolve"})


class IncidentDispatch:
    """Incident state of one dispatch pass. ``window_s`` / ``update_interval_s`` default to ``[tasklens]``."""

    def __init__(self, store: Store, *, window_s: float | None = None, update_interval_s: float | None = None):
        self.store = store
        self.window_s = window_s
        self.update_interval_s = update_interval_s
        self.by_alert: dict[int, Incident] = {}

    def _guard(self, what: str, error: Exception) -> None:
        if _warnings.first(what):
            log.warning("tasklens: incidents (%s) failed; alerts go out on their own", what, exc_info=error)
        try:
            metrics.count_error("incidents")
        except Exception:  # noqa: S110 - counting must not raise either
            pass

    def prepare(self, claimed: Sequence[ClaimedDelivery], now: datetime) -> None:
        """Correlate the new failure alerts among ``claimed`` and look up the incidents of the resolved ones."""
        self.by_alert = {}
        try:
            window = config.incident_window_s() if self.window_s is None else self.window_s
            if window <= 0:
                return
            new = [d.alert_id for d in claimed if d.kind == "alert"]
            resolved = [d.alert_id for d in claimed if d.kind == "resolve"]
            self.by_alert = incident_store.correlate(self.store, new, window_s=window, now=now)
            self.by_alert.update(incident_store.incidents_of(self.store, resolved))
        except Exception as exc:
            self.by_alert = {}
            self._guard("correlation", exc)

    def group_key(self, delivery: ClaimedDelivery) -> str | None:
        """``incident=<id>`` for a delivery that is an incident's message, else None (the route's key applies)."""
        incident = self._incident([delivery])
        return None if incident is None else f"incident={incident.id}"

    def _incident(self, members: Sequence[ClaimedDelivery]) -> Incident | None:
        """The incident ``members`` are messages of. Within one DAG the route's digests already say it all: an
        incident takes over once it spans two DAGs."""
        if not members or members[0].kind not in _INCIDENT_DELIVERIES:
            return None
        incident = self.by_alert.get(members[0].alert_id)
        return incident if incident is not None and incident.dags >= 2 else None

    def hold_until(self, channel: str, members: Sequence[ClaimedDelivery], now: datetime) -> datetime | None:
        """When new members of an incident may go out on ``channel`` (None: now): at most one update per
        ``incident_update_interval_s``, so a storm becomes a few updates, not a message per task."""
        incident = self._incident(members)
        if incident is None or members[0].kind != "alert":
            return None
        last = incident.messages.get(channel)
        if not last or not last.get("at"):
            return None
        interval = config.incident_update_interval_s() if self.update_interval_s is None else self.update_interval_s
        try:
            due = datetime.fromisoformat(str(last["at"])) + timedelta(seconds=interval)
        except ValueError:
            return None
        return due if due > now else None

    def fold_resolves(self, members: list[ClaimedDelivery]) -> tuple[list[ClaimedDelivery], list[int]]:
        """Split resolve notices into those to send and those folded into their incident's own (later) notice:
        an incident resolves once, when its last member does."""
        incident = self._incident(members)
        if incident is None:
            return members, []
        try:
            if incident_store.open_member_count(self.store, incident.id) > 0:
                return [], [m.id for m in members]
            incident_store.mark_resolved(self.store, incident.id, at=self.store.clock())
        except Exception as exc:
            self._guard("resolve", exc)
        return members, []

    def redraw(self, channel: str, members: Sequence[ClaimedDelivery],
               limit: int) -> tuple[PostedMessage, list[int]] | None:
        """For an incident's message to ``channel`` that can replace an earlier one (a bot-token Slack message of
        the incident, or of a member alone before the incident spanned two DAGs): that message and the first
        ``limit`` member alert ids to list. None: post (or follow up) as usual."""
        incident = self._incident(members)
        if incident is None:
            return None
        try:
            previous: Mapping[str, Any] = incident.messages.get(channel) or {}
            if previous.get("ts") and previous.get("channel"):
                message: PostedMessage | None = PostedMessage(str(previous["channel"]), str(previous["ts"]))
            elif previous or members[0].kind != "alert":
                return None
            else:
                message = posted_messages.message_among(
                    self.store, channel, incident_store.member_alert_ids(self.store, incident.id))
            if message is None:
                return None
            return message, incident_store.member_alert_ids(self.store, incident.id, limit=limit)
        except Exception as exc:
            self._guard("redraw", exc)
            return None

    def message_fields(self, channel: str, members: Sequence[ClaimedDelivery], listed: int,
                       new: int, *, redrawn: bool = False) -> dict[str, Any]:
        """``incident`` and ``thread`` of the :class:`~tasklens.alerts.Notification` for ``members`` (empty for a
        message that is not an incident's, or an incident of one failure so far). The message lists ``listed`` of
        the ``new`` member alerts it carries; ``redrawn``: it replaces the incident's message, listing its first
        members and counting the rest."""
        incident = self._incident(members)
        if incident is None:
            return {}
        if redrawn:
            return {"incident": incident.view(incident.members - listed)}
        previous: Mapping[str, Any] = incident.messages.get(channel) or {}
        thread = previous.get("ts")
        if members[0].kind == "resolve":
            return {"incident": incident.view(), "thread": thread}
        update = bool(previous)
        unlisted = (new if update else incident.members) - listed
        return {"incident": incident.view(unlisted, update=update), "thread": thread}

    def sent(self, channel: str, members: Sequence[ClaimedDelivery], receipt: Any) -> None:
        """Remember the message (and where Slack put it, to update it later)."""
        incident = self._incident(members)
        if incident is None or members[0].kind != "alert":
            return
        try:
            incident_store.note_sent(self.store, incident.id, channel, members=incident.members,
                                     at=self.store.clock(),
                                     message=receipt if isinstance(receipt, PostedMessage) else None)
        except Exception as exc:
            self._guard("note", exc)
