"""Loading the rules file: reading it, YAML that rejects duplicate keys, validation, and the saved copy of the last
file that validated (the fallback of a process started while the file is bad).

Where the copy lives and when to fall back are :mod:`tasklens.config`'s (the ruleset reads no configuration).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import yaml

from tasklens.exceptions import ConfigError
from tasklens.ruleset.defaults import default_ruleset
from tasklens.ruleset.model import Ruleset
from tasklens.ruleset.parse import parse_ruleset

__all__ = ["load_ruleset", "parse_rules_text", "read_last_good", "read_rules_file", "save_last_good"]

log = logging.getLogger(__name__)

_LAST_GOOD_HEADER = "# tasklens: copy of the last rules file that validated ({source}); do not edit.\n"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges are resolved by SafeLoader itself
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (list, dict)):
            continue  # reported as a non-string key later
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_rules_file(path: Path | str) -> str:
    """The text of the rules file at ``path``.

    Raises :class:`~tasklens.exceptions.ConfigError` (kind ``missing_file`` or ``unreadable_file``).
    """
    source = str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            source,
            "rules_file",
            "file not found",
            "create it (see include/tasklens_rules.example.yml) or unset [tasklens] rules_file",
            kind="missing_file",
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            source, "rules_file", f"cannot read the file: {error}", "make it a readable UTF-8 text file",
            kind="unreadable_file",
        ) from None


def parse_rules_text(
    text: str,
    *,
    source: str = "<rules>",
    path: Path | None = None,
    slack_conn_id: str | None = None,
    smtp_conn_id: str | None = None,
) -> Ruleset:
    """Parse and validate the YAML ``text`` of a rules file.

    Raises :class:`~tasklens.exceptions.ConfigError` (kind ``invalid_yaml`` or ``invalid_rules``).
    """
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "document"
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(
            source,
            where,
            f"malformed YAML: {problem}",
            "fix the YAML syntax there (indentation, quotes, a ':' after each key)",
            kind="invalid_yaml",
        ) from None
    try:
        return parse_ruleset(document, source=source, path=path, slack_conn_id=slack_conn_id,
                             smtp_conn_id=smtp_conn_id)
    except ConfigError as error:
        if error.kind == "invalid":
            error.kind = "invalid_rules"
        raise


def load_ruleset(
    path: Path | str | None, *, slack_conn_id: str | None = None, smtp_conn_id: str | None = None
) -> Ruleset:
    """Load and validate the rules file; ``None`` returns :func:`default_ruleset`.

    Raises :class:`~tasklens.exceptions.ConfigError` naming the file, the key and the fix.
    """
    if path is None:
        return default_ruleset(slack_conn_id=slack_conn_id, smtp_conn_id=smtp_conn_id)
    path = Path(path)
    return parse_rules_text(read_rules_file(path), source=str(path), path=path, slack_conn_id=slack_conn_id,
                            smtp_conn_id=smtp_conn_id)


def read_last_good(saved: Path) -> Ruleset | None:
    """The rules in the copy at ``saved`` (see :func:`save_last_good`), or None when there is none or it is unusable
    (saved by another tasklens version, or damaged: logged). Never raises."""
    try:
        text = saved.read_text(encoding="utf-8")
        return parse_rules_text(text, source=str(saved), path=saved)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ConfigError):
        log.warning("tasklens: the saved last good rules file %s is unusable", saved, exc_info=True)
        return None


def save_last_good(saved: Path, source: Path, text: str) -> None:
    """Keep ``text`` (the rules file at ``source``, which validated) at ``saved``, atomically and only when it
    changed. Best effort: a read-only home only loses the fallback for freshly started processes."""
    content = _LAST_GOOD_HEADER.format(source=source) + text
    try:
        if saved.read_text(encoding="utf-8") == content:
            return
    except (OSError, UnicodeDecodeError):
        pass
    try:
        saved.parent.mkdir(parents=True, exist_ok=True)
        temporary = saved.with_name(f".{saved.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(content, encoding="utf-8")
        os.replace(temporary, saved)
    except OSError:
        log.warning("tasklens: could not save the last good rules file to %s", saved, exc_info=True)
