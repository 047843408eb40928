"""Between tasklens's values and the store's rows: JSON that any task data survives, keys fitted to their columns,
timestamps, and routes (deliveries) as stored on an alert."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from tasklens.alerts import Alert, AlertKind, Delivery
from tasklens.store.schema import ALERT_KEY_CHARS, DELIVERY_KEY_CHARS, DISCRIMINATOR_CHARS
from tasklens.text import fit_key, safe_text

__all__ = [
    "delivery_from_json",
    "delivery_to_json",
    "discriminator",
    "fitted_alert",
    "fitted_delivery",
    "json_safe",
    "parse_ts",
]


def json_safe(value: Any) -> Any:
    """Round-trip through JSON so arbitrary task data (datetimes, sets, objects) never breaks a write, with every
    string valid UTF-8 (PostgreSQL's json type rejects lone surrogates)."""
    text = json.dumps(value, default=safe_text, ensure_ascii=False)
    try:
        text.encode("utf-8")  # lone surrogates stay raw without ensure_ascii: this finds them
    except UnicodeEncodeError:
        return _clean_strings(json.loads(text))
    # The common case costs one check; NULs are escaped, so they are looked for as text.
    return _clean_strings(json.loads(text)) if "\\u0000" in text else json.loads(text)


def _clean_strings(value: Any) -> Any:
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(key): _clean_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean_strings(item) for item in value]
    return value


def fitted_alert(alert: Alert) -> Alert:
    """``alert`` with every key fitted to its column (PostgreSQL's VARCHAR(n) rejects longer values): too long a
    key keeps its head plus a hash, so distinct ids stay distinct and the same id always maps to the same key."""
    keys = {name: fit_key(getattr(alert, name), limit) for name, limit in ALERT_KEY_CHARS.items()}
    if all(value is getattr(alert, name) for name, value in keys.items()):
        return alert  # the common case: nothing to change
    return dataclasses.replace(alert, **keys)


def fitted_delivery(delivery: Delivery) -> Delivery:
    keys = {name: fit_key(getattr(delivery, name), limit) for name, limit in DELIVERY_KEY_CHARS.items()}
    if all(value is getattr(delivery, name) for name, value in keys.items()):
        return delivery
    return dataclasses.replace(delivery, **keys)


def parse_ts(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def discriminator(alert: Alert) -> str:
    if alert.kind != AlertKind.CUSTOM:
        return ""
    if alert.run_id in (None, "unknown"):  # raised outside a task: no attempt identity, every call counts
        return fit_key(f"{alert.fingerprint}@{alert.occurred_at}", DISCRIMINATOR_CHARS)
    return fit_key(alert.fingerprint, DISCRIMINATOR_CHARS)


def delivery_to_json(delivery: Delivery) -> dict[str, Any]:
    data = dataclasses.asdict(delivery)
    data["escalation_channels"] = list(delivery.escalation_channels)
    data["fallback_channels"] = list(delivery.fallback_channels)
    return data


def delivery_from_json(data: Mapping[str, Any]) -> Delivery:
    names = {f.name for f in dataclasses.fields(Delivery)}
    kwargs = {k: v for k, v in data.items() if k in names}
    kwargs["escalation_channels"] = tuple(kwargs.get("escalation_channels") or ())
    kwargs["fallback_channels"] = tuple(kwargs.get("fallback_channels") or ())
    return Delivery(**kwargs)
