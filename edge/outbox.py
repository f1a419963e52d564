"""The outbox: events waiting on disk for delivery, so a network outage or a restart loses none.

The stream appends every event record here before any sink sees it; each sink (webhook, MQTT)
reads the outbox in order from its own cursor and moves the cursor on only when the receiver has
acknowledged the record. A record acknowledged by every active sink is deleted; a record not yet
acknowledged is delivered again after a restart (at least once: receivers drop repeats by the
record's ``id``, which is unique across restarts, see ``edge.events``).

Storage is one SQLite file (standard library, nothing to install on the device) in WAL mode with
``synchronous=FULL``: every append and every acknowledgement is a committed, fsynced transaction,
so a power cut or ``kill -9`` keeps all that was committed. Events are rare (a few per minute at
most), so one fsync each costs nothing that matters.

The outbox is bounded by the bytes of the records it holds (``max_bytes``; SQLite's pages add some
overhead on disk). Only when a new record would not fit are the oldest undelivered records
dropped; each drop is logged and counted (``dropped``, kept across restarts).

Snapshots named by queued records are on disk, not in the outbox: ``protected_paths()`` lists the
ones not yet delivered, and disk pruning (``edge.disk_budget.prune``) must not remove them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("crack.edge")

MB = 1024 * 1024
DEFAULT_OUTBOX_MB = 50.0  # a crack_start + crack_end pair is about 600 bytes: days of events
OUTBOX_FILENAME = "outbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    payload TEXT NOT NULL,
    snapshot TEXT,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, acked_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class OutboxRecord:
    seq: int  # position in the outbox: delivery order
    id: str  # the record's own id (unique across restarts)
    record: dict
    snapshot: Path | None  # the snapshot file the record names, if any


class Outbox:
    """An on-disk FIFO read by several sinks, each from its own acknowledged position.

    Thread-safe: the stream appends, and every sink's delivery thread reads and acknowledges."""

    def __init__(self, path: str | Path, sinks: Sequence[str], max_bytes: int = int(DEFAULT_OUTBOX_MB * MB)) -> None:
        if max_bytes <= 0:
            raise ValueError("the outbox needs a positive size")
        if not sinks:
            raise ValueError("an outbox needs at least one sink to read it")
        self.path = Path(path)
        self.sinks = tuple(sinks)
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._appended = threading.Condition(self._lock)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        for sink in self.sinks:
            self._db.execute("INSERT OR IGNORE INTO cursors (sink, acked_seq) VALUES (?, 0)", (sink,))
        self._forget_delivered()

    # --- writing ---------------------------------------------------------------------------------

    def append(self, record: dict, snapshot: Path | None = None) -> int:
        """Queue ``record`` (it must carry an ``id``); returns its position. Durable on return."""
        payload = json.dumps(record, ensure_ascii=False)
        size = len(payload.encode())
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._make_room(size)
                cursor = self._db.execute(
                    "INSERT INTO records (id, payload, snapshot, size) VALUES (?, ?, ?, ?)",
                    (str(record["id"]), payload, str(snapshot) if snapshot is not None else None, size))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._appended.notify_all()
            return int(cursor.lastrowid)

    def _make_room(self, size: int) -> None:
        """Drop the oldest records until ``size`` more bytes fit (inside the caller's transaction)."""
        used = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM records").fetchone()[0]
        while used + size > self.max_bytes:
            oldest = self._db.execute("SELECT seq, id, size FROM records ORDER BY seq LIMIT 1").fetchone()
            if oldest is None:
                return  # a record larger than the whole outbox is still kept, alone
            seq, record_id, record_size = oldest
            self._db.execute("DELETE FROM records WHERE seq = ?", (seq,))
            self._db.execute("INSERT INTO counters (name, value) VALUES ('dropped', 1) "
                             "ON CONFLICT(name) DO UPDATE SET value = value + 1")
            used -= record_size
            log.warning("outbox full (%.1f MB): dropped the oldest undelivered event %s",
                        self.max_bytes / MB, record_id)

    # --- reading ---------------------------------------------------------------------------------

    def next_for(self, sink: str) -> OutboxRecord | None:
        """The oldest record ``sink`` has not acknowledged, or None when it is up to date."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq, id, payload, snapshot FROM records WHERE seq > "
                "(SELECT acked_seq FROM cursors WHERE sink = ?) ORDER BY seq LIMIT 1", (sink,)).fetchone()
        if row is None:
            return None
        seq, record_id, payload, snapshot = row
        return OutboxRecord(seq, record_id, json.loads(payload), Path(snapshot) if snapshot else None)

    def wait_for(self, sink: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a record ``sink`` has not acknowledged; True if one is there."""
        with self._appended:
            return self._appended.wait_for(lambda: self._backlog_locked(sink) > 0, timeout)

    def ack(self, sink: str, seq: int) -> None:
        """``sink``'s receiver has acknowledged everything up to ``seq``: never delivered again."""
        with self._lock:
            self._db.execute("UPDATE cursors SET acked_seq = MAX(acked_seq, ?) WHERE sink = ?", (seq, sink))
            self._forget_delivered()

    def _forget_delivered(self) -> None:
        low = self._db.execute(
            f"SELECT MIN(acked_seq) FROM cursors WHERE sink IN ({','.join('?' * len(self.sinks))})",
            self.sinks).fetchone()[0]
        self._db.execute("DELETE FROM records WHERE seq <= ?", (low or 0,))

    def _backlog_locked(self, sink: str) -> int:
        return self._db.execute(
            "SELECT COUNT(*) FROM records WHERE seq > (SELECT acked_seq FROM cursors WHERE sink = ?)",
            (sink,)).fetchone()[0]

    # --- for disk pruning, status and tests --------------------------------------------------------

    def backlog(self, sink: str) -> int:
        """Records ``sink`` has still to deliver."""
        with self._lock:
            return self._backlog_locked(sink)

    def acked_seq(self, sink: str) -> int:
        with self._lock:
            return self._db.execute("SELECT acked_seq FROM cursors WHERE sink = ?", (sink,)).fetchone()[0]

    def pending_ids(self) -> list[str]:
        """Ids of the records some active sink has not delivered yet, oldest first."""
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT id FROM records ORDER BY seq")]

    def protected_paths(self) -> list[Path]:
        """Snapshots named by undelivered records: disk pruning must keep them."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT snapshot FROM records WHERE snapshot IS NOT NULL")
            return [Path(row[0]) for row in rows]

    @property
    def dropped(self) -> int:
        """Records dropped because the outbox was full, over the outbox's whole life."""
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        return row[0] if row else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()
