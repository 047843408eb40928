"""Messages: a :class:`~tasklens.alerts.Notification` in, a Slack Block Kit payload or an email out. Pure.

Texts come from Jinja templates, one per alert kind (``failure``, ``retry``, ``killed``,
``duration``, ``metric``, ``custom``, ``resolve``, ``digest``, ``escalation``) plus custom-alert
templates (``ml_model_drift``, ``data_quality``), shipped in ``tasklens/templates/`` and
overridable file by file from ``[tasklens] templates_dir``. A template defines the blocks
``headline`` (one line) and ``body``; ``digest`` also defines ``item``. A block missing from an
override falls back to the built-in one; an override that fails to render is logged and the
built-in template is used instead, so a template typo never loses an alert.

Safety: every value a template prints is escaped for its target (Slack mrkdwn ``& < >``, HTML),
so an exception message containing ``<!channel>`` pings nobody; secrets are masked with
:func:`tasklens.events.redact`; Slack limits (3,000 chars per text, 150 per header, 50 blocks)
are respected by truncating with a marker.

Language: a notification with a ``locale`` (set on its route or channel) is rendered through that locale's
catalogue (:mod:`tasklens.i18n`): templates mark words with ``_("Task failed: %(task)s", task=...)`` and
``ngettext(...)`` (Jinja's i18n extension, new-style gettext), this module marks its labels with ``tr.gettext``
or :func:`gettext_noop`. Placeholders are filled after translation and escaped like any other value, so user data
is never translated and never unescaped. Without a locale or timezone the output is byte for byte today's English.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_context
from markupsafe import Markup, escape

from tasklens import config, events
from tasklens.alerts import Alert, AlertKind, AlertSnapshot, Notification, Severity, Status
from tasklens.i18n import Localizer, localizer
from tasklens.text import TRUNCATION_MARKER, bounded, bounded_tail, format_duration, safe_text

__all__ = [
    "BUILTIN_TEMPLATES_DIR",
    "SLACK_LIMITS",
    "TEMPLATE_NAMES",
    "TRUNCATION_MARKER",
    "escape_mrkdwn",
    "gettext_noop",
    "ngettext_noop",
    "render_email",
    "render_slack",
    "render_text",
    "truncate",
    "truncate_mrkdwn",
]

log = logging.getLogger(__name__)

BUILTIN_TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE_NAMES = (
    "failure",
    "retry",
    "killed",
    "duration",
    "metric",
    "custom",
    "resolve",
    "digest",
    "incident",
    "escalation",
    "ml_model_drift",
    "data_quality",
)
SLACK_LIMITS: Mapping[str, int] = {
    "text": 3000,  # section / context text objects and the fallback text we send
    "header": 150,
    "field": 2000,
    "fields": 10,
    "blocks": 50,
    "button_text": 75,
    "url": 3000,
    "context_elements": 10,
}
_FIELD_LIMIT = 3000  # every value is cut to this before templates see it (1 MB exceptions stay cheap)
_DATA_LIMIT = 1000
_TRACEBACK_LIMIT = 4000
_SUBJECT_LIMIT = 200
_EMOJI = {
    Severity.CRITICAL: ":red_circle:",
    Severity.WARNING: ":large_orange_circle:",
    Severity.INFO: ":large_blue_circle:",
}
_COLORS = {Severity.CRITICAL: "#d92d20", Severity.WARNING: "#f79009", Severity.INFO: "#1570ef"}
_KIND_TEMPLATES = {
    AlertKind.FAILURE: "failure",
    AlertKind.RETRY: "retry",
    AlertKind.KILLED: "killed",
    AlertKind.DURATION: "duration",
    AlertKind.OVERRUN: "overrun",
    AlertKind.STUCK: "stuck",
    AlertKind.DEADLINE: "deadline",
    AlertKind.LATE: "late",
    AlertKind.HEARTBEAT: "heartbeat",
    AlertKind.METRIC: "metric",
    AlertKind.CUSTOM: "custom",
    AlertKind.RESOLVE: "resolve",
}
#: Resolve notices that say how it ended (the foresight checks put it in the alert's ``data["outcome"]``).
_RESOLVE_TEMPLATES = {
    AlertKind.OVERRUN: "overrun_resolve",
    AlertKind.STUCK: "overrun_resolve",
    AlertKind.DEADLINE: "deadline_resolve",
    AlertKind.LATE: "late_resolve",
}
_USE_CONFIG: Any = object()


def gettext_noop(message: str) -> str:
    """Marks ``message`` for the catalogues (the extractor's ``gettext_noop`` keyword); translated where shown."""
    return message


def ngettext_noop(singular: str, plural: str) -> tuple[str, str]:
    """Marks a singular/plural pair for the catalogues (the extractor's ``ngettext_noop`` keyword)."""
    return singular, plural


#: "2 critical" in a digest's summary line, per severity (the count agrees with the word in most languages).
_SEVERITY_COUNTS = {
    "critical": ngettext_noop("%(num)s critical", "%(num)s critical"),
    "warning": ngettext_noop("%(num)s warning", "%(num)s warning"),
    "info": ngettext_noop("%(num)s info", "%(num)s info"),
}
#: Display names of severities and statuses (their values stay English in data, URLs and JSON).
_VALUE_NAMES = {
    "critical": gettext_noop("critical"),
    "warning": gettext_noop("warning"),
    "info": gettext_noop("info"),
    "open": gettext_noop("open"),
    "acknowledged": gettext_noop("acknowledged"),
    "resolved": gettext_noop("resolved"),
    "muted": gettext_noop("muted"),
}
#: The titles ``tasklens.rules`` gives built-in alerts (English prefix, catalogue message): shown in the reader's
#: language when a locale is set.
_BUILTIN_TITLES = (
    ("Task failed: ", gettext_noop("Task failed: %(task)s")),
    ("Task retrying: ", gettext_noop("Task retrying: %(task)s")),
    ("Task killed: ", gettext_noop("Task killed: %(task)s")),
    ("Task killed (will retry): ", gettext_noop("Task killed (will retry): %(task)s")),
    ("Task ran long: ", gettext_noop("Task ran long: %(task)s")),
)


# --------------------------------------------------------------------------- text safety


def escape_mrkdwn(value: Any) -> str:
    """Escape Slack's control characters (``&``, ``<``, ``>``) so text shows as typed and pings nobody."""
    return safe_text(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


#: Plain-text truncation, the same everywhere in tasklens (:func:`tasklens.text.bounded`).
truncate = bounded


_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")


def truncate_mrkdwn(value: str, limit: int, marker: str = TRUNCATION_MARKER) -> str:
    """Like :func:`truncate` for escaped mrkdwn: never cuts inside ``&amp;`` or an open ``<link|...>``."""
    limit = max(limit, 0)
    text = bounded(value, 2 * limit + 2, marker="")  # valid UTF-8, and short enough to scan
    if len(text) <= limit:
        return text
    if limit <= len(marker):
        marker, keep = "", max(limit, 0)
    else:
        keep = limit - len(marker)
    head = text[:keep]
    head = _PARTIAL_ENTITY.sub("", head)
    last_open, last_close = head.rfind("<"), head.rfind(">")
    if last_open > last_close:
        head = head[:last_open]
    if head.count("```") % 2:  # an unclosed code block would swallow the marker
        head = head[: head.rfind("```")]
    return head + marker


def _safe_url(url: Any, base_url: str) -> str | None:
    """An absolute http(s) URL with unsafe characters percent-encoded, or None."""
    if not url:
        return None
    text = safe_text(url).strip()
    if text.startswith("/"):
        text = base_url.rstrip("/") + text
    try:
        scheme = urlsplit(text).scheme.lower()
    except ValueError:
        return None
    if scheme not in ("http", "https"):
        return None
    text = quote(text, safe=":/?#[]@!$&'()*+,;=%-._~")
    return text if len(text) <= SLACK_LIMITS["url"] else None


def _subject_line(value: str) -> str:
    # No CR/LF (header injection) nor other control characters in a mail subject.
    text = re.sub(r"[\x00-\x1f\x7f\u2028\u2029]+", " ", safe_text(value))
    return truncate(re.sub(r"\s{2,}", " ", text).strip(), _SUBJECT_LIMIT, "…")


# --------------------------------------------------------------------------- template environments


class _Mrkdwn(str):
    """mrkdwn we built ourselves (bold, links): the Slack environment prints it unescaped."""


def _slack_finalize(value: Any) -> str:
    if value is None or isinstance(value, jinja2.Undefined):
        return ""
    if isinstance(value, _Mrkdwn):
        return str(value)
    return escape_mrkdwn(value)


def _plain_finalize(value: Any) -> Any:
    if value is None or isinstance(value, jinja2.Undefined):
        return ""
    return value


def _fill(fmt: str, translated: str, variables: Mapping[str, Any]) -> Any:
    """A translated text with its placeholders filled, each value escaped for ``fmt`` (never translated). The
    catalogue's own text is escaped too: a translation can never add markup."""
    if fmt == "slack":
        values = {key: _slack_finalize(value) for key, value in variables.items()}
        return _Mrkdwn(escape_mrkdwn(translated) % values)
    if fmt == "html":
        return escape(translated) % {k: "" if v is None else v for k, v in variables.items()}
    return translated % {k: "" if v is None else v for k, v in variables.items()}


def _gettext_functions(fmt: str, tr: Localizer) -> dict[str, Callable[..., Any]]:
    """``gettext``/``ngettext`` for templates (new-style: ``_("Hi %(name)s", name=x)``; Jinja's ``_`` calls
    ``gettext``), translating with ``tr`` and escaping the filled-in values for ``fmt``."""

    @pass_context
    def gettext(_context: Any, message: str, **variables: Any) -> Any:
        return _fill(fmt, tr.gettext(message), variables)

    @pass_context
    def ngettext(_context: Any, singular: str, plural: str, count: Any, **variables: Any) -> Any:
        variables.setdefault("num", count)
        try:
            number = int(count)
        except (TypeError, ValueError):
            number = 0
        return _fill(fmt, tr.ngettext(singular, plural, number), variables)

    return {"gettext": gettext, "ngettext": ngettext}


def _helpers(fmt: str, base_url: str, tr: Localizer) -> dict[str, Callable[..., Any]]:
    def first_line(text: Any) -> str:
        for line in safe_text(text or "").splitlines():
            if line.strip():
                return line.strip()
        return ""

    def duration(seconds: Any) -> str:
        try:
            return tr.duration(float(seconds), format_duration)
        except (TypeError, ValueError, OverflowError):
            return ""

    def date(value: Any) -> str:
        return tr.datetime(value)

    def severity_name(value: Any) -> str:
        text = safe_text(getattr(value, "value", value))
        return tr.gettext(_VALUE_NAMES[text]) if text in _VALUE_NAMES else text

    status_name = severity_name

    def severity_count(severity: Any, count: Any) -> Any:
        text = safe_text(getattr(severity, "value", severity))
        if text not in _SEVERITY_COUNTS or not isinstance(count, int):
            return _fill(fmt, "%(num)s %(severity)s", {"num": count, "severity": text})
        return _fill(fmt, tr.ngettext(*_SEVERITY_COUNTS[text], count), {"num": count})

    if fmt == "slack":

        def bold(text: Any) -> _Mrkdwn:
            return _Mrkdwn(f"*{escape_mrkdwn(text).replace('*', '∗')}*") if text not in (None, "") else _Mrkdwn("")

        def code(text: Any) -> _Mrkdwn:
            return _Mrkdwn(f"`{escape_mrkdwn(text).replace('`', 'ˋ')}`") if text not in (None, "") else _Mrkdwn("")

        def pre(text: Any) -> _Mrkdwn:
            return _Mrkdwn(f"```{escape_mrkdwn(text).replace('```', 'ˋˋˋ')}```") if text else _Mrkdwn("")

        def link(url: Any, text: Any) -> _Mrkdwn:
            safe = _safe_url(url, base_url)
            if safe is None:
                return _Mrkdwn(escape_mrkdwn(text))
            return _Mrkdwn(f"<{escape_mrkdwn(safe)}|{escape_mrkdwn(text).replace('|', '¦')}>")

        def icon(severity: Any) -> _Mrkdwn:
            return _Mrkdwn(_EMOJI.get(_severity(severity), ""))

    elif fmt == "html":

        def bold(text: Any) -> Markup:  # type: ignore[misc]
            return Markup("<strong>%s</strong>") % safe_text(text) if text not in (None, "") else Markup("")

        def code(text: Any) -> Markup:  # type: ignore[misc]
            return Markup("<code>%s</code>") % safe_text(text) if text not in (None, "") else Markup("")

        def pre(text: Any) -> Markup:  # type: ignore[misc]
            return Markup('<pre style="white-space:pre-wrap">%s</pre>') % safe_text(text) if text else Markup("")

        def link(url: Any, text: Any) -> Markup:  # type: ignore[misc]
            safe = _safe_url(url, base_url)
            return Markup('<a href="%s">%s</a>') % (safe, safe_text(text)) if safe else escape(safe_text(text))

        def icon(severity: Any) -> Markup:  # type: ignore[misc]
            return Markup("[%s]") % _severity(severity).value.upper()

    else:

        def bold(text: Any) -> str:  # type: ignore[misc]
            return safe_text(text) if text is not None else ""

        def code(text: Any) -> str:  # type: ignore[misc]
            return safe_text(text) if text is not None else ""

        def pre(text: Any) -> str:  # type: ignore[misc]
            return "\n".join("    " + line for line in safe_text(text or "").splitlines())

        def link(url: Any, text: Any) -> str:  # type: ignore[misc]
            safe = _safe_url(url, base_url)
            return f"{safe_text(text)} ({safe})" if safe else safe_text(text)

        def icon(severity: Any) -> str:  # type: ignore[misc]
            return f"[{_severity(severity).value.upper()}]"

    def num(value: Any) -> str:
        if tr.localized and isinstance(value, (int, float)) and not isinstance(value, bool):
            return tr.number(value)
        return f"{value:g}" if isinstance(value, float) else safe_text("" if value is None else value)

    return {
        **_gettext_functions(fmt, tr),
        "date": date,
        "severity_name": severity_name,
        "status_name": status_name,
        "severity_count": severity_count,
        "num": num,
        "bold": bold,
        "code": code,
        "pre": pre,
        "link": link,
        "icon": icon,
        "first_line": first_line,
        "duration": duration,
    }


def _severity(value: Any) -> Severity:
    try:
        return Severity(getattr(value, "value", value))
    except ValueError:
        return Severity.INFO


@functools.lru_cache(maxsize=16)
def _environment(fmt: str, override_dir: str | None) -> jinja2.Environment:
    env = _new_environment(fmt, override_dir)
    # gettext/ngettext come with each render's context (one locale per notification, one environment for all).
    env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
    return env


def _new_environment(fmt: str, override_dir: str | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if override_dir:
        loaders.append(jinja2.FileSystemLoader(override_dir))
    loaders.append(jinja2.FileSystemLoader(str(BUILTIN_TEMPLATES_DIR)))
    options: dict[str, Any] = {
        "loader": jinja2.ChoiceLoader(loaders),
        "undefined": jinja2.ChainableUndefined,
        "trim_blocks": True,
        "lstrip_blocks": True,
        "keep_trailing_newline": False,
        "extensions": ["jinja2.ext.i18n"],
    }
    if fmt == "slack":
        return ImmutableSandboxedEnvironment(autoescape=False, finalize=_slack_finalize, **options)
    if fmt == "html":
        return ImmutableSandboxedEnvironment(autoescape=True, finalize=_plain_finalize, **options)
    return ImmutableSandboxedEnvironment(autoescape=False, finalize=_plain_finalize, **options)


def _render_block(
    fmt: str, override_dir: str | None, names: Sequence[str], block: str, context: Mapping[str, Any]
) -> str:
    """Render ``block`` from the first of ``names`` defining it: the override file first, then the built-in one."""
    for name in names:
        file_name = f"{name}.j2"
        if override_dir and (Path(override_dir) / file_name).is_file():
            try:
                rendered = _block_of(_environment(fmt, override_dir), file_name, block, context)
            except Exception:
                log.warning(
                    "tasklens: template %s (block %r) in %s failed to render; using the built-in one",
                    file_name,
                    block,
                    override_dir,
                    exc_info=True,
                )
                rendered = None
            if rendered is not None:
                return rendered
        if (BUILTIN_TEMPLATES_DIR / file_name).is_file():
            rendered = _block_of(_environment(fmt, None), file_name, block, context)
            if rendered is not None:
                return rendered
    return ""


def _block_of(env: jinja2.Environment, file_name: str, block: str, context: Mapping[str, Any]) -> str | None:
    template = env.get_template(file_name)
    render = template.blocks.get(block)
    if render is None:
        return None
    return "".join(render(template.new_context(dict(context)))).strip()


def _templates_dir(value: Any) -> str | None:
    if value is _USE_CONFIG:
        try:
            value = config.templates_dir()
        except Exception:  # a broken config must not stop a message
            log.warning("tasklens: cannot read [tasklens] templates_dir; using built-in templates", exc_info=True)
            value = None
    return str(value) if value else None


# --------------------------------------------------------------------------- views (what templates see)


def _redact(value: Any) -> Any:
    return events.redact(value)


def _bounded(value: Any, limit: int, depth: int = 0) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str) or depth >= 4:
        return truncate(value, limit)
    if isinstance(value, Mapping):
        return {truncate(k, 200): _bounded(v, limit, depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_bounded(v, limit, depth + 1) for v in list(value)[:50]]
    return truncate(value, limit)


def _text_field(value: Any, limit: int = _FIELD_LIMIT) -> str | None:
    if value is None:
        return None
    # Cut generously first (cheap on 1 MB), mask secrets, then cut to the real limit.
    return truncate(_redact(truncate(value, limit * 4)), limit)


def _traceback_field(value: Any) -> str | None:
    """Like :func:`_text_field` but keeps the end of a traceback: the raising frames and the exception."""
    if value is None:
        return None
    return bounded_tail(_redact(bounded_tail(value, _TRACEBACK_LIMIT * 4)), _TRACEBACK_LIMIT)


def _title(alert: Alert, task: str, tr: Localizer) -> str:
    """The alert's title; a built-in one (``Task failed: etl.load``) in the reader's language."""
    if not tr.localized or alert.kind is AlertKind.CUSTOM:  # a custom alert's title is the user's own text
        return alert.title
    name = f"{alert.dag_id}.{task}"
    for prefix, message in _BUILTIN_TITLES:
        if alert.title == prefix + name:
            return tr.gettext(message) % {"task": name}
    return alert.title


def _summary(alert: Alert, first_line: str, tr: Localizer) -> str:
    """The alert's summary; for built-in retry, duration and killed alerts, rebuilt from its data in the reader's
    language (``tasklens.rules`` writes them in English)."""
    data = alert.data or {}
    if not tr.localized:
        return alert.summary
    if alert.kind is AlertKind.RETRY and data.get("retry_number"):
        number = f"{data['retry_number']}/{data['retries']}" if data.get("retries") else str(data["retry_number"])
        text = tr.gettext("retry %(number)s") % {"number": number}
        if data.get("next_retry_at"):
            text += ", " + tr.gettext("at %(when)s") % {"when": tr.datetime(data["next_retry_at"])}
        cause = first_line or safe_text(data.get("reason") or "")
        return f"{text} · {alert.exception_type or tr.gettext('Failure')}: {cause}"
    if alert.kind is AlertKind.DURATION and isinstance(data.get("duration_s"), (int, float)):
        parts = [tr.gettext("ran %(duration)s") % {"duration": tr.duration(data["duration_s"], format_duration)}]
        if isinstance(data.get("max_duration_s"), (int, float)):
            limit = tr.duration(data["max_duration_s"], format_duration)
            parts.append(tr.gettext("limit %(limit)s") % {"limit": limit})
        median = data.get("median_s")
        if isinstance(median, (int, float)) and median > 0:
            factor = tr.number(round(data["duration_s"] / median, 1))
            median_text = tr.duration(median, format_duration)
            recent = tr.gettext("%(factor)s× its recent median of %(median)s")
            parts.append(recent % {"factor": factor, "median": median_text})
        return " · ".join(parts)
    if alert.kind is AlertKind.KILLED and alert.summary.startswith("killed: "):
        return tr.gettext("killed: %(reason)s") % {"reason": alert.summary[len("killed: "):]}
    return alert.summary


def _alert_view(alert: Alert, tr: Localizer | None = None) -> dict[str, Any]:
    data = dict(alert.data or {})
    traceback = data.pop("traceback", None)
    view_data = _redact(_bounded(data, _DATA_LIMIT))
    message = _text_field(alert.exception_message)
    first = ""
    for line in (message or "").splitlines():
        if line.strip():
            first = line.strip()
            break
    task = alert.task_id or ""
    if task and alert.map_index is not None and alert.map_index >= 0:
        task = f"{task}[{alert.map_index}]"
    try_label = ""
    if alert.try_number is not None:
        try_label = str(alert.try_number)
        if alert.max_tries is not None:
            try_label += f"/{alert.max_tries + 1}"
    return {
        "title": _text_field(_title(alert, task, tr or localizer()), 500) or "",
        "summary": _text_field(_summary(alert, first, tr or localizer()), 1000) or "",
        "rule": safe_text(alert.rule),
        "kind": alert.kind.value,
        "severity": alert.severity.value,
        "dag_id": _text_field(alert.dag_id, 250) or "",
        "task_id": _text_field(alert.task_id, 250) or "",
        "task": _text_field(task, 260) or "",
        "run_id": _text_field(alert.run_id, 250) or "",
        "map_index": alert.map_index,
        "try_number": alert.try_number,
        "max_tries": alert.max_tries,
        "try_label": try_label,
        "exception_type": _text_field(alert.exception_type, 250),
        "exception_message": message,
        "exception_first_line": first,
        "traceback": _traceback_field(traceback) if traceback else None,
        "log_url": alert.log_url,
        "template": alert.template,
        "labels": _redact(_bounded(dict(alert.labels or {}), 500)),
        "data": view_data,
        "occurred_at": safe_text(alert.occurred_at),
        "cascade": _cascade_text(data, tr),
    }


def _names(values: Sequence[Any], total: int, tr: Localizer) -> str:
    """``"a, b and c"``, or ``"a, b, c and 17 more"`` when ``total`` exceeds the names given."""
    names = [safe_text(v) for v in values]
    if total > len(names):
        return tr.gettext("%(names)s and %(num)s more") % {"names": ", ".join(names),
                                                          "num": tr.number(total - len(names))}
    if len(names) == 1:
        return names[0]
    return tr.gettext("%(names)s and %(last)s") % {"names": ", ".join(names[:-1]), "last": names[-1]}


def _cascade_text(data: Mapping[str, Any], tr: Localizer | None = None) -> str:
    """What a failure stopped from running (``tasklens.cascades``): "Not run (upstream failed): a, b. x and y will
    not run." or "", in ``tr``'s language (English by default)."""
    tr = tr or localizer()
    parts = []
    not_run = data.get("upstream_failed") or []
    if isinstance(not_run, list) and not_run:
        total = data.get("upstream_failed_count")
        names = _names(not_run, total if isinstance(total, int) else 0, tr)
        parts.append(tr.gettext("Not run (upstream failed): %(tasks)s.") % {"tasks": names})
    dags = data.get("will_not_run") or []
    if isinstance(dags, list) and dags:
        sentence = tr.ngettext("%(dags)s will not run.", "%(dags)s will not run.", len(dags))
        parts.append(sentence % {"dags": _names(dags, 0, tr)})
    return " ".join(parts)


def _item_view(snapshot: AlertSnapshot, base_url: str, tr: Localizer | None = None) -> dict[str, Any]:
    return {
        "id": snapshot.id,
        "alert": _alert_view(snapshot.alert, tr),
        "status": snapshot.status.value if isinstance(snapshot.status, Status) else str(snapshot.status),
        "occurrences": snapshot.occurrences,
        "first_seen": safe_text(snapshot.first_seen),
        "last_seen": safe_text(snapshot.last_seen),
        "alert_url": _safe_url(snapshot.alert_url, base_url),
        "log_url": _safe_url(snapshot.alert.log_url, base_url),
        "severity": snapshot.alert.severity,
    }


@functools.cache
def _empty_item() -> dict[str, Any]:
    return {
        "id": None,
        "alert": _alert_view(
            Alert(
                fingerprint="",
                rule="",
                kind=AlertKind.CUSTOM,
                severity=Severity.INFO,
                title="tasklens",
                summary="(no alerts)",
                dag_id="",
            )
        ),
        "status": Status.OPEN.value,
        "occurrences": 0,
        "first_seen": "",
        "last_seen": "",
        "alert_url": None,
        "log_url": None,
        "severity": Severity.INFO,
    }


def _template_names(notification_kind: str, alert: Alert) -> list[str]:
    if notification_kind == "resolve" and alert.kind in _RESOLVE_TEMPLATES:
        return [_RESOLVE_TEMPLATES[alert.kind], "resolve"]
    if notification_kind in ("digest", "escalation", "resolve"):
        return [notification_kind]
    kind_template = _KIND_TEMPLATES.get(alert.kind, "custom")
    names = [alert.template] if alert.template and alert.template != kind_template else []
    return [*names, kind_template]


def _localizer_of(notification: Notification) -> Localizer:
    """The notification's locale and timezone (from its route or channel); plain English without them."""
    return localizer(getattr(notification, "locale", None), getattr(notification, "timezone", None))


def _context(
    notification: Notification, items: list[dict[str, Any]], fmt: str, base_url: str, tr: Localizer
) -> dict[str, Any]:
    first: dict[str, Any] = items[0] if items else _empty_item()
    counts = Counter(item["alert"]["severity"] for item in items)
    return {
        "notification_kind": notification.kind,
        "channel": notification.channel,
        "items": items,
        "item": first,
        "alert": first["alert"],
        "count": len(items),
        "severity_counts": dict(counts),
        "dag_id": first["alert"].get("dag_id", ""),
        "run_id": first["alert"].get("run_id", ""),
        "fmt": fmt,
        "base_url": base_url,
        "incident": dict(notification.incident or {}),
        "localized": tr.localized,
        **_helpers(fmt, base_url, tr),
    }


def _overall_severity(notification: Notification) -> Severity:
    if not notification.items:
        return Severity.INFO
    return max((s.alert.severity for s in notification.items), key=lambda s: s.rank)


def _rendered(notification: Notification, fmt: str, base_url: str, override: str | None) -> dict[str, Any]:
    """headline/body (and digest lines) of ``notification`` in one format."""
    tr = _localizer_of(notification)
    items = [_item_view(s, base_url, tr) for s in notification.items]
    context = _context(notification, items, fmt, base_url, tr)
    first_alert = notification.items[0].alert if notification.items else None
    names = _template_names(notification.kind, first_alert) if first_alert else ["custom"]
    many = len(items) > 1
    if notification.kind in ("alert", "test") and many:
        names = ["digest"]
    if notification.incident:
        names, many = ["incident"], True  # members are listed even when this message carries one
    headline = _render_block(fmt, override, names, "headline", context)
    body = _render_block(fmt, override, names, "body", context)
    lines: list[str] = []
    if many or notification.kind == "digest":
        for item in items:
            item_context = {**context, "item": item, "alert": item["alert"]}
            lines.append(_render_block(fmt, override, ["digest"], "item", item_context))
    if notification.kind == "test":
        headline = tr.gettext("[test] %(headline)s") % {"headline": headline}
    return {
        "headline": headline,
        "body": body,
        "lines": lines if many or notification.kind == "digest" else [],
        "items": items,
        "context": context,
        "tr": tr,
    }


# --------------------------------------------------------------------------- Slack


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": truncate_mrkdwn(text, limit) or " ", "emoji": True}


def _mrkdwn(text: str, limit: int = SLACK_LIMITS["text"]) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": truncate_mrkdwn(text, limit) or " "}


def _value_name(value: str, tr: Localizer) -> str:
    return tr.gettext(_VALUE_NAMES[value]) if value in _VALUE_NAMES else value


def _alert_fields(item: dict[str, Any], tr: Localizer) -> list[tuple[str, str]]:
    """The labelled fields every channel shows first for one alert."""
    alert = item["alert"]
    return [
        (tr.gettext("DAG"), alert["dag_id"]),
        (tr.gettext("Task"), alert["task"]),
        (tr.gettext("Run"), alert["run_id"]),
        (tr.gettext("Try"), alert["try_label"]),
        (tr.gettext("Severity"), _value_name(alert["severity"], tr)),
        (tr.gettext("Occurrences"), tr.number(item["occurrences"])),
    ]


def _slack_fields(item: dict[str, Any], notification: Notification, tr: Localizer) -> list[dict[str, Any]]:
    pairs = _alert_fields(item, tr)
    if item["status"] != Status.OPEN.value or notification.kind == "resolve":
        pairs.append((tr.gettext("Status"), _value_name(item["status"], tr)))
    fields = [
        _mrkdwn(f"*{escape_mrkdwn(label)}*\n{escape_mrkdwn(value)}", SLACK_LIMITS["field"])
        for label, value in pairs
        if value
    ]
    return fields[: SLACK_LIMITS["fields"]]


def _slack_buttons(item: dict[str, Any], tr: Localizer, index: int = 0) -> dict[str, Any] | None:
    elements = []
    if item["log_url"]:
        elements.append(
            {
                "type": "button",
                "text": _plain(tr.gettext("View task log"), SLACK_LIMITS["button_text"]),
                "url": item["log_url"],
                "action_id": f"tasklens-log-{index}",
            }
        )
    if item["alert_url"]:
        elements.append(
            {
                "type": "button",
                "text": _plain(tr.gettext("Open in tasklens"), SLACK_LIMITS["button_text"]),
                "url": item["alert_url"],
                "action_id": f"tasklens-alert-{index}",
            }
        )
    return {"type": "actions", "elements": elements} if elements else None


def _slack_context(item: dict[str, Any], tr: Localizer) -> dict[str, Any]:
    alert = item["alert"]
    rule = f"`{escape_mrkdwn(alert['rule']).replace('`', 'ˋ')}`"
    # Translated text is escaped before the (already escaped) values go in.
    parts = [escape_mrkdwn(tr.gettext("tasklens · rule %(rule)s")) % {"rule": rule}]
    if item["first_seen"]:
        first_seen = escape_mrkdwn(tr.datetime(item["first_seen"]))
        parts.append(escape_mrkdwn(tr.gettext("first seen %(when)s")) % {"when": first_seen})
    if item["last_seen"] and item["last_seen"] != item["first_seen"]:
        last_seen = escape_mrkdwn(tr.datetime(item["last_seen"]))
        parts.append(escape_mrkdwn(tr.gettext("last seen %(when)s")) % {"when": last_seen})
    return {"type": "context", "elements": [_mrkdwn(" · ".join(parts))]}


def _pack_lines(lines: Sequence[str], budget_blocks: int) -> tuple[list[dict[str, Any]], int]:
    """Digest lines packed into sections of <= 3,000 chars; returns blocks and the lines left out."""
    limit = SLACK_LIMITS["text"]
    blocks: list[dict[str, Any]] = []
    current = ""
    used = 0
    for line in lines:
        line = truncate_mrkdwn(line, 600)
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) <= limit:
            current, used = candidate, used + 1
            continue
        if len(blocks) + 1 >= budget_blocks:
            break
        blocks.append({"type": "section", "text": _mrkdwn(current)})
        current, used = line, used + 1
    if current and len(blocks) < budget_blocks:
        blocks.append({"type": "section", "text": _mrkdwn(current)})
    elif current:
        used -= current.count("\n") + 1
    return blocks, len(lines) - used


def render_slack(notification: Notification, *, base_url: str, templates_dir: Any = _USE_CONFIG) -> dict[str, Any]:
    """Block Kit payload ``{"text": fallback, "blocks": [...]}`` for ``notification``.

    ``templates_dir`` defaults to ``[tasklens] templates_dir``; pass None for built-ins only.
    """
    override = _templates_dir(templates_dir)
    parts = _rendered(notification, "slack", base_url, override)
    tr: Localizer = parts["tr"]
    severity = _overall_severity(notification)
    if notification.kind == "resolve":
        icon = ":white_check_mark:"
    elif notification.kind == "escalation":
        icon = ":rotating_light:"
    else:
        icon = _EMOJI[severity]
    headline = parts["headline"] or tr.gettext("tasklens alert")
    items = parts["items"]
    blocks: list[dict[str, Any]] = [{"type": "header", "text": _plain(f"{icon} {headline}", SLACK_LIMITS["header"])}]
    if parts["body"]:
        blocks.append({"type": "section", "text": _mrkdwn(parts["body"])})
    if parts["lines"]:
        budget = SLACK_LIMITS["blocks"] - len(blocks) - 1  # room for the overflow note
        sections, left_out = _pack_lines(parts["lines"], budget)
        blocks.extend(sections)
        if left_out:
            more = tr.ngettext(
                "…and %(num)s more alert(s) in tasklens", "…and %(num)s more alert(s) in tasklens", left_out
            )
            blocks.append({"type": "context", "elements": [_mrkdwn(escape_mrkdwn(more % {"num": left_out}))]})
    elif items:
        item = items[0]
        if notification.kind != "resolve":
            fields = _slack_fields(item, notification, tr)
            if fields:
                blocks.append({"type": "section", "fields": fields})
        buttons = _slack_buttons(item, tr)
        if buttons:
            blocks.append(buttons)
        blocks.append(_slack_context(item, tr))
    fallback = f"{icon} {headline}"
    if parts["body"]:
        fallback += f"\n{parts['body']}"
    return {"text": truncate_mrkdwn(fallback, SLACK_LIMITS["text"]), "blocks": blocks[: SLACK_LIMITS["blocks"]]}


# --------------------------------------------------------------------------- email


def _email_fields(item: dict[str, Any], tr: Localizer) -> list[tuple[str, str]]:
    alert = item["alert"]
    pairs = [
        *_alert_fields(item, tr),
        (tr.gettext("Status"), _value_name(item["status"], tr)),
        (tr.gettext("First seen"), tr.datetime(item["first_seen"])),
        (tr.gettext("Last seen"), tr.datetime(item["last_seen"])),
        (tr.gettext("Rule"), alert["rule"]),
    ]
    return [(label, value) for label, value in pairs if value]


def _email_buttons(item: dict[str, Any], tr: Localizer) -> list[tuple[str, str]]:
    buttons = []
    if item["log_url"]:
        buttons.append((tr.gettext("View task log"), item["log_url"]))
    if item["alert_url"]:
        buttons.append((tr.gettext("Open in tasklens"), item["alert_url"]))
    return buttons


def render_email(
    notification: Notification, *, base_url: str, templates_dir: Any = _USE_CONFIG
) -> tuple[str, str, str]:
    """``(subject, html, text)`` for ``notification``: the same content as the Slack message.

    HTML is autoescaped by Jinja2; the subject has no line breaks (no header injection).
    """
    override = _templates_dir(templates_dir)
    severity = _overall_severity(notification)
    html_parts = _rendered(notification, "html", base_url, override)
    text_parts = _rendered(notification, "text", base_url, override)
    tr: Localizer = text_parts["tr"]
    label = _value_name("resolved" if notification.kind == "resolve" else severity.value, tr).upper()
    headline = text_parts["headline"] or tr.gettext("alert")
    # The resolve headline already says "Resolved: ..."; do not repeat it.
    prefix = "[tasklens]" if notification.kind == "resolve" else f"[tasklens] {label}:"
    subject = _subject_line(f"{prefix} {headline}")
    items = html_parts["items"]
    single = items[0] if items and not html_parts["lines"] else None
    layout = {
        "subject": subject,
        "severity": severity.value,
        "label": label,
        "color": "#039855" if notification.kind == "resolve" else _COLORS[severity],
        "fields": _email_fields(single, tr) if single else [],
        "buttons": _email_buttons(single, tr) if single else [],  # digest lines link each alert
        "traceback": single["alert"]["traceback"] if single and notification.kind != "resolve" else None,
        "count": len(items),
        "lang": (tr.catalogue or "en").replace("_", "-"),
    }
    html = _render_layout(
        "html",
        override,
        tr,
        {
            **layout,
            # Rendered by the autoescaping HTML environment: already safe.
            "headline": Markup(html_parts["headline"]),  # noqa: S704
            "body": Markup(html_parts["body"]),  # noqa: S704
            "lines": [Markup(line) for line in html_parts["lines"]],  # noqa: S704
        },
    )
    text = _render_layout(
        "text",
        override,
        tr,
        {
            **layout,
            "headline": text_parts["headline"],
            "body": text_parts["body"],
            "lines": text_parts["lines"],
        },
    )
    return subject, html, text


def _render_layout(fmt: str, override: str | None, tr: Localizer, context: Mapping[str, Any]) -> str:
    name = "_email.html.j2" if fmt == "html" else "_email.txt.j2"
    context = {**context, **_gettext_functions(fmt, tr)}
    dirs = [override, None] if override else [None]
    for directory in dirs:
        try:
            return _environment(fmt, directory).get_template(name).render(dict(context)).strip() + "\n"
        except jinja2.TemplateNotFound:
            continue
        except Exception:
            if directory is None:
                raise
            log.warning(
                "tasklens: email layout %s in %s failed to render; using the built-in one",
                name,
                directory,
                exc_info=True,
            )
    raise jinja2.TemplateNotFound(name)


# --------------------------------------------------------------------------- plain text (other channels)


def render_text(notification: Notification, *, base_url: str, templates_dir: Any = _USE_CONFIG) -> dict[str, Any]:
    """The plain-text parts of ``notification`` for channels that format their own payload (PagerDuty, Opsgenie,
    Teams, webhooks, notifiers): ``headline``, ``body``, digest ``lines`` and ``items``, each item a bounded,
    secret-masked view of one alert (``id``, ``alert`` fields, ``status``, ``occurrences``, ``first_seen``,
    ``last_seen``, ``alert_url``, ``log_url``). Nothing is escaped: the channel escapes for its target."""
    parts = _rendered(notification, "text", base_url, _templates_dir(templates_dir))
    return {key: parts[key] for key in ("headline", "body", "lines", "items")}
