"""Secrets out of error text: every :class:`~tasklens.exceptions.DeliveryError` message passes through :func:`redact`.

Provider and library errors quote what they were given: ``http.client.InvalidURL`` and slack_sdk's
``SlackRequestError`` carry the whole webhook URL, whose path is the secret. Error text ends up in the store
(``last_error``), the UI, ``/tasklens/health`` and logs, so it is scrubbed once, here, before it goes anywhere.

>>> redact("Invalid URL detected: https://hooks.slack.com/services/T0/B0/abc")
'Invalid URL detected: https://hooks.slack.com/…'
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

__all__ = ["REDACTED", "redact"]

REDACTED = "***"

# scheme://[userinfo@]host[/path-or-query]: the path (a webhook token) and the userinfo (a password) go.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{1,15})://(?:[^\s/@'\"<>]*@)?(?P<host>[^\s/?#'\"<>]*)"
                  r"(?P<rest>[/?#][^\s'\"<>]*)?")
# A Slack webhook token path (T.../B.../secret) and Slack API tokens (xoxb-, xoxp-, xapp-...), wherever they are.
_SLACK_WEBHOOK_PATH = re.compile(r"\bT[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+")
_SLACK_TOKEN = re.compile(r"\b(?:xox[a-z]|xapp)-[A-Za-z0-9-]+")
_MIN_SECRET_LENGTH = 4  # shorter "secrets" would mangle ordinary words


def _url(match: re.Match[str]) -> str:
    rest = match.group("rest") or ""
    punctuation = rest[len(rest.rstrip(".,:;)]")) :]  # the sentence's, not the URL's
    tail = "/…" if rest[: len(rest) - len(punctuation)] else ""
    return f"{match.group('scheme')}://{match.group('host')}{tail}{punctuation}"


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without ``secrets`` (a connection's password, token, host...), without the path, query and
    credentials of any URL, and without anything shaped like a Slack token."""
    for secret in sorted({s.strip() for s in secrets if s and len(s.strip()) >= _MIN_SECRET_LENGTH}, key=len,
                         reverse=True):
        for form in {secret, secret.strip("/"), urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret)}:
            if len(form) >= _MIN_SECRET_LENGTH:
                text = text.replace(form, REDACTED)
    text = _URL.sub(_url, text)
    text = _SLACK_WEBHOOK_PATH.sub(REDACTED, text)
    return _SLACK_TOKEN.sub(REDACTED, text)
