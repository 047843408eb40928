"""Messages in the reader's language: catalogues complete for every template string, French and Japanese Slack and
email with local dates, English unchanged by default, user data never translated and still escaped, locale checks."""

from __future__ import annotations

import dataclasses
import email.policy
import json
import logging
import re
import subprocess
import sys

import pytest
from babel.messages.pofile import read_po

from scripts import update_catalogues
from tasklens import catalogues, config, pipeline
from tasklens.__main__ import main
from tasklens.alerts import Alert, AlertKind, AlertSnapshot, Notification, Status
from tasklens.exceptions import ConfigError
from tasklens.i18n import localizer
from tasklens.messages import render_email, render_slack
from tasklens.ruleset import parse_rules_text
from tasklens.store import reset_stores
from tasklens.testing import SlackSink, SmtpSink, failed_event
from tests.unit.tasklens.test_messages import failure as messages_failure

BASE = "http://airflow.example.com"
REQUIRED = ("en", "fr", "de", "es", "pt_BR", "ja", "zh_Hans")
HOSTILE = "<!channel> <@U123> *bold* & <https://evil.example|click> </td><script>alert(1)</script>"


def failure(**fields) -> Alert:
    """test_messages' failure, with a one-line exception message."""
    return messages_failure(**{"exception_message": "boom", **fields})


def note(alert: Alert, *, locale=None, zone=None, kind="alert") -> Notification:
    snapshot = AlertSnapshot(
        id=7, alert=alert, status=Status.OPEN, occurrences=3, first_seen="2025-01-01T14:00:00+00:00",
        last_seen="2025-01-01T14:10:00+00:00", alert_url="/tasklens/alerts/7",
    )
    return Notification(kind=kind, channel="slack", items=(snapshot,), locale=locale, timezone=zone)


def slack_text(payload) -> str:
    return json.dumps(payload, ensure_ascii=False)


# --------------------------------------------------------------------------- catalogues


def _catalogue(name: str):
    with (catalogues.CATALOGUE_DIR / f"{name}.po").open("rb") as handle:
        return read_po(handle, locale=name)


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"%\([a-z_]+\)s", text))


def test_the_required_languages_ship():
    """English, French, German, Spanish, Portuguese (Brazil), Japanese and Simplified Chinese have catalogues."""
    assert set(REQUIRED) <= set(catalogues.available_catalogues())


@pytest.mark.parametrize("name", catalogues.available_catalogues())
def test_every_template_string_is_translated_in_every_catalogue(name):
    """Babel's extractors over the templates and messages.py find no string the catalogue lacks or leaves empty;
    each translation keeps the placeholders."""
    catalogue = _catalogue(name)
    missing, empty, broken = [], [], []
    for message in update_catalogues.extract():
        if not message.id:
            continue
        found = catalogue.get(message.id)
        if found is None:
            missing.append(message.id)
            continue
        forms = found.string if isinstance(found.string, tuple) else (found.string,)
        if not all(forms) or found.fuzzy or len(forms) != (catalogue.num_plurals if found.pluralizable else 1):
            empty.append(message.id)
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        expected = set().union(*(_placeholders(i) for i in ids))
        for form in forms:
            if _placeholders(form) - expected:
                broken.append((message.id, form))
            if "%(num)s" not in form and "%(num)s" not in ids[0] and _placeholders(form) != _placeholders(ids[0]):
                broken.append((message.id, form))
    assert not missing, f"{name}.po lacks {missing}: run scripts/update_catalogues.py and translate"
    assert not empty, f"{name}.po leaves {empty} untranslated or fuzzy"
    assert not broken, f"{name}.po: placeholders wrong in {broken}"


def test_the_catalogue_template_is_up_to_date():
    """messages.pot holds exactly the strings the templates use (scripts/update_catalogues.py was run)."""
    with (catalogues.CATALOGUE_DIR / "messages.pot").open("rb") as handle:
        shipped = {m.id for m in read_po(handle) if m.id}
    assert shipped == {m.id for m in update_catalogues.extract() if m.id}


def test_a_missing_template_string_fails_the_check(tmp_path, monkeypatch):
    """The completeness check is real: a template with a new word is reported as missing from every catalogue."""
    package = tmp_path / "tasklens"
    (package / "templates").mkdir(parents=True)
    for name in update_catalogues._PYTHON_SOURCES:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text("")
    (package / "templates" / "new_kind.j2").write_text('{% block headline %}{{ _("Brand new words") }}{% endblock %}')
    monkeypatch.setattr(update_catalogues, "PACKAGE", package)
    extracted = {m.id for m in update_catalogues.extract() if m.id}
    assert extracted == {"Brand new words"}
    assert all(_catalogue(name).get("Brand new words") is None for name in REQUIRED)


@pytest.mark.parametrize(
    ("requested", "served"),
    [("fr", "fr"), ("fr_CA", "fr"), ("de-DE", "de"), ("pt-br", "pt_BR"), ("pt", "pt_BR"), ("zh_CN", "zh_Hans"),
     ("zh-Hans", "zh_Hans"), ("ja_JP", "ja"), ("zh_TW", None), ("xx", None), ("fr; DROP", None), ("", None)],
)
def test_a_locale_finds_its_catalogue(requested, served):
    """Regional variants use their language's catalogue; Traditional Chinese and unknown names find none."""
    assert catalogues.catalogue_for(requested) == served


# --------------------------------------------------------------------------- rendering


def test_a_french_message_is_french_with_paris_dates():
    """locale fr + Europe/Paris: French headline, labels, buttons and severity; dates in French at Paris time."""
    payload = render_slack(note(failure(), locale="fr", zone="Europe/Paris"), base_url=BASE, templates_dir=None)
    text = slack_text(payload)
    assert payload["blocks"][0]["text"]["text"] == ":red_circle: Échec de la tâche\u00a0: etl.load"
    assert "*Tâche*\\nload" in text and "*Gravité*\\ncritique" in text and "Voir le journal de la tâche" in text
    assert "vue pour la première fois le 1 janvier 2025" in text and "15:00:00" in text  # 14:00 UTC in Paris
    subject, html, plain = render_email(note(failure(), locale="fr", zone="Europe/Paris"), base_url=BASE,
                                        templates_dir=None)
    assert subject == "[tasklens] CRITIQUE: Échec de la tâche\u00a0: etl.load"
    assert '<html lang="fr">' in html and "Première occurrence" in html and "1 janvier 2025" in html
    assert "Pile d’appels (fin)" in plain and "Envoyé par tasklens." in plain


def test_a_japanese_message_is_japanese_with_tokyo_dates():
    """locale ja + Asia/Tokyo: Japanese texts and a Japanese date at Tokyo time."""
    text = slack_text(render_slack(note(failure(), locale="ja", zone="Asia/Tokyo"), base_url=BASE, templates_dir=None))
    assert "タスク失敗：etl.load" in text and "*重大度*\\n重大" in text and "タスクログを表示" in text
    assert "初回検知 2025年1月1日 23:00:00" in text  # 14:00 UTC is 23:00 in Tokyo
    subject, html, _ = render_email(note(failure(), locale="ja", zone="Asia/Tokyo"), base_url=BASE, templates_dir=None)
    assert subject == "[tasklens] 重大: タスク失敗：etl.load" and "最終検知" in html


def test_durations_and_numbers_follow_the_locale():
    """A duration alert in German says "5 Minuten" and a decimal comma, not tasklens's compact English."""
    alert = failure(kind=AlertKind.DURATION, title="Task ran long: etl.load", summary="ran 5m (limit 1m)",
                    data={"duration_s": 300.0, "max_duration_s": 60.0, "median_s": 90.0})
    text = slack_text(render_slack(note(alert, locale="de"), base_url=BASE, templates_dir=None))
    assert "Task lief zu lange: etl.load" in text
    assert "lief 5 Minuten · Limit 60 Sekunden · das 3,3-Fache des jüngsten Medians (2 Minuten)" in text


def test_retry_and_killed_summaries_are_rebuilt_in_the_readers_language():
    """The English summaries tasklens.rules writes are rebuilt from data: a French retry at Paris time, a French
    kill reason; the exception text in them stays as raised, escaped."""
    retry = failure(kind=AlertKind.RETRY, title="Task retrying: etl.load", exception_message="<!here> quota",
                    summary="retry 2/4 at 14:05 UTC after ValueError: <!here> quota",
                    data={"retry_number": 2, "retries": 4, "next_retry_at": "2025-01-01T14:05:00+00:00"})
    text = slack_text(render_slack(note(retry, locale="fr", zone="Europe/Paris"), base_url=BASE, templates_dir=None))
    assert "*Nouvelle tentative*: tentative 2/4, prévue le 1 janvier 2025" in text and "15:05:00" in text
    assert "ValueError: &lt;!here&gt; quota" in text and "retry 2/4 at" not in text
    killed = failure(kind=AlertKind.KILLED, title="Task killed: etl.load", summary="killed: SIGKILL (OOM?)")
    items = tuple(AlertSnapshot(id=i, alert=a, status=Status.OPEN, occurrences=1, first_seen="", last_seen="")
                  for i, a in enumerate((killed, retry)))
    digest = slack_text(render_slack(Notification(kind="digest", channel="slack", items=items, locale="fr"),
                                     base_url=BASE, templates_dir=None))
    assert "Tâche arrêtée de force\u00a0: etl.load* · arrêt forcé\u00a0: SIGKILL (OOM?)" in digest


def test_without_a_locale_messages_stay_english_and_unchanged():
    """No locale or timezone: English words, ISO timestamps, the same bytes as a notification made before locales
    existed; locale en changes only the dates."""
    legacy = Notification(kind="alert", channel="slack", items=note(failure()).items)
    default = render_slack(note(failure()), base_url=BASE, templates_dir=None)
    assert default == render_slack(legacy, base_url=BASE, templates_dir=None)
    assert "first seen 2025-01-01T14:00:00+00:00" in slack_text(default)
    assert default["blocks"][0]["text"]["text"] == ":red_circle: Task failed: etl.load"
    english = render_slack(note(failure(), locale="en"), base_url=BASE, templates_dir=None)
    assert english["blocks"][:3] == default["blocks"][:3]
    assert "first seen January 1, 2025" in slack_text(english)


def test_a_timezone_alone_keeps_english_words_with_local_dates():
    """timezone without locale: English texts, dates written out in that zone."""
    text = slack_text(render_slack(note(failure(), zone="America/New_York"), base_url=BASE, templates_dir=None))
    assert "Task failed: etl.load" in text and "*Severity*\\ncritical" in text
    assert "first seen January 1, 2025" in text and "9:00:00" in text and "EST" in text  # 14:00 UTC


def test_built_in_titles_are_translated_but_custom_titles_are_not():
    """A killed-and-retrying title reads in Spanish in a digest line; a custom alert's title stays the user's own."""
    killed = failure(kind=AlertKind.KILLED, title="Task killed (will retry): etl.load")
    custom = failure(kind=AlertKind.CUSTOM, rule="custom", title="Task failed: etl.load", task_id="load")
    items = tuple(AlertSnapshot(id=i, alert=a, status=Status.OPEN, occurrences=1, first_seen="", last_seen="")
                  for i, a in enumerate((killed, custom)))
    notification = Notification(kind="digest", channel="slack", items=items, locale="es")
    text = slack_text(render_slack(notification, base_url=BASE, templates_dir=None))
    assert "Tarea terminada a la fuerza (se reintentará): etl.load" in text and "*Task failed: etl.load*" in text


def test_slack_action_buttons_speak_the_messages_language():
    """Acknowledge / Mute 1 h / Resolve (and Resolve's confirmation) read in French on a French message and stay
    English on a message without a locale; their action ids never change."""
    from tasklens.channels.slack import with_action_buttons

    def buttons(notification):
        body = with_action_buttons(render_slack(notification, base_url=BASE, templates_dir=None), notification)
        (actions,) = [block for block in body["blocks"] if block["type"] == "actions"]
        return [e for e in actions["elements"] if e["action_id"].startswith("tasklens-") and "value" in e]

    french = buttons(note(failure(), locale="fr"))
    assert [b["text"]["text"] for b in french] == ["Acquitter", "Sourdine 1 h", "Résoudre"]
    assert french[2]["confirm"]["title"]["text"] == "Résoudre cette alerte\u00a0?"
    assert french[2]["confirm"]["deny"]["text"] == "Annuler"
    english = buttons(note(failure()))
    assert [b["text"]["text"] for b in english] == ["Acknowledge", "Mute 1 h", "Resolve"]
    assert [b["action_id"] for b in french] == [b["action_id"] for b in english]


def test_an_override_template_can_use_the_catalogues(tmp_path):
    """A template in templates_dir may call _() and {% trans %}: catalogue words are translated, its own stay."""
    (tmp_path / "failure.j2").write_text(
        '{% block headline %}{{ _("Task failed: %(task)s", task=alert.task) }} (team data){% endblock %}\n'
        "{% block body %}{% trans reason=alert.exception_first_line %}Reason: {{ reason }}{% endtrans %}"
        "{% endblock %}\n"
    )
    payload = render_slack(note(failure(exception_message="<!channel> x"), locale="de"), base_url=BASE,
                           templates_dir=tmp_path)
    assert payload["blocks"][0]["text"]["text"] == ":red_circle: Task fehlgeschlagen: load (team data)"
    assert payload["blocks"][1]["text"]["text"] == "Grund: &lt;!channel&gt; x"


def test_user_data_is_never_translated():
    """Ids and exception text that happen to be catalogue words stay as the user wrote them."""
    alert = failure(dag_id="Severity", task_id="Failure", exception_type="Killed", exception_message="Duration",
                    title="Task failed: Severity.Failure")
    text = slack_text(render_slack(note(alert, locale="fr"), base_url=BASE, templates_dir=None))
    assert "*DAG*\\nSeverity" in text and "*Tâche*\\nFailure" in text and "*Killed*: Duration" in text
    assert "Gravité\\nSeverity" not in text and "Échec de la tâche\u00a0: Severity.Failure" in text


@pytest.mark.parametrize("locale", ["fr", "ja"])
def test_a_translated_message_still_escapes_hostile_text(locale):
    """Hostile exception text, ids and reasons in a translated message ping nobody in Slack and inject no HTML."""
    alert = failure(dag_id="d<b>&", task_id="t<!here>", exception_message=HOSTILE,
                    data={"reason": HOSTILE, "traceback": HOSTILE})
    payload = render_slack(note(alert, locale=locale), base_url=BASE, templates_dir=None)
    for text in re.findall(r'"text": "((?:[^"\\]|\\.)*)"', json.dumps(payload, ensure_ascii=False)):
        assert "<!channel>" not in text and "<@U123>" not in text and "<https://evil" not in text
        assert "<!here>" not in text and "d<b>" not in text
    assert "&lt;!channel&gt;" in slack_text(payload)
    subject, html, _ = render_email(note(alert, locale=locale), base_url=BASE, templates_dir=None)
    assert "<script>" not in html and "&lt;script&gt;" in html and "d&lt;b&gt;&amp;" in html
    assert "\n" not in subject and "<!here>" in subject  # a subject is plain text, free of line breaks


def test_an_unknown_locale_falls_back_to_english_at_runtime(caplog):
    """A locale with no catalogue (a rules file from a newer tasklens, say) renders English and says why once."""
    with caplog.at_level(logging.WARNING, logger="tasklens.i18n"):
        payload = render_slack(note(failure(), locale="tlh"), base_url=BASE, templates_dir=None)
    assert payload["blocks"][0]["text"]["text"] == ":red_circle: Task failed: etl.load"
    assert "no message catalogue for locale 'tlh'" in caplog.text
    assert localizer("tlh").gettext("Severity") == "Severity"


# --------------------------------------------------------------------------- configuration


def test_routes_and_channels_take_a_locale_and_timezone():
    """locale/timezone on a route and a channel are validated and normalised; the route's wins."""
    ruleset = parse_rules_text(
        "channels:\n  paris: {type: slack, locale: fr, timezone: Europe/Paris}\n"
        "routes:\n  - {name: br, channels: [paris], locale: pt-br}\n  - {name: plain, channels: [paris]}\n"
    )
    from tasklens.routing import message_language

    assert ruleset.route("br").locale == "pt_BR" and ruleset.channels["paris"].locale == "fr"
    assert message_language(ruleset, "br", "paris") == ("pt_BR", "Europe/Paris")
    assert message_language(ruleset, "plain", "paris") == ("fr", "Europe/Paris")
    assert message_language(ruleset, "plain", "slack") == (None, None)


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("routes:\n  - {channels: [slack], locale: klingon}\n", "routes[0].locale", "no message catalogue"),
        ("routes:\n  - {channels: [slack], timezone: Mars/Olympus}\n", "routes[0].timezone", "unknown timezone"),
        ("channels:\n  s2: {type: slack, locale: zh_TW}\n", "channels.s2.locale", "no message catalogue"),
    ],
)
def test_a_bad_locale_or_timezone_names_the_key_and_the_fix(text, key, problem):
    """An unknown locale or timezone is a config error naming the file, the key and the fix."""
    with pytest.raises(ConfigError) as caught:
        parse_rules_text(text, source="rules.yml")
    message = str(caught.value)
    assert "rules.yml" in message and key in message and problem in message
    assert "fr" in message or "Europe/Paris" in message


def test_check_config_reports_an_unknown_locale(tmp_path, monkeypatch, capsys):
    """tasklens check-config exits 1 on an unknown locale, naming the file, the key and the shipped catalogues."""
    rules = tmp_path / "rules.yml"
    rules.write_text("routes:\n  - name: r\n    channels: [slack]\n    locale: xx\n")
    monkeypatch.setenv("AIRFLOW__TASKLENS__STORE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(rules))
    config.reset()
    reset_stores()
    try:
        assert main(["check-config"]) == 1
    finally:
        reset_stores()
        config.reset()
    out = capsys.readouterr().out
    assert "rules.yml" in out and "routes[0].locale" in out and "de, en, es, fr, ja, pt_BR, zh_Hans" in out


def test_checking_a_locale_loads_no_babel():
    """Task processes read the rules file: validating `locale:` there must not import Babel (~50 ms)."""
    code = (
        "import sys\n"
        "from tasklens.ruleset import parse_rules_text\n"
        "parse_rules_text('routes:\\n  - {channels: [slack], locale: fr, timezone: Europe/Paris}\\n')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'babel'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


# --------------------------------------------------------------------------- through the store and dispatcher


def test_a_french_route_delivers_french_slack_and_email(tmp_path, monkeypatch, alert_store):
    """A failure routed by a `locale: fr` route reaches a local Slack server and a local SMTP server in French,
    through the real pipeline, store, dispatcher and provider hooks; a route without a locale stays English."""
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "channels:\n  mail: {type: email, to: [ops@example.com]}\n"
        "routes:\n"
        "  - {name: paris, match: {dag_id: [fr_*]}, channels: [slack, mail], locale: fr, timezone: Europe/Paris,"
        " group_wait: 0s}\n"
        "  - {name: rest, channels: [slack], group_wait: 0s}\n"
    )
    monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(rules))
    config.reset()
    pipeline.handle(failed_event(dag_id="fr_sales", task_id="load", exception_type="ValueError",
                                 exception_message="<!channel> montant négatif"))
    pipeline.handle(failed_event(dag_id="us_sales", task_id="load", exception_type="ValueError",
                                 exception_message="boom"))
    with SlackSink() as slack, SmtpSink() as smtp:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SLACK", slack.conn_uri())
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SMTP", smtp.conn_json())
        assert main(["dispatch", "--once", "--drain"]) == 0  # Slack's 1 message/s spaces the two posts
        (mail,) = smtp.wait_for(1)
        posted = [json.dumps(body, ensure_ascii=False) for body in slack.messages]
    (french,) = [body for body in posted if "fr_sales" in body]
    (english,) = [body for body in posted if "us_sales" in body]
    assert "Échec de la tâche\u00a0: fr_sales.load" in french and "&lt;!channel&gt; montant négatif" in french
    assert "Task failed: us_sales.load" in english and "Gravité" not in english
    message = email.message_from_bytes(mail.as_bytes(), policy=email.policy.default)
    html = message.get_body(("html",)).get_content()
    assert "Échec de la tâche" in str(message["Subject"]) and "Première occurrence" in html
    assert re.search(r"\d{1,2} [a-zéû]+\.? 20\d\d", html)  # a French date ("27 novembre 2026")


def test_test_alert_speaks_the_channels_language(tmp_path, monkeypatch):
    """tasklens test-alert --channel <name> sends in that channel's locale."""
    rules = tmp_path / "rules.yml"
    rules.write_text("channels:\n  slack_es: {type: slack, locale: es}\n")
    monkeypatch.setenv("AIRFLOW__TASKLENS__STORE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(rules))
    config.reset()
    try:
        with SlackSink() as slack:
            monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SLACK", slack.conn_uri())
            assert main(["test-alert", "--channel", "slack_es"]) == 0
            (body,) = slack.messages
    finally:
        config.reset()
    assert "[prueba] tasklens test message" in json.dumps(body, ensure_ascii=False)


def test_notification_language_fields_default_to_none():
    """Notifications built without a language (older callers, users' code) keep working."""
    plain = Notification(kind="alert", channel="c", items=())
    assert (plain.locale, plain.timezone) == (None, None)
    assert dataclasses.replace(plain, locale="fr").locale == "fr"
