"""An HTML rendering of a Slack Block Kit message (the blocks tasklens posts: header, section with text or fields,
actions with buttons, context, divider), close enough to Slack's look for a screenshot of the real payload.

Slack's mrkdwn arrives escaped (``&amp;``, ``&lt;``, ``&gt;``); links ``<url|text>``, ``*bold*``, ``_italic_``,
`` `code` `` and the emoji codes tasklens uses are rendered, everything else is shown as text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_page"]

#: The emoji codes tasklens uses, drawn with CSS (a headless Chromium here has no emoji font).
_EMOJI = {
    ":red_circle:": '<span class="dot" style="background:#d92d20"></span>',
    ":large_orange_circle:": '<span class="dot" style="background:#f79009"></span>',
    ":large_blue_circle:": '<span class="dot" style="background:#1570ef"></span>',
    ":white_check_mark:": '<span class="check">✔</span>',
    ":rotating_light:": '<span class="dot" style="background:#d92d20;border-radius:3px"></span>',
    ":warning:": '<span class="dot" style="background:#f79009;border-radius:3px"></span>',
}
_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")
_STYLE = """
body { font-family: "Lato", "Noto Sans", "DejaVu Sans", sans-serif; background: #f8f8f8; margin: 0; padding: 24px; }
.msg { display: flex; gap: 12px; background: #fff; border: 1px solid #e2e2e2; border-radius: 8px; padding: 16px 20px;
       max-width: 720px; margin-bottom: 18px; color: #1d1c1d; font-size: 15px; line-height: 1.46; }
.avatar { width: 36px; height: 36px; border-radius: 6px; background: #4a154b; color: #fff; font-weight: 700;
          display: flex; align-items: center; justify-content: center; flex: none; }
.who { font-weight: 900; } .app { background: #e8e8e8; color: #616061; font-size: 11px; border-radius: 3px;
       padding: 1px 4px; margin-left: 4px; } .time { color: #616061; font-size: 12px; margin-left: 6px; }
.caption { color: #616061; font-size: 13px; margin: 0 0 6px 2px; }
h3 { font-size: 18px; margin: 6px 0; } .section { margin: 6px 0; }
.fields { display: grid; grid-template-columns: 1fr 1fr; gap: 6px 24px; margin: 8px 0; }
.actions { display: flex; flex-wrap: wrap; gap: 8px; margin: 10px 0; }
.btn { border: 1px solid #c5c5c5; border-radius: 4px; padding: 3px 12px; font-weight: 700; font-size: 14px;
       background: #fff; color: #1d1c1d; } .btn.primary { background: #007a5a; border-color: #007a5a; color: #fff; }
.btn.link::after { content: " ↗"; color: #616061; } .context { color: #616061; font-size: 12px; margin: 6px 0; }
code { background: #f4f4f4; border: 1px solid #ddd; border-radius: 3px; padding: 0 3px; color: #c01343; }
.dot { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 50%; vertical-align: -0.05em; }
.check { display: inline-block; background: #2eb67d; color: #fff; border-radius: 3px; font-size: 0.8em;
         width: 1.15em; text-align: center; } a { color: #1264a3; text-decoration: none; }
hr { border: none; border-top: 1px solid #ddd; }
"""


def _inline(text: str) -> str:
    """Escaped text with Slack's inline formatting."""
    out = html.escape(html.unescape(text))
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"<b>\1</b>", out)
    out = re.sub(r"(?<![\w_])_([^_\n]+)_(?![\w_])", r"<i>\1</i>", out)
    for code, emoji in _EMOJI.items():
        out = out.replace(code, emoji)
    return out.replace("\n", "<br>")


def _mrkdwn(text: str) -> str:
    parts, last = [], 0
    for match in _LINK.finditer(text):
        parts.append(_inline(text[last:match.start()]))
        target, label = match.group(1), match.group(2) or match.group(1)
        href = html.escape(html.unescape(target), quote=True)
        parts.append(f'<a href="{href}">{_inline(label)}</a>')
        last = match.end()
    parts.append(_inline(text[last:]))
    return "".join(parts)


def _text(obj: Mapping[str, Any] | None) -> str:
    if not obj:
        return ""
    if obj.get("type") == "mrkdwn":
        return _mrkdwn(obj["text"])
    plain = html.escape(obj.get("text", ""))
    for code, emoji in _EMOJI.items():
        plain = plain.replace(code, emoji)
    return plain


def _block(block: Mapping[str, Any]) -> str:
    kind = block.get("type")
    if kind == "header":
        return f"<h3>{_text(block.get('text'))}</h3>"
    if kind == "section":
        body = f'<div class="section">{_text(block.get("text"))}</div>' if block.get("text") else ""
        if block.get("fields"):
            body += '<div class="fields">' + "".join(f"<div>{_text(f)}</div>" for f in block["fields"]) + "</div>"
        return body
    if kind == "actions":
        buttons = []
        for element in block.get("elements", ()):
            classes = ["btn", element.get("style", "")] + (["link"] if element.get("url") else [])
            buttons.append(f'<span class="{" ".join(c for c in classes if c)}">{_text(element.get("text"))}</span>')
        return '<div class="actions">' + "".join(buttons) + "</div>"
    if kind == "context":
        return '<div class="context">' + " ".join(_text(e) for e in block.get("elements", ())) + "</div>"
    if kind == "divider":
        return "<hr>"
    return ""


def render_page(messages: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """One HTML page showing each ``(caption, message)`` as Slack would, posted by the tasklens app."""
    cards = []
    for caption, message in messages:
        blocks = "".join(_block(b) for b in message.get("blocks") or ())
        cards.append(
            f'<p class="caption">{html.escape(caption)}</p><div class="msg"><div class="avatar">tl</div><div>'
            f'<span class="who">tasklens</span><span class="app">APP</span><span class="time">09:41</span>'
            f"{blocks}</div></div>"
        )
    return f"<!doctype html><meta charset='utf-8'><style>{_STYLE}</style><body>{''.join(cards)}</body>"
