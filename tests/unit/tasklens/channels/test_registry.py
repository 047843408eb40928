"""The channel registry and the rules file's validation of channel types and their options."""

from __future__ import annotations

import pytest

from tasklens.channels import CHANNEL_TYPES, ChannelType, build_channel, mirrors_acknowledge, register_channel_type
from tasklens.dispatch import channel_config_from_ruleset
from tasklens.exceptions import ConfigError
from tasklens.ruleset import parse_ruleset


def parse(channels: dict):
    return parse_ruleset({"channels": channels}, source="rules.yml", slack_conn_id="s", smtp_conn_id="e")


def test_every_new_type_parses_with_its_options_and_defaults():
    """pagerduty, opsgenie, teams, webhook and notifier channels load with their options, default connection and
    default rate."""
    ruleset = parse({
        "pd": {"type": "pagerduty", "host": "https://events.eu.pagerduty.com", "source": "prod"},
        "og": {"type": "opsgenie", "tags": ["data"], "conn_id": "og_conn"},
        "teams": {"type": "teams"},
        "hook": {"type": "webhook", "rate_limit_per_s": 10},
        "chat": {"type": "notifier", "class": "pkg.mod.MyNotifier", "kwargs": {"text": "{{ title }}"}},
    })
    pd, og, teams, hook, chat = (ruleset.channels[n] for n in ("pd", "og", "teams", "hook", "chat"))
    assert pd.options == {"host": "https://events.eu.pagerduty.com", "source": "prod"}
    assert (pd.conn_id, pd.rate_limit_per_s) == ("tasklens_pagerduty", 2.0)
    assert og.conn_id == "og_conn" and og.options == {"tags": ("data",)}
    assert teams.conn_id == "tasklens_teams" and hook.rate_limit_per_s == 10
    assert chat.options == {"class": "pkg.mod.MyNotifier", "kwargs": {"text": "{{ title }}"}}


@pytest.mark.parametrize(
    ("channel", "key", "fix"),
    [
        ({"type": "pagerdooty"}, "channels.x.type", "pagerduty"),
        ({"type": "teams", "host": "https://x"}, "channels.x.host", "allowed keys"),
        ({"type": "pagerduty", "host": "events.pagerduty.com"}, "channels.x.host", "https://"),
        ({"type": "notifier"}, "channels.x.class", "add class:"),
        ({"type": "notifier", "class": "NoDots"}, "channels.x.class", "module.Class"),
        ({"type": "notifier", "class": "a.B", "kwargs": ["x"]}, "channels.x.kwargs", "name: value"),
        ({"type": "opsgenie", "sorce": "x"}, "channels.x.sorce", "did you mean 'source'"),
    ],
)
def test_bad_channel_config_names_the_file_key_and_fix(channel, key, fix):
    """Unknown types, keys of another type, a host without scheme, a notifier without class: ConfigError with the
    file, the dotted key and the fix."""
    with pytest.raises(ConfigError) as caught:
        parse({"x": channel})
    assert caught.value.source == "rules.yml" and caught.value.key == key and fix in str(caught.value)


def test_rules_file_options_reach_the_channel(monkeypatch, tmp_path):
    """What the rules file sets on a channel is what the dispatcher's channel gets (options merged)."""
    from tasklens import config

    rules = tmp_path / "rules.yml"
    rules.write_text("channels:\n  pd:\n    type: pagerduty\n    host: http://127.0.0.1:9\n    source: prod\n")
    monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(rules))
    config.reset()
    try:
        found = channel_config_from_ruleset("pd")
    finally:
        config.reset()
    channel = build_channel("pd", found.type, found.options)
    assert (found.type, found.rate_per_s) == ("pagerduty", 2.0)
    assert (channel.host, channel.source, channel.conn_id) == ("http://127.0.0.1:9", "prod", "tasklens_pagerduty")


def test_a_type_is_one_registry_entry():
    """Registering a ChannelType makes the rules file accept it and build_channel build it."""
    class Echo:
        def __init__(self, name, options):
            self.name, self.options = name, options

        def send(self, notification, *, timeout_s=None):
            return None

    register_channel_type("echo", ChannelType(Echo, options={"url": "url"}, mirrors_acknowledge=True))
    try:
        ruleset = parse({"e": {"type": "echo", "url": "https://example.com"}})
        channel = build_channel("e", "echo", {"options": ruleset.channels["e"].options})
        assert channel.options == {"url": "https://example.com"} and mirrors_acknowledge("echo")
    finally:
        del CHANNEL_TYPES["echo"]


def test_only_incident_tools_and_webhooks_mirror_acknowledge():
    """The store queues ack deliveries only to types that act on them."""
    assert [t for t in CHANNEL_TYPES if mirrors_acknowledge(t)] == ["pagerduty", "opsgenie", "webhook"]
