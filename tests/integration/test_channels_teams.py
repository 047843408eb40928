"""The Teams channel (Adaptive Card to a Workflows webhook) through the real outbox and Dispatcher against a local
webhook that enforces Teams' 28 KB limit: hostile text arrives escaped, digests stay under the limit."""

from __future__ import annotations

import json
import re

import pytest

from tasklens.channels.teams import escape_markdown
from tests.channel_servers import TeamsServer
from tests.integration.channel_harness import Outbox

pytestmark = pytest.mark.integration

#: Slack's hostile texts (tests/unit/tasklens/test_messages.py) plus every Teams markdown construct and broken Unicode.
HOSTILE = (
    "<!channel> <@U123> <http://evil|click> & &amp; **bold** _it_ ~strike~ `code` [link](http://evil) "
    "<at>everyone</at> \\*not\\* \ud800 " + b"\xff".decode("utf-8", errors="surrogateescape")
)
HOSTILE_LINES = "# heading\n- bullet\n+ plus\n1. numbered\n> quote"
_UNESCAPED = re.compile(r"(?<!\\)[*_~`\[\]<>#]")


def _texts(card: dict) -> list[str]:
    return [block["text"] for block in card["body"] if block["type"] == "TextBlock"]


@pytest.fixture
def teams(monkeypatch):
    with TeamsServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_TEAMS", server.conn_json())
        yield server


@pytest.fixture
def outbox(tmp_path, teams):
    box = Outbox(tmp_path, {"teams": ("teams", {})})
    yield box
    box.close()


def test_card_has_headline_facts_and_buttons(outbox, teams):
    """One alert: an Adaptive Card with the headline, the failure, a FactSet and buttons to the log and tasklens."""
    outbox.raise_alert("teams", log_url="http://airflow.example/log/1")
    outbox.dispatcher().run_once()
    (card,) = teams.cards
    assert card["type"] == "AdaptiveCard" and "Task failed: etl.load" in _texts(card)[0]
    facts = {f["title"]: f["value"] for b in card["body"] if b["type"] == "FactSet" for f in b["facts"]}
    assert facts["DAG"] == "etl" and facts["Severity"] == "critical"
    assert [a["title"] for a in card["actions"]] == ["View task log", "Open in tasklens"]


def test_hostile_exception_text_arrives_escaped(outbox, teams):
    """An exception message full of markdown, mentions and broken Unicode shows as typed: every markdown character
    is backslash-escaped, line-start markers cannot make headings or lists, the JSON is valid UTF-8."""
    outbox.raise_alert("teams", exception_message=HOSTILE)
    outbox.dispatcher().run_once()
    (card,) = teams.cards
    body = next(text for text in _texts(card) if "everyone" in text)
    assert not _UNESCAPED.search(body), body
    assert "\\<at\\>everyone\\</at\\>" in body and "\\[link\\](http://evil)" in body and "\ufffd" in body
    json.dumps(card, ensure_ascii=False).encode("utf-8")


def test_line_start_markers_are_escaped():
    """Headings, bullets, numbered lists and quotes at line starts are escaped (Teams would format them)."""
    escaped = escape_markdown(HOSTILE_LINES).splitlines()
    assert escaped == ["\\# heading", "\\- bullet", "\\+ plus", "1\\. numbered", "\\> quote"]


def test_a_storm_digest_stays_under_28_kb_with_and_n_more(outbox, teams):
    """50 alerts with long hostile task ids in one digest: the card is cut to fit Teams' limit and says how many
    alerts were left out; Teams accepts it (it answers 413 above 28 KB)."""
    for i in range(50):
        outbox.raise_alert("teams", task_id=f"t{i}_" + "<*_`[]>#-" * 25)
    report = outbox.dispatcher(digest_max_items=50).run_once()
    assert report.deliveries_sent == 50 and teams.answers == [202]
    (card,) = teams.cards
    more = [t for t in _texts(card) if t.startswith("…and ")]
    shown = sum(1 for t in _texts(card) if "Task failed" in t)
    assert teams.sizes[0] <= 28 * 1024 and more and shown < 50
    assert more[0] == f"…and {50 - shown} more alert(s) in tasklens"


def test_a_huge_single_alert_fits(outbox, teams):
    """A 1 MB hostile exception message: one card under the limit, accepted."""
    outbox.raise_alert("teams", exception_message=("ü<*>" * 250_000))
    assert outbox.dispatcher().run_once().deliveries_sent == 1
    assert teams.sizes[0] <= 28 * 1024


def test_the_webhook_signature_never_appears_in_errors(outbox, teams, monkeypatch):
    """A wrong signature in the URL: 401, dead, and the URL's query (its secret) is nowhere in the error."""
    monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_TEAMS",
                       json.dumps({"conn_type": "http", "password": teams.webhook_url.replace("S3CRETSIG", "L3AKED")}))
    outbox.raise_alert("teams")
    report = outbox.dispatcher().run_once()
    assert report.dead == 1
    error = outbox.store.list_alerts()[0]["last_error"]
    assert "401" in error and "L3AKED" not in error and "sig=" not in error
