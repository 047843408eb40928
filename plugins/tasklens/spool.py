"""The local spool: store writes that could not be made in time, kept on disk until the store takes them.

When the alert store is locked, unreachable or not yet migrated, a task cannot wait for it (Airflow SIGTERMs a task
process ``[core] task_success_overtime`` after it ends). The write is spooled instead: one small JSON file per
record, written to a temporary name and renamed into place, so a reader never sees half a record and writers never
contend for a lock. :meth:`Spool.ingest` hands each record to a callback (which repeats the store write) and deletes
it once the write succeeded; a record whose write fails again stays for the next pass.

Ingestion is exactly-once in effect: a record is claimed by renaming it (only one ingester wins the rename), and the
store write it repeats is idempotent (one occurrence per attempt), so a record ingested twice after a crash, or
spooled after a write that did land late, still counts once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["SPOOL_FORMAT", "Spool"]

log = logging.getLogger(__name__)

#: Version of a spool record's JSON; a reader skips (and keeps) records of a newer format.
SPOOL_FORMAT = 1
_RECORD_SUFFIX = ".json"
_CLAIMED_SUFFIX = ".claimed"
#: A claimed record older than this belongs to an ingester that died mid-way: it is claimed again.
STALE_CLAIM_S = 120.0


class Spool:
    """Records in ``directory`` (created on first write)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def append(self, op: str, payload: Mapping[str, Any]) -> Path:
        """Spool one record durably (fsync'd file, atomic rename). Raises ``OSError`` when the disk refuses."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        body = json.dumps(
            {"format": SPOOL_FORMAT, "op": op, "payload": payload}, default=str, ensure_ascii=True
        ).encode("ascii")
        temporary = self.directory / f".{name}.tmp"
        final = self.directory / f"{name}{_RECORD_SUFFIX}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, final)
        return final

    def pending(self) -> int:
        """How many records wait to be ingested (claimed ones included)."""
        try:
            return sum(1 for entry in os.scandir(self.directory) if self._is_record(entry.name))
        except FileNotFoundError:
            return 0

    def has_records(self) -> bool:
        try:
            return any(self._is_record(entry.name) for entry in os.scandir(self.directory))
        except FileNotFoundError:
            return False

    @staticmethod
    def _is_record(name: str) -> bool:
        return not name.startswith(".") and (name.endswith(_RECORD_SUFFIX) or _CLAIMED_SUFFIX in name)

    def ingest(
        self,
        apply: Callable[[str, Mapping[str, Any]], None],
        *,
        is_transient: Callable[[Exception], bool] = lambda exc: True,
        limit: int = 500,
        deadline: float | None = None,
    ) -> int:
        """Apply up to ``limit`` records, oldest first, until ``deadline`` (``time.monotonic()``); returns how many
        were applied and removed.

        When ``apply(op, payload)`` raises an error ``is_transient`` accepts (the store is still unavailable), the
        record goes back and the error propagates; any other error sets the record aside (``.<name>.failed``, kept
        on disk for inspection, logged) and ingestion goes on."""
        try:
            names = sorted(entry.name for entry in os.scandir(self.directory) if self._is_record(entry.name))
        except FileNotFoundError:
            return 0
        applied = 0
        for name in names[:limit]:
            if deadline is not None and time.monotonic() >= deadline:
                break
            claimed = self._claim(name)
            if claimed is None:
                continue
            try:
                record = json.loads(claimed.read_bytes())
            except (OSError, ValueError):
                log.warning("tasklens spool: unreadable record set aside as %s", self._set_aside(claimed, "unreadable"),
                            exc_info=True)
                continue
            if record.get("format", 0) > SPOOL_FORMAT:
                self._unclaim(claimed)  # written by a newer tasklens: leave it to one that can read it
                continue
            try:
                apply(str(record.get("op")), record.get("payload") or {})
            except Exception as exc:
                if is_transient(exc):
                    self._unclaim(claimed)  # the store is still away: this record and the rest wait
                    raise
                log.error("tasklens spool: record %s cannot be stored (%s: %s); set aside as %s", claimed.name,
                          type(exc).__name__, exc, self._set_aside(claimed, "failed"))
                continue
            claimed.unlink(missing_ok=True)
            applied += 1
        return applied

    def _claim(self, name: str) -> Path | None:
        """Rename the record so that no other ingester takes it; None when someone else has it."""
        path = self.directory / name
        if _CLAIMED_SUFFIX in name:
            try:
                if time.time() - path.stat().st_mtime < STALE_CLAIM_S:
                    return None
            except FileNotFoundError:
                return None
            base = name.split(_CLAIMED_SUFFIX, 1)[0]
        else:
            base = name[: -len(_RECORD_SUFFIX)]
        claimed = self.directory / f"{base}{_CLAIMED_SUFFIX}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return None
        os.utime(claimed)  # the claim's age starts now
        return claimed

    def _unclaim(self, claimed: Path) -> None:
        base = claimed.name.split(_CLAIMED_SUFFIX, 1)[0]
        try:
            os.rename(claimed, self.directory / f"{base}{_RECORD_SUFFIX}")
        except OSError:
            log.warning("tasklens spool: could not return %s to the spool", claimed, exc_info=True)

    def _set_aside(self, claimed: Path, why: str) -> Path:
        """Keep a record that cannot be ingested out of the way (hidden name), for a person to look at."""
        base = claimed.name.split(_CLAIMED_SUFFIX, 1)[0]
        target = self.directory / f".{base}.{why}"
        try:
            os.rename(claimed, target)
        except OSError:
            return claimed
        return target
