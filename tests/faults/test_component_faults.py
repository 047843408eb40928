"""Faults 8-15, 18 and 20 of the promise, each injected into real components (store, dispatcher, channels against
local Slack and SMTP servers, PostgreSQL, dispatcher and task processes); ``benchmarks/faults.py`` runs the same
scenarios and prints the table. Each test asserts no broken expectation and the fault's key numbers.
"""

from __future__ import annotations

import pytest

from tests.faults import component_scenarios as scenarios
from tests.integration.postgres import postgres_server

pytestmark = pytest.mark.integration

__all__ = ["postgres_server"]  # the fixture, re-exported for pytest


def test_a_lease_running_out_mid_pass_sends_no_message_twice():
    """Fault 8: leases of 1 s, Slack taking 1.5 s per post, two dispatchers: rows change hands mid-pass and every
    message arrives exactly once."""
    outcome = scenarios.lease_expires_mid_pass()
    assert outcome.violations == []
    assert (outcome.messages_delivered, outcome.duplicates) == (6, 0)


def test_a_dispatcher_killed_between_send_and_mark_duplicates_at_most_once():
    """Fault 9: a dispatcher process SIGKILLed after Slack (then SMTP) accepted a message: the next dispatcher sends
    it once more, never more; the other channel gets it once."""
    outcome = scenarios.dispatcher_killed_between_send_and_mark()
    assert outcome.violations == []
    assert outcome.failures_injected == 2 and outcome.duplicates <= outcome.failures_injected


def test_two_dispatchers_on_postgresql_escalate_each_alert_once(postgres_server):
    """Fault 10: two dispatchers pass at the same moment over 20 alerts due for escalation on PostgreSQL: one
    escalation per alert, in the store and by email."""
    outcome = scenarios.concurrent_escalations_on_postgresql(postgres_server)
    assert outcome.violations == []
    assert (outcome.alerts_stored, outcome.duplicates) == (20, 0)


def test_bad_retry_after_values_are_capped_and_the_outbox_keeps_flowing():
    """Fault 11: Retry-After inf, 1e12, -5, garbage and an HTTP-date from a real 429: every pass completes, no wait
    beyond 300 s, no row left claimed, every message delivered once."""
    outcome = scenarios.bad_retry_after_values()
    assert outcome.violations == []
    assert (outcome.failures_injected, outcome.messages_delivered, outcome.duplicates) == (5, 5, 0)


def test_a_secrets_backend_blip_is_retried_not_dead():
    """Fault 12: the secrets backend fails the first Slack and SMTP connection lookups: retried, then delivered."""
    outcome = scenarios.secrets_backend_blip()
    assert outcome.violations == []
    assert (outcome.failures_injected, outcome.messages_delivered, outcome.duplicates) == (2, 2, 0)


def test_no_webhook_token_in_errors_ui_health_or_logs():
    """Fault 13: malformed webhook connections whose errors quote the token: the token appears nowhere."""
    outcome = scenarios.no_secret_in_errors()
    assert outcome.violations == []
    assert outcome.failures_injected == 2


def test_long_non_ascii_ids_are_stored_and_delivered_on_postgresql(postgres_server):
    """Fault 14: 250-character CJK ids and long run ids differing at the end, on PostgreSQL: stored distinct,
    delivered."""
    outcome = scenarios.long_non_ascii_ids_on_postgresql(postgres_server)
    assert outcome.violations == []
    assert (outcome.alerts_stored, outcome.messages_delivered, outcome.duplicates) == (2, 2, 0)


def test_hostile_exceptions_reach_slack_email_store_and_stream():
    """Fault 15: an exception whose __str__ raises, a 1 MB message and surrogates: each in the stream, the store
    (frames kept), Slack and email."""
    outcome = scenarios.hostile_exceptions()
    assert outcome.violations == []
    assert (outcome.alerts_stored, outcome.messages_delivered, outcome.duplicates) == (3, 6, 0)


def test_resolve_and_escalation_edge_cases():
    """Fault 18: no resolve where the alert died, the fallback gets the resolve, prune keeps an open alert's
    message, each route escalates at its own time once."""
    outcome = scenarios.resolve_and_escalation_edge_cases()
    assert outcome.violations == []
    assert (outcome.failures_injected, outcome.duplicates) == (4, 0)


def test_a_failing_tasks_process_makes_no_network_call():
    """Fault 20: the worker listener reporting a failure opens no socket and imports no delivery code; Slack gets
    the alert only when a dispatcher runs."""
    outcome = scenarios.no_inline_delivery()
    assert outcome.violations == []
    assert (outcome.alerts_stored, outcome.messages_delivered, outcome.duplicates) == (1, 1, 0)
