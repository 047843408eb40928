"""Refresh tasklens's message catalogues from the templates and messages.py.

    python scripts/update_catalogues.py

extracts every ``_("...")``/``ngettext(...)`` of ``plugins/tasklens/templates/*.j2`` and every ``tr.gettext``/
``gettext_noop`` of ``messages.py``, ``channels/slack.py`` and ``ui/message_sync.py`` (Babel's extractors; another
module with words: add it to ``_PYTHON_SOURCES``) into ``locale/messages.pot``, then merges
it into each ``locale/<locale>.po``: new strings arrive untranslated (``tests/unit/tasklens/test_i18n.py`` fails until
each is translated), strings no template uses any more are dropped, translations are kept. Files are sorted and
carry no line numbers, so edits elsewhere in a template never touch them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file
from babel.messages.pofile import read_po, write_po

PACKAGE = Path(__file__).resolve().parents[1] / "plugins" / "tasklens"
LOCALE_DIR = PACKAGE / "locale"
TEMPLATE = LOCALE_DIR / "messages.pot"
#: Python modules with words in messages (``tr.gettext("...")``, ``gettext_noop("...")``).
_PYTHON_SOURCES = ("messages.py", "channels/slack.py", "ui/message_sync.py")
_JINJA_OPTIONS = {"extensions": "jinja2.ext.i18n", "trim_blocks": "true", "lstrip_blocks": "true"}
_KEYWORDS = {**DEFAULT_KEYWORDS, "gettext_noop": None, "ngettext_noop": (1, 2)}


def extract() -> Catalog:
    """Every translatable string of the built-in templates and messages.py, as a catalogue template."""
    catalog = Catalog(project="tasklens", domain="tasklens", fuzzy=False)
    templates = sorted((PACKAGE / "templates").glob("*.j2"))
    sources = [(path, "jinja2.ext:babel_extract", _JINJA_OPTIONS) for path in templates]
    sources += [(PACKAGE / name, "python", {}) for name in _PYTHON_SOURCES]
    for path, method, options in sources:
        for lineno, message, comments, context in extract_from_file(method, path, keywords=_KEYWORDS, options=options):
            catalog.add(message, None, [(path.relative_to(PACKAGE).as_posix(), lineno)], auto_comments=comments,
                        context=context)
    return catalog


def main() -> int:
    template = extract()
    if TEMPLATE.exists():  # same strings as before: keep the dates, so the files change only when the strings do
        with TEMPLATE.open("rb") as handle:
            previous = read_po(handle)
        if {m.id for m in previous} == {m.id for m in template}:
            template.creation_date = previous.creation_date
    with TEMPLATE.open("wb") as out:
        write_po(out, template, width=120, omit_header=False, sort_output=True, include_lineno=False)
    for po_path in sorted(LOCALE_DIR.glob("*.po")):
        with po_path.open("rb") as handle:
            catalog = read_po(handle, locale=po_path.stem, domain="tasklens")
        catalog.update(template, no_fuzzy_matching=True)
        catalog.obsolete.clear()
        with po_path.open("wb") as out:
            write_po(out, catalog, width=120, sort_output=True, include_previous=False, include_lineno=False)
        missing = [m.id for m in catalog if m.id and not all(m.string if isinstance(m.string, tuple) else [m.string])]
        print(f"{po_path.name}: {len(missing)} untranslated")
    print(f"{TEMPLATE.relative_to(PACKAGE.parents[1])}: {len(template)} strings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
