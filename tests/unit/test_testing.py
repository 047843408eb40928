"""tasklens.testing: the helpers users' own tests import, and `from tasklens import *`."""

from __future__ import annotations

import tasklens
from tasklens import pipeline
from tasklens.testing import capture_alerts, capture_events, failed_event, success_event


def test_star_import_gives_every_public_name():
    """`from tasklens import *` works: every name in tasklens.__all__ resolves (tasklens.testing included)."""
    namespace: dict[str, object] = {}
    exec("from tasklens import *", namespace)
    assert set(tasklens.__all__) <= set(namespace)


def test_capture_events_and_alerts_see_a_failure_without_a_store():
    """A failed event passes through handle() into capture_events, and its alert into capture_alerts (no store)."""
    with capture_events() as seen, capture_alerts() as alerts:
        pipeline.handle(failed_event(dag_id="sales", task_id="load", source="worker"))
    assert [event.event for event in seen] == ["failed"]
    assert len(alerts) == 1 and "sales" in repr(alerts[0])


def test_capture_events_restores_handle():
    """Leaving the block puts the real pipeline.handle back."""
    original = pipeline.handle
    with capture_events():
        assert pipeline.handle is not original
    assert pipeline.handle is original and success_event().event == "success"
