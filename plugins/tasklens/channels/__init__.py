"""Delivery channels by type: each sends one rendered :class:`~tasklens.alerts.Notification` through an Airflow
provider hook and maps every failure to :class:`~tasklens.exceptions.DeliveryError` (``retryable``,
``retry_after_s``). Only the dispatcher and ``tasklens test-alert`` call them; task processes never do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from tasklens.alerts import Notification
from tasklens.exceptions import ConfigError

__all__ = ["CHANNEL_TYPES", "Channel", "build_channel", "register_channel_type"]


class Channel(Protocol):
    """What the dispatcher needs from a channel. ``send`` raises ``DeliveryError`` on failure."""

    name: str

    def send(self, notification: Notification, *, timeout_s: float | None = None) -> None: ...


def _slack(name: str, options: Mapping[str, Any]) -> Channel:
    from tasklens.channels.slack import SlackChannel

    return SlackChannel(name, options)


def _email(name: str, options: Mapping[str, Any]) -> Channel:
    from tasklens.channels.email import EmailChannel

    return EmailChannel(name, options)


#: Channel factories by the ``type`` of a channel in the rules file.
CHANNEL_TYPES: dict[str, Any] = {"slack": _slack, "email": _email}


def register_channel_type(channel_type: str, factory: Any) -> None:
    """Add a channel type: ``factory(name, options) -> Channel``."""
    CHANNEL_TYPES[channel_type] = factory


def build_channel(name: str, channel_type: str, options: Mapping[str, Any] | None = None) -> Channel:
    """The channel ``name`` of type ``channel_type`` configured with ``options`` (from the rules file)."""
    factory = CHANNEL_TYPES.get(channel_type)
    if factory is None:
        raise ConfigError(
            "rules file", f"channels.{name}.type", f"unknown channel type {channel_type!r}",
            f"use one of: {', '.join(sorted(CHANNEL_TYPES))}",
        )
    return factory(name, dict(options or {}))
