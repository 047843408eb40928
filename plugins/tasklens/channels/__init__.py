"""Delivery channels by type: each sends one rendered :class:`~tasklens.alerts.Notification` and maps every failure
to :class:`~tasklens.exceptions.DeliveryError` (``retryable``, ``retry_after_s``). Only the dispatcher and
``tasklens test-alert`` call them; task processes never do.

The registry, :data:`CHANNEL_TYPES`, is the one place that knows every type. Adding a type is one module with a
class ``XChannel(name, options)`` that has ``name`` and ``send(notification, *, timeout_s)``, plus one line here::

    "mytype": ChannelType("tasklens.channels.mytype:MyChannel", options={"url": "str"}, conn_id="tasklens_mytype"),

The rules file then accepts ``type: mytype`` with those options (validated at load, with the file, key and fix),
the dispatcher spaces its messages by ``rate_per_s``, and ``tasklens test-alert --channel <name>`` sends through
it. Channel modules are imported only when a channel is built (the rules file is also read in task processes).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from tasklens.alerts import Notification
from tasklens.exceptions import ConfigError

__all__ = [
    "CHANNEL_TYPES",
    "Channel",
    "ChannelType",
    "build_channel",
    "channel_type",
    "mirrors_acknowledge",
    "register_channel_type",
]

#: Kinds of option values the rules file validates: ``str``, ``strs`` (a string or a list of strings), ``number``,
#: ``mapping`` (any YAML mapping), ``url`` (an http(s) URL), ``dotted`` (``module.Class``).
OptionKind = str


class Channel(Protocol):
    """What the dispatcher needs from a channel. ``send`` raises ``DeliveryError`` on failure."""

    name: str

    def send(self, notification: Notification, *, timeout_s: float | None = None) -> None: ...


@dataclasses.dataclass(frozen=True)
class ChannelType:
    """One channel type: how to build it and what the rules file may set on it.

    ``target`` is ``"module:Class"`` (imported when a channel is built) or a factory ``(name, options) -> Channel``.
    ``options`` are the type's own rules-file keys (besides ``type``, ``conn_id`` and ``rate_limit_per_s``) with
    their kind; ``required`` must be set. ``conn_id`` is the default Airflow connection (``None``: the type takes
    none). ``rate_per_s`` is the default ``rate_limit_per_s``. ``one_alert_per_message``: the dispatcher sends each
    alert as its own message (incident tools: one event per alert, retried alone). ``mirrors_acknowledge``: the
    channel handles ``ack`` notifications (acknowledging an alert in tasklens acknowledges it there).
    """

    target: str | Callable[[str, Mapping[str, Any]], Channel]
    options: Mapping[str, OptionKind] = dataclasses.field(default_factory=dict)
    required: tuple[str, ...] = ()
    conn_id: str | None = None
    rate_per_s: float = 1.0
    one_alert_per_message: bool = False
    mirrors_acknowledge: bool = False

    def build(self, name: str, options: Mapping[str, Any]) -> Channel:
        if callable(self.target):
            return self.target(name, options)
        module_name, _, class_name = self.target.partition(":")
        channel_class: Any = getattr(importlib.import_module(module_name), class_name)
        built: Channel = channel_class(name, options)
        return built


#: Channel types by the ``type`` of a channel in the rules file.
CHANNEL_TYPES: dict[str, ChannelType] = {
    "slack": ChannelType("tasklens.channels.slack:SlackChannel", rate_per_s=1.0),  # channel: read by the ruleset
    "email": ChannelType("tasklens.channels.email:EmailChannel", rate_per_s=5.0),  # to: read by the ruleset
    "pagerduty": ChannelType("tasklens.channels.pagerduty:PagerDutyChannel", options={"host": "url", "source": "str"}, conn_id="tasklens_pagerduty", rate_per_s=2.0, one_alert_per_message=True, mirrors_acknowledge=True),  # noqa: E501
    "opsgenie": ChannelType("tasklens.channels.opsgenie:OpsgenieChannel", options={"source": "str", "tags": "strs"}, conn_id="tasklens_opsgenie", rate_per_s=2.0, one_alert_per_message=True, mirrors_acknowledge=True),  # noqa: E501
    "teams": ChannelType("tasklens.channels.teams:TeamsChannel", conn_id="tasklens_teams", rate_per_s=1.0),
    "webhook": ChannelType("tasklens.channels.webhook:WebhookChannel", conn_id="tasklens_webhook", rate_per_s=5.0, mirrors_acknowledge=True),  # noqa: E501
    "notifier": ChannelType("tasklens.channels.notifier:NotifierChannel", options={"class": "dotted", "kwargs": "mapping"}, required=("class",), rate_per_s=1.0),  # noqa: E501
}


def register_channel_type(name: str, channel: ChannelType | Callable[[str, Mapping[str, Any]], Channel]) -> None:
    """Add a channel type at run time: a :class:`ChannelType` or a bare factory ``(name, options) -> Channel``."""
    CHANNEL_TYPES[name] = channel if isinstance(channel, ChannelType) else ChannelType(channel)


def channel_type(name: str) -> ChannelType | None:
    """The registered type ``name`` (``None`` when nobody registered it)."""
    return CHANNEL_TYPES.get(name)


def mirrors_acknowledge(name: str) -> bool:
    """Whether channels of type ``name`` take ``ack`` deliveries (the store queues them on acknowledge)."""
    spec = CHANNEL_TYPES.get(name)
    return bool(spec and spec.mirrors_acknowledge)


def build_channel(name: str, channel_type: str, options: Mapping[str, Any] | None = None) -> Channel:
    """The channel ``name`` of type ``channel_type`` configured with ``options`` (from the rules file).

    The rules file's type-specific options arrive nested under ``options`` (see :class:`tasklens.ruleset.Channel`)
    and are merged over the common ones here.
    """
    spec = CHANNEL_TYPES.get(channel_type)
    if spec is None:
        raise ConfigError(
            "rules file", f"channels.{name}.type", f"unknown channel type {channel_type!r}",
            f"use one of: {', '.join(sorted(CHANNEL_TYPES))}",
        )
    merged = dict(options or {})
    nested = merged.pop("options", None)
    if isinstance(nested, Mapping):
        merged.update(nested)
    return spec.build(name, merged)
