"""Which message catalogues tasklens ships, and which one a ``locale:`` from the rules file uses. Standard library only.

A catalogue is one gettext ``.po`` file, ``tasklens/locale/<locale>.po`` (``fr.po``, ``pt_BR.po``, ``zh_Hans.po``).
The rules file is read in task processes too, so this module stays free of Babel; :mod:`tasklens.i18n` loads the
catalogues and formats dates and numbers where messages are rendered.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

__all__ = ["CATALOGUE_DIR", "available_catalogues", "catalogue_for", "normalize_locale"]

#: Where the ``.po`` files live (``messages.pot`` is the template they are made from).
CATALOGUE_DIR = Path(__file__).resolve().parent / "locale"

#: Requests no catalogue file spells out, mapped onto the catalogue that serves them.
_ALIASES = {"zh": "zh_Hans", "zh_CN": "zh_Hans", "zh_SG": "zh_Hans", "zh_Hans_CN": "zh_Hans", "pt": "pt_BR"}
_LOCALE_SHAPE = re.compile(r"^[a-z]{2,3}(_[A-Z][a-z]{3})?(_([A-Z]{2}|[0-9]{3}))?$")


@functools.cache
def available_catalogues() -> tuple[str, ...]:
    """The shipped catalogues' locale names, sorted (``("de", "en", "es", "fr", "ja", "pt_BR", "zh_Hans")``)."""
    return tuple(sorted(path.stem for path in CATALOGUE_DIR.glob("*.po")))


def normalize_locale(name: str) -> str:
    """``"pt-br"`` -> ``"pt_BR"``, ``"zh-hans"`` -> ``"zh_Hans"``, ``"FR"`` -> ``"fr"``: the gettext spelling."""
    parts = [part for part in re.split(r"[-_]", name.strip()) if part]
    if not parts:
        return ""
    out = [parts[0].lower()]
    for part in parts[1:]:
        out.append(part.title() if len(part) == 4 else part.upper())
    return "_".join(out)


def catalogue_for(name: str | None) -> str | None:
    """The catalogue serving locale ``name``: itself, an alias (``zh_CN`` -> ``zh_Hans``), or its language
    (``fr_CA`` -> ``fr``). ``None`` when no shipped catalogue fits (``zh_TW``: no Traditional Chinese yet)."""
    if not name:
        return None
    locale = normalize_locale(name)
    if not _LOCALE_SHAPE.match(locale):
        return None
    shipped = available_catalogues()
    parts = locale.split("_")
    candidates = [locale, _ALIASES.get(locale, "")]
    if len(parts) > 1 and not (parts[0] == "zh" and locale not in _ALIASES):  # zh_TW is not zh_Hans
        candidates.append(parts[0] if parts[0] != "zh" else "")
        candidates.append(_ALIASES.get(parts[0], ""))
    for candidate in candidates:
        if candidate and candidate in shipped:
            return candidate
    return None
