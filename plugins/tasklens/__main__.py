"""The tasklens command line: ``tasklens <command>`` or ``python -m tasklens <command>``.

- ``check-config``: load ``[tasklens]``, the rules file and the retry presets they name, open the store; print OK
  or exactly what is wrong.
- ``test-alert --channel NAME``: send a test message through a channel of the rules file (any type: slack, email,
  pagerduty, opsgenie, teams, webhook, notifier) now; on failure print what went wrong and exit 1. Incident tools
  get a test alert that is resolved at once.
- ``dispatch [--once]``: run the outbox dispatcher as its own process (or one pass).
- ``replay``: re-queue every undelivered (dead) delivery.
- ``backtest --rules candidate.yml [--since 30d]``: replay the stored event history through a candidate rules file,
  side by side with the current rules (messages per day and channel, pages, incidents, noisiest fingerprints); no
  network, no writes.
- ``db upgrade``: migrate the alert store to this tasklens's schema (also done when the api-server starts; never by
  tasks, the scheduler or the dag-processor).
- ``spool ingest``: store the writes spooled while the store was unavailable (the dispatcher also does it each pass).
- ``reconcile --once``: one pass of the api-server's checks over Airflow's metadata DB (unreported failures,
  successes that resolve alerts or run long); the api-server runs them every ``reconcile_interval_s``.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from tasklens import cascades, config, configcheck, deadlines, pipeline
from tasklens.alerts import Alert, AlertKind, AlertSnapshot, Notification, Severity, Status
from tasklens.channels import build_channel
from tasklens.exceptions import ConfigError, DeliveryError, TasklensError
from tasklens.spool import Spool

__all__ = ["main"]


def _print(*parts: Any) -> None:
    print(*parts, flush=True)


def _safe_url(url: str) -> str:
    try:
        import sqlalchemy as sa  # noqa: PLC0415 - SQLAlchemy loads only for the commands that open the store

        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"


def cmd_check_config(args: argparse.Namespace) -> int:
    config.reset()
    problems = configcheck.find_problems()
    if problems:
        for problem in problems:
            _print(f"tasklens check-config: ERROR: {problem.source}: {problem.key}: {problem.problem}. "
                   f"Fix: {problem.fix}")
            _print(f"  (running DAGs are not affected: tasklens uses {problem.fallback} until this is fixed)")
        return 1
    ruleset = config.ruleset()
    settings = {
        "store_url": _safe_url(config.store_url()),
        "slack_conn_id": config.slack_conn_id(),
        "smtp_conn_id": config.smtp_conn_id(),
        "http_timeout_s": config.http_timeout_s(),
        "delivery_max_age_s": config.delivery_max_age_s(),
        "dispatcher_enabled": config.dispatcher_enabled(),
        "dispatch_interval_s": config.dispatch_interval_s(),
        "retention_days": config.retention_days(),
        "default_retry_preset": config.default_retry_preset() or "none",
        "config_check_interval_s": config.config_check_interval_s(),
    }
    from tasklens.store import Store  # noqa: PLC0415 - SQLAlchemy loads only for the commands that open the store

    try:
        store = Store(config.store_url())
        revision = store.schema_revision()
        store.dispose()
    except TasklensError as exc:
        _print(f"tasklens check-config: ERROR: store {settings['store_url']}: {exc}")
        return 1
    source = getattr(ruleset, "source", None) or "built-in rules"
    _print(
        f"tasklens check-config: OK: {source}: {len(ruleset.rules)} rules, {len(ruleset.routes)} routes, "
        f"channels {', '.join(sorted(ruleset.channels)) or '-'}; store {settings['store_url']} (schema {revision})"
    )
    for key, value in settings.items():
        _print(f"  {key} = {value}")
    return _check_deadline_globs(ruleset)


def _check_deadline_globs(ruleset: Any) -> int:
    """Deadline globs that match no DAG Airflow knows: named with the file, the key and the fix (exit 1)."""
    if not ruleset.deadlines:
        return 0
    from airflow.utils.session import create_session  # noqa: PLC0415 - Airflow's ORM loads only for this check

    from tasklens.foresight import queries as foresight_queries  # noqa: PLC0415 - SQLAlchemy: as above

    try:
        with create_session() as session:
            dag_ids = foresight_queries.known_dag_ids(session)
    except Exception as exc:
        _print(f"tasklens check-config: note: deadline globs not checked (Airflow's metadata DB: {type(exc).__name__})")
        return 0
    unmatched = deadlines.unmatched_globs(ruleset.deadlines, dag_ids)
    for key, glob in unmatched:
        _print(f"tasklens check-config: ERROR: {ruleset.source}: {key}: {glob!r} matches no DAG Airflow knows "
               f"({len(dag_ids)} DAGs). Fix: correct the glob (globs are case-sensitive, e.g. \"nightly_*\"), or "
               f"remove it if the DAG is gone")
    return 1 if unmatched else 0


def _test_notification(channel: str) -> Any:
    now = datetime.now(timezone.utc).isoformat()
    alert = Alert(
        fingerprint="tasklens-test",
        rule="test",
        kind=AlertKind.CUSTOM,
        severity=Severity.INFO,
        title="tasklens test message",
        summary=f"If you can read this, tasklens can deliver to channel {channel!r}.",
        dag_id="tasklens",
        task_id="test_alert",
        occurred_at=now,
    )
    snapshot = AlertSnapshot(id=0, alert=alert, status=Status.OPEN, occurrences=1, first_seen=now, last_seen=now)
    return Notification(kind="test", channel=channel, items=(snapshot,))


def cmd_test_alert(args: argparse.Namespace) -> int:
    from tasklens.dispatch import channel_config_from_ruleset  # noqa: PLC0415 - SQLAlchemy loads only for the commands that open the store

    name = args.channel
    found = channel_config_from_ruleset(name)
    channel_type = found.type if found else name
    options = dict(found.options) if found else {}
    if args.to:
        options["to"] = args.to
    if args.conn_id:
        options["conn_id"] = args.conn_id
    try:
        target = build_channel(name, channel_type, options)
        test_message = dataclasses.replace(  # in the channel's language, as its alerts will be
            _test_notification(name), locale=options.get("locale"), timezone=options.get("timezone")
        )
        target.send(test_message, timeout_s=config.http_timeout_s())
    except (DeliveryError, ConfigError) as exc:
        conn_id = getattr(locals().get("target"), "conn_id", options.get("conn_id", "?"))
        _print(f"tasklens test-alert: FAILED to send to {name!r} ({channel_type}, connection {conn_id!r}): {exc}")
        return 1
    _print(f"tasklens test-alert: sent a test message to {name!r} ({channel_type}, connection "
           f"{getattr(target, 'conn_id', '?')!r})")
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    """Read-only: the store's events and two rules files in, counts out; no channel is built, nothing is written."""
    from tasklens import backtest  # noqa: PLC0415 - SQLAlchemy loads only for the commands that open the store
    from tasklens.ruleset import load_ruleset, parse_duration  # noqa: PLC0415 - PyYAML loads only for the commands that read rules
    from tasklens.store import get_store  # noqa: PLC0415 - SQLAlchemy loads only for the commands that open the store

    try:
        since = datetime.now(timezone.utc) - timedelta(seconds=parse_duration(args.since, source="--since",
                                                                              key="since"))
        candidate = load_ruleset(args.rules)
        current = config.ruleset()
        store = get_store()
        store.ensure_schema()
        history = backtest.read_history(store, since)
    except TasklensError as exc:
        _print(f"tasklens backtest: ERROR: {exc}")
        return 1
    window = config.incident_window_s()
    _print(backtest.format_report(
        backtest.replay(history, current, incident_window_s=window),
        backtest.replay(history, candidate, incident_window_s=window),
        events=len(history), since=since, current_name=str(current.source or "the built-in rules"),
        candidate_name=str(args.rules),
    ))
    return 0


def cmd_dispatch(args: argparse.Namespace) -> int:
    from tasklens.dispatch import Dispatcher, DispatcherSettings  # noqa: PLC0415 - SQLAlchemy loads only for the commands that open the store
    from tasklens.store import get_store  # noqa: PLC0415 - SQLAlchemy loads only for the commands that open the store

    try:
        store = get_store()
        store.ensure_schema()
        dispatcher = Dispatcher(store, settings=DispatcherSettings.from_config(),
                                attribute_cascades=cascades.attribute)
    except TasklensError as exc:
        _print(f"tasklens dispatch: ERROR: {exc}")
        return 1
    if args.once:
        report = dispatcher.drain() if args.drain else dispatcher.run_once()
        _print(
            f"tasklens dispatch: {report.messages_sent} messages sent ({report.deliveries_sent} deliveries), "
            f"{report.failed} failed (will retry), {report.dead} undelivered, {report.deferred} deferred, "
            f"{report.escalations_queued} escalations queued"
        )
        for error in report.errors:
            _print(f"  error: {error}")
        return 0
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    _print(f"tasklens dispatch: running as {dispatcher.worker} (Ctrl-C to stop)")
    dispatcher.run_forever(stop, interval_s=config.dispatch_interval_s(), on_pass=_ingest_spool_quietly)
    _print(f"tasklens dispatch: stopped after {dispatcher.totals.messages_sent} messages")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from tasklens.store import get_store  # noqa: PLC0415 - SQLAlchemy loads only for the commands that open the store

    count = get_store().replay()
    _print(f"tasklens replay: re-queued {count} undelivered deliveries; the dispatcher sends them next")
    return 0


def _ingest_spool_quietly() -> None:
    pipeline.run_stage("spool.ingest", pipeline.ingest_spool)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from tasklens.store import HEAD_REVISION, get_store  # noqa: PLC0415 - SQLAlchemy loads only for the commands that open the store

    url = _safe_url(config.store_url())
    try:
        store = get_store()
        before = store.schema_revision()
        store.migrate()
    except TasklensError as exc:
        _print(f"tasklens db upgrade: ERROR: store {url}: {exc}")
        return 1
    if before == HEAD_REVISION:
        _print(f"tasklens db upgrade: store {url} is already at schema {HEAD_REVISION}")
    else:
        _print(f"tasklens db upgrade: store {url} migrated from schema {before or 'none'} to {HEAD_REVISION}")
    return 0


def cmd_spool_ingest(args: argparse.Namespace) -> int:
    spool = Spool(config.spool_dir())
    waiting = spool.pending()
    try:
        stored = pipeline.ingest_spool(limit=max(waiting, 1), budget_s=3600.0)
    except TasklensError as exc:
        _print(f"tasklens spool ingest: ERROR: {exc}; {spool.pending()} records stay in {spool.directory}")
        return 1
    _print(f"tasklens spool ingest: stored {stored} of {waiting} spooled writes from {spool.directory}; "
           f"{spool.pending()} left")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from tasklens import reconcile  # noqa: PLC0415 - SQLAlchemy and Airflow's ORM load only for `tasklens reconcile`

    try:
        result = reconcile.reconcile_once()
    except TasklensError as exc:
        _print(f"tasklens reconcile: ERROR: {exc}")
        return 1
    _print(f"tasklens reconcile: {result.killed} killed, {result.lost_reports} lost failure reports, "
           f"{result.settled} successes settled, {result.waiting} waiting for their report")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tasklens", description="tasklens alert engine tools")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="validate [tasklens] settings and the rules file")
    check.set_defaults(func=cmd_check_config)
    test = commands.add_parser("test-alert", help="send a test message through a channel's connection")
    test.add_argument("--channel", required=True, help="channel name from the rules file (any type)")
    test.add_argument("--to", action="append", help="email recipient (repeatable; overrides the channel's)")
    test.add_argument("--conn-id", help="Airflow connection id (overrides the channel's)")
    test.set_defaults(func=cmd_test_alert)
    dispatch = commands.add_parser("dispatch", help="run the outbox dispatcher")
    dispatch.add_argument("--once", action="store_true", help="one pass, then exit")
    dispatch.add_argument("--drain", action="store_true",
                          help="with --once: keep passing (waiting for group_wait, backoff) until the outbox is idle")
    dispatch.set_defaults(func=cmd_dispatch)
    backtest = commands.add_parser(
        "backtest", help="replay the stored event history through a candidate rules file, next to the current rules")
    backtest.add_argument("--rules", required=True, help="the candidate rules file")
    backtest.add_argument("--since", default="30d", help="how far back to replay (a duration: 30d, 12h; default 30d)")
    backtest.set_defaults(func=cmd_backtest)
    replay = commands.add_parser("replay", help="re-queue undelivered alerts")
    replay.set_defaults(func=cmd_replay)
    db = commands.add_parser("db", help="alert store schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="migrate the alert store to this version's schema").set_defaults(
        func=cmd_db_upgrade)
    spool = commands.add_parser("spool", help="writes spooled while the store was unavailable").add_subparsers(
        dest="spool_command", required=True)
    spool.add_parser("ingest", help="store every spooled write now").set_defaults(func=cmd_spool_ingest)
    check = commands.add_parser("reconcile", help="one pass of the api-server's checks over Airflow's records")
    check.add_argument("--once", action="store_true", required=True, help="one pass, then exit")
    check.set_defaults(func=cmd_reconcile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tasklens`` and ``python -m tasklens``."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
