"""Incidents: failures across DAGs that share one cause. Pure (the store side is :mod:`tasklens.incident_store`).

Two failures belong to one incident when they happen within ``[tasklens] incident_window_s`` of each other and share

- their **error signature**: the exception type plus its message with numbers, ids, paths, hosts, URLs and
  timestamps masked (``OperationalError: could not connect to server: Connection refused Is the server running on
  host <host> (<host>) ...``), or
- their **external dependency**: a connection id or host named in the error (``conn:warehouse``,
  ``host:wh.internal``), for the failure classes that mean an outside system is at fault.

Unrelated failures in the same window (a ``KeyError`` in another DAG) share neither and stay separate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = [
    "CORRELATED_CLASSES",
    "Correlation",
    "correlation_of",
    "error_signature",
    "external_dependency",
    "headline",
    "title_of",
    "unreachable_parts",
]

#: Failure classes whose failures correlate by external dependency as well as by signature.
CORRELATED_CLASSES = frozenset({"dependency", "timeout", "infra"})
#: Alert kinds that join incidents.
INCIDENT_KINDS = frozenset({"failure", "killed"})
_SIGNATURE_CHARS = 400

# Order matters: whole URLs, paths and timestamps first, so their digits are not masked one by one.
_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE), "<url>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE), "<id>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "<host>"),
    (re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.@~-]+){2,}[\\/]?"), "<path>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"), "<ts>"),
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\b"), "<ts>"),
    (re.compile(r"\b(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+(?:[a-z]{2,}|internal|local|lan)(?::\d+)?\b",
                re.IGNORECASE), "<host>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.IGNORECASE), "<id>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.IGNORECASE), "<n>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)

# Where an error names what it could not reach. The first pattern that matches wins.
_DEPENDENCIES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"conn(?:ection)?[_ ]id[`'\"=: ]+([\w.-]+)", re.IGNORECASE), "conn"),
    (re.compile(r"\bhost[\s=:]+[`'\"]?([\w.-]+)", re.IGNORECASE), "host"),
    (re.compile(r"\b(?:server|database) (?:at|on) [`'\"]?([\w.-]+)", re.IGNORECASE), "host"),
    (re.compile(r"\bconnection to (?:server at )?[`'\"]?([\w.-]+)", re.IGNORECASE), "host"),
    (re.compile(r"\b[a-z][a-z0-9+.-]*://(?:[^@/\s]*@)?([\w.-]+)", re.IGNORECASE), "host"),
    (re.compile(r"\bHTTP(?:S)?ConnectionPool\(host=[`'\"]?([\w.-]+)", re.IGNORECASE), "host"),
)


def error_signature(exception_type: str | None, message: str | None) -> str:
    """``"<type>: <masked message>"``; two failures of one cause on different hosts, ids or days give the same."""
    text = message or ""
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return f"{exception_type or 'failure'}: {text.strip()}"[:_SIGNATURE_CHARS]


def external_dependency(message: str | None) -> str | None:
    """``"conn:<id>"`` or ``"host:<host>"`` named in ``message`` (lower-cased), or None when it names none."""
    if not message:
        return None
    for pattern, kind in _DEPENDENCIES:
        found = pattern.search(message)
        if found:
            value = found.group(1).strip(".-").lower()
            if value and not value.isdigit():
                return f"{kind}:{value}"
    return None


@dataclasses.dataclass(frozen=True)
class Correlation:
    """What an alert is correlated by: its signature (and its hash, the store's key) and its dependency."""

    signature: str
    signature_hash: str
    dependency: str | None
    failure_class: str | None


def correlation_of(kind: str, exception_type: str | None, exception_message: str | None,
                   labels: Mapping[str, Any], data: Mapping[str, Any]) -> Correlation | None:
    """The correlation keys of a stored alert (None for alerts that never join an incident: retries, durations,
    metrics, custom alerts, resolves)."""
    if kind not in INCIDENT_KINDS:
        return None
    failure_class = labels.get("failure_class")
    message = exception_message or str(data.get("reason") or "")
    signature = error_signature(exception_type, message)
    dependency = external_dependency(message) if failure_class in CORRELATED_CLASSES else None
    digest = hashlib.sha256(signature.encode("utf-8", errors="replace")).hexdigest()[:32]
    return Correlation(signature, digest, dependency, failure_class)


def headline(title: str, members: int, dags: int, first_seen: datetime, last_seen: datetime) -> str:
    """``"<title> — 40 tasks in 12 DAGs, first 02:03, latest 02:11"``."""
    tasks = f"{members:,} task{'s' if members != 1 else ''}"
    dag_text = f"{dags:,} DAG{'s' if dags != 1 else ''}"
    return (f"{title} — {tasks} in {dag_text}, first {first_seen:%H:%M}, latest {last_seen:%H:%M}")


def unreachable_parts(title: str, dependency: str | None, failure_class: str | None) -> tuple[str, str] | None:
    """``(host, error)`` of a title :func:`title_of` wrote as ``"<host> unreachable (<error>)"`` (messages put it
    in the reader's language), else None."""
    if failure_class != "dependency" or not dependency or ":" not in dependency:
        return None
    host = dependency.split(":", 1)[1]
    prefix = f"{host} unreachable ("
    if title.startswith(prefix) and title.endswith(")"):
        return host, title[len(prefix) : -1]
    return None


def title_of(correlation: Correlation, exception_type: str | None, exception_message: str | None,
             reason: str | None = None) -> str:
    """The incident's name: ``"wh.internal unreachable (OperationalError: could not connect to server)"``."""
    first = next((line.strip() for line in (exception_message or reason or "").splitlines() if line.strip()), "")
    first = first[:150]
    cause = f"{exception_type}: {first}" if exception_type else first or "failure"
    if correlation.dependency and correlation.failure_class == "dependency":
        return f"{correlation.dependency.split(':', 1)[1]} unreachable ({cause})"
    return cause
