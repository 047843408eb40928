"""The text-safety helpers every stage uses: safe_text, bounded, bounded_tail, fit_key."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasklens import text
from tasklens.text import TRUNCATION_MARKER, bounded, bounded_tail, fit_key, safe_text

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=600)


class StrRaises:
    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")

    def __repr__(self) -> str:
        return "StrRaises()"


class BothRaise(StrRaises):
    def __repr__(self) -> str:
        raise RuntimeError("__repr__ exploded")


def test_safe_text_never_raises_and_is_valid_utf8():
    """Unprintable objects fall back to repr, then a stand-in; bytes decode; lone surrogates become U+FFFD, NUL
    goes, and a surrogate pair becomes its character."""
    assert safe_text(StrRaises()) == "StrRaises()"
    assert safe_text(BothRaise()) == "<unprintable BothRaise>"
    assert safe_text(b"ok \xff") == "ok \ufffd"
    assert safe_text("a\ud800b\x00c\udcff") == "a\ufffdbc\ufffd"
    assert safe_text("\ud83d\ude00") == "\U0001f600"
    assert safe_text(None) == "None" and safe_text(3) == "3"


def test_bounded_keeps_the_head_and_bounded_tail_the_end():
    """Both cut to the limit with the marker on the cut side; short text and None pass through."""
    assert bounded("abcdef", 10) == "abcdef" and bounded(None, 10) is None
    assert bounded("x" * 50, 20) == "x" * 8 + TRUNCATION_MARKER
    assert bounded_tail("x" * 50 + "END", 20) == TRUNCATION_MARKER + "xxxxxEND"
    assert bounded("x" * 50, 3) == "xxx" and bounded_tail("x" * 49 + "y", 1) == "y"
    assert bounded("\udcff" * 10, 5) == "\ufffd" * 5


def test_bounded_stays_cheap_on_a_megabyte_of_surrogates():
    """A 1 MB value is cut to the limit and cleaned, head and tail."""
    huge = "é\udcff" * 500_000
    assert len(bounded(huge, 2000)) == 2000 and len(bounded_tail(huge, 2000)) == 2000
    bounded(huge, 2000).encode("utf-8")
    bounded_tail(huge, 2000).encode("utf-8")


def test_fit_key_leaves_fitting_ids_alone():
    """An id that fits and is valid UTF-8 is its own key (lookups by a real id keep working)."""
    dag_id = "数据" * 125
    assert fit_key(dag_id, 250) is dag_id
    assert fit_key(None, 250) is None


def test_fit_key_hashes_long_ids_into_distinct_stable_keys():
    """Ids too long for the column keep their head plus ``~`` and a hash of the whole id: same id, same key;
    ids differing only past the cut, different keys."""
    first, second = "数" * 300 + "a", "数" * 300 + "b"
    key = fit_key(first, 250)
    assert len(key) == 250 and key.startswith("数" * 237 + "~")
    assert key == fit_key(first, 250) and key != fit_key(second, 250)
    assert len(fit_key(first, 5)) == 5


def test_fit_key_keeps_ids_that_cleaning_would_merge_apart():
    """Two ids differing only in undecodable bytes are cleaned and still get different keys."""
    one, other = b"run\xff".decode("utf-8", "surrogateescape"), b"run\xfe".decode("utf-8", "surrogateescape")
    assert fit_key(one, 250) != fit_key(other, 250)
    fit_key(one, 250).encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(any_text, any_text, st.integers(min_value=13, max_value=300))
def test_fit_key_fits_and_never_merges_two_values(one, other, limit):
    """Any two values get keys within the limit, valid UTF-8, equal only when the values are."""
    first, second = fit_key(one, limit), fit_key(other, limit)
    assert len(first) <= limit and len(second) <= limit
    first.encode("utf-8")
    assert (first == second) == (one == other)


@pytest.mark.parametrize("helper", [bounded, bounded_tail])
@settings(max_examples=200, deadline=None)
@given(value=any_text, limit=st.integers(min_value=0, max_value=300))
def test_bounded_helpers_fit_and_are_valid_utf8(helper, value, limit):
    """Whatever the text and limit, the result fits and encodes as UTF-8."""
    cut = helper(value, limit)
    assert len(cut) <= limit
    cut.encode("utf-8")


def test_text_is_a_bottom_layer_module():
    """text.py imports nothing from tasklens, so every module (store, events, messages, logs) may import it."""
    tree = ast.parse(Path(text.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not [name for name in imported if name.startswith("tasklens")]
