"""Text safety for everything tasklens writes: one place that makes arbitrary values printable and bounded.

Task code hands tasklens hostile text: exceptions whose ``__str__`` raises, 1 MB messages, lone surrogates from
bytes decoded with ``surrogateescape``, NUL characters, ids longer than a column. Every stage that stores, streams
or renders text goes through these helpers:

* :func:`safe_text` -- ``str(value)`` that never raises and is valid UTF-8 (lone surrogates become U+FFFD,
  NUL characters go);
* :func:`bounded` / :func:`bounded_tail` -- at most ``limit`` characters, keeping the head (or the tail) and
  marking the cut;
* :func:`fit_key` -- a key of at most ``limit`` characters that stays distinct: a value too long (or changed by
  cleaning) keeps its head plus ``~`` and a hash of the whole value.

Limits count characters (code points), as PostgreSQL's ``VARCHAR(n)`` does. A bottom-layer module: it imports
nothing from tasklens.
"""

from __future__ import annotations

import hashlib
import math
from typing import overload

__all__ = ["KEY_HASH_CHARS", "TRUNCATION_MARKER", "bounded", "bounded_tail", "fit_key", "format_duration", "safe_text"]

TRUNCATION_MARKER = "…[truncated]"
#: Hex digits of the hash :func:`fit_key` appends (48 bits: distinct keys do not collide in practice).
KEY_HASH_CHARS = 12
_KEY_SEPARATOR = "~"


def _unprintable(value: object) -> str:
    try:
        name = type(value).__name__
    except Exception:  # a hostile metaclass
        name = "object"
    return f"<unprintable {name}>"


def _as_str(value: object) -> str:
    if type(value) is str:
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    try:
        text = str(value)
    except Exception:  # an exception whose __str__ raises is still reported
        try:
            text = repr(value)
        except Exception:
            return _unprintable(value)
    # A str subclass may override methods used later; work on a plain str.
    return text if type(text) is str else _unprintable(value)


def _valid_utf8(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Through UTF-16: surrogate pairs become their character, lone surrogates one U+FFFD each.
        text = text.encode("utf-16-le", errors="surrogatepass").decode("utf-16-le", errors="replace")
    # PostgreSQL text cannot hold NUL, and it ends C strings in mail and terminal tools.
    return text.replace("\x00", "") if "\x00" in text else text


def safe_text(value: object) -> str:
    """``str(value)`` as valid UTF-8 text; never raises.

    Bytes are decoded as UTF-8 (invalid sequences replaced); an object whose ``__str__`` raises falls back to its
    ``repr`` and then to ``<unprintable TypeName>``; lone surrogates become U+FFFD and NUL characters go.
    """
    return _valid_utf8(_as_str(value))


@overload
def bounded(value: None, limit: int, marker: str = ...) -> None: ...
@overload
def bounded(value: object, limit: int, marker: str = ...) -> str: ...
def bounded(value: object, limit: int, marker: str = TRUNCATION_MARKER) -> str | None:
    """:func:`safe_text` of ``value`` cut to at most ``limit`` characters, ending with ``marker`` when cut.

    ``None`` stays ``None``. Cheap on megabytes: only what can survive the cut is cleaned.
    """
    if value is None:
        return None
    limit = max(limit, 0)
    raw = _as_str(value)
    # Cleaning never lengthens text, so a slice a little longer than the limit decides the same cut.
    sliced = len(raw) > 2 * limit + 2
    text = _valid_utf8(raw[: 2 * limit + 2] if sliced else raw)
    if len(text) <= limit and not sliced:
        return text
    if limit <= len(marker):
        return text[:limit]
    return text[: limit - len(marker)] + marker


@overload
def bounded_tail(value: None, limit: int, marker: str = ...) -> None: ...
@overload
def bounded_tail(value: object, limit: int, marker: str = ...) -> str: ...
def bounded_tail(value: object, limit: int, marker: str = TRUNCATION_MARKER) -> str | None:
    """Like :func:`bounded` but keeps the end (a traceback's raising frames), starting with ``marker`` when cut."""
    if value is None:
        return None
    limit = max(limit, 0)
    raw = _as_str(value)
    sliced = len(raw) > 2 * limit + 2
    text = _valid_utf8(raw[-(2 * limit + 2) :] if sliced else raw)
    if len(text) <= limit and not sliced:
        return text
    if limit <= len(marker):
        return text[len(text) - limit :] if limit else ""
    return marker + text[len(text) - (limit - len(marker)) :]


@overload
def fit_key(value: None, limit: int) -> None: ...
@overload
def fit_key(value: object, limit: int) -> str: ...
def fit_key(value: object, limit: int) -> str | None:
    """``value`` as a key of at most ``limit`` characters that stays distinct from every other value's key.

    A value that fits and is valid UTF-8 is returned as it is (lookups by a real id keep working). Otherwise the
    key is its cleaned head, ``~`` and the first 12 hex digits of the SHA-256 of the whole original value, so two
    long ids sharing a prefix still get two keys, and the same id always gets the same key::

        fit_key("日" * 300, 250)  # -> "日" * 237 + "~" + 12 hex digits
    """
    if value is None:
        return None
    raw = _as_str(value)
    text = _valid_utf8(raw) if len(raw) <= limit else None
    if text is not None and text == raw:
        return raw
    digest = hashlib.sha256(raw.encode("utf-8", errors="surrogatepass")).hexdigest()[:KEY_HASH_CHARS]
    keep = max(limit - KEY_HASH_CHARS - len(_KEY_SEPARATOR), 0)
    head = _valid_utf8(raw[: keep + 1])[:keep]  # one spare: a surrogate pair may merge into one character
    return (head + _KEY_SEPARATOR + digest)[-limit:] if limit > 0 else ""


def format_duration(seconds: float | None) -> str:
    """``3725`` -> ``"1h 2m 5s"``; sub-minute values keep one decimal."""
    if seconds is None or math.isnan(seconds):
        return "unknown"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs and not days else "",
    ]
    return " ".join(p for p in parts if p)
