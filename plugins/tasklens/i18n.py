"""Messages in the reader's language: gettext catalogues and Babel's date, number and duration formats.

A route or channel with ``locale: fr`` (and optionally ``timezone: Europe/Paris``) gets a :class:`Localizer` for
French: :mod:`tasklens.messages` renders every title and label through its ``gettext`` (Jinja's i18n extension in
the templates), and dates, numbers and durations through Babel in the route's timezone. Without a locale and a
timezone, messages stay exactly as they always were: English, timestamps in ISO 8601.

Catalogues ship as ``.po`` files (``tasklens/locale/<locale>.po``) and are compiled in memory the first time a
process renders a message in that language (a few milliseconds, once): no build step, no ``.mo`` file to forget,
and adding a language is one file. User data (exception text, ids, task-supplied values) is never translated.
"""

from __future__ import annotations

import functools
import gettext
import io
import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime, format_timedelta
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

from tasklens.catalogues import CATALOGUE_DIR, catalogue_for, normalize_locale

__all__ = ["Localizer", "localizer", "translations"]

log = logging.getLogger(__name__)


@functools.cache
def translations(catalogue: str) -> gettext.NullTranslations:
    """The compiled catalogue ``catalogue`` (``"fr"``); identity translations if it cannot be read."""
    path = CATALOGUE_DIR / f"{catalogue}.po"
    try:
        with path.open("rb") as po_file:
            parsed = read_po(po_file, locale=catalogue, domain="tasklens")
        compiled = io.BytesIO()
        write_mo(compiled, parsed)
        compiled.seek(0)
        return gettext.GNUTranslations(compiled)
    except Exception:  # a broken catalogue must not stop a message: English instead
        log.warning("tasklens: cannot read message catalogue %s; messages fall back to English", path, exc_info=True)
        return gettext.NullTranslations()


def _parse_instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value or "").strip()
        if not text:
            return None
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


class Localizer:
    """Texts and formats for one locale and timezone. ``Localizer()`` is today's English: identity texts, ISO
    timestamps, ``f"{x:g}"`` numbers, tasklens's compact durations (``1h 05m``)."""

    def __init__(self, locale: str | None = None, zone: str | None = None) -> None:
        self.requested = locale
        self.catalogue = catalogue_for(locale) if locale else None
        self.localized = bool(locale or zone)
        self.zone: tzinfo = timezone.utc
        if zone:
            try:
                self.zone = timezone.utc if zone.upper() == "UTC" else ZoneInfo(zone)
            except Exception:
                log.warning("tasklens: unknown timezone %r in the rules file; dates are shown in UTC", zone)
        if locale and self.catalogue is None:
            log.warning(
                "tasklens: no message catalogue for locale %r (shipped: see tasklens/locale/); messages are in "
                "English", locale,
            )
        self.babel_locale = self._babel_locale(locale)
        self.translations = translations(self.catalogue) if self.catalogue else gettext.NullTranslations()

    def _babel_locale(self, locale: str | None) -> Locale:
        for candidate in (normalize_locale(locale or ""), self.catalogue or ""):
            if not candidate:
                continue
            try:
                return Locale.parse(candidate)
            except (UnknownLocaleError, ValueError):
                continue
        return Locale.parse("en")

    def gettext(self, message: str) -> str:
        """``message`` in this locale (itself when the catalogue lacks it)."""
        return self.translations.gettext(message)

    def ngettext(self, singular: str, plural: str, count: int) -> str:
        """The form of ``singular``/``plural`` for ``count`` in this locale."""
        return self.translations.ngettext(singular, plural, count)

    def datetime(self, value: Any) -> str:
        """An ISO timestamp (or datetime) as this locale writes it, in this timezone; unchanged when not localized
        or not a timestamp."""
        when = _parse_instant(value) if self.localized else None
        if when is None:
            return "" if value is None else str(value)
        return format_datetime(when, format="long", tzinfo=self.zone, locale=self.babel_locale)

    def number(self, value: Any) -> str:
        """A number as this locale writes it (``1 234,5`` in French); anything else unchanged."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "" if value is None else str(value)
        if not self.localized:
            return f"{value:g}" if isinstance(value, float) else str(value)
        return format_decimal(value, locale=self.babel_locale, decimal_quantization=False)

    def duration(self, seconds: float, compact: Callable[[float], str]) -> str:
        """``seconds`` as this locale says it (``5 minutes``, ``5分``); ``compact(seconds)`` when not localized."""
        if not self.localized:
            return compact(seconds)
        return format_timedelta(
            timedelta(seconds=seconds), threshold=1.5, format="long", locale=self.babel_locale
        )


@functools.lru_cache(maxsize=64)
def localizer(locale: str | None = None, zone: str | None = None) -> Localizer:
    """The (cached) :class:`Localizer` for ``locale`` and timezone ``zone``; ``localizer()`` is plain English."""
    return Localizer(locale, zone)
