"""Upstream cascades in messages: the dispatcher waits (bounded) for the scheduler to settle a failure's downstream,
then the message names the tasks that did not run and the asset-triggered DAGs that will not. The real
attribution reads Airflow's metadata DB (tests/integration/test_incidents_stack.py); here it is a stand-in."""

from __future__ import annotations

import dataclasses
import json

from tasklens import messages
from tasklens.cascades import Attribution
from tasklens.dispatch import Dispatcher
from tests.unit.tasklens.test_dispatch import FakeChannels, make_dispatcher
from tests.unit.tasklens.test_store import FakeClock, make_alert, slack


def with_cascade(items, *, settled=True):
    out = tuple(dataclasses.replace(i, alert=dataclasses.replace(i.alert, data={
        **i.alert.data, "upstream_failed": ["publish", "transform"], "upstream_failed_count": 2,
        "will_not_run": ["lakehouse_datamart", "lakehouse_ml"]})) for i in items)
    return Attribution(out, settled)


def test_the_message_waits_for_the_cascade_to_settle_then_names_it(tmp_path, monkeypatch):
    """Unsettled downstream: the alert is held; once settled it goes out naming what did not and will not run."""
    from tasklens.store import Store

    clock = FakeClock()
    store = Store(f"sqlite:///{tmp_path / 't.db'}", clock=clock)
    channels = FakeChannels()
    settled = {"now": False}
    dispatcher: Dispatcher = make_dispatcher(store, clock, channels)
    dispatcher.attribute_cascades = lambda items: with_cascade(items, settled=settled["now"])
    store.record([(make_alert(), [slack()])])
    report = dispatcher.run_once()
    assert report.messages_sent == 0 and report.deferred == 1
    settled["now"] = True
    clock.advance(1)
    dispatcher.run_once()
    (message,) = channels.sent
    text = json.dumps(messages.render_slack(message, base_url="http://airflow", templates_dir=None))
    assert "Not run (upstream failed): publish and transform." in text
    assert "lakehouse_datamart and lakehouse_ml will not run." in text
    store.dispose()


def test_a_cascade_that_never_settles_delays_the_message_at_most_cascade_wait_s(tmp_path, monkeypatch):
    """The scheduler never settles (stopped): the message goes out after cascade_wait_s anyway."""
    from tasklens.store import Store

    monkeypatch.setattr("tasklens.config.cascade_wait_s", lambda: 15.0)
    clock = FakeClock()
    store = Store(f"sqlite:///{tmp_path / 't.db'}", clock=clock)
    channels = FakeChannels()
    dispatcher = make_dispatcher(store, clock, channels)
    dispatcher.attribute_cascades = lambda items: with_cascade(items, settled=False)
    store.record([(make_alert(), [slack()])])
    start = clock.now  # FakeClock: simulated seconds the dispatcher advanced itself, not wall time
    dispatcher.drain(max_passes=100)
    assert len(channels.sent) == 1 and 15 <= (clock.now - start).total_seconds() <= 17
    store.dispose()


def test_a_long_cascade_is_counted_not_listed():
    """More tasks than listed: "a, b and 38 more"."""
    assert messages._cascade_text({"upstream_failed": ["a", "b"], "upstream_failed_count": 40}) == (
        "Not run (upstream failed): a, b and 38 more.")
    assert messages._cascade_text({}) == ""
