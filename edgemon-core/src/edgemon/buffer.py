"""The store-and-forward buffer: every payload is on disk before it is published.

A payload is written to ``<state_dir>/buffer.db`` (stdlib ``sqlite3``, WAL,
``synchronous=FULL``) and moved out of the outbox only when the broker
acknowledges it, so it survives ``kill -9`` and power loss. Acknowledged
payloads are kept a while longer in a ``sent`` table (the newest
``keep_sent``), so that the server can ask for a ``seq`` range again
(:meth:`Buffer.requeue`) when a broker lost messages after acknowledging them
(a broker killed before it delivered them: ANCHORS trap 7). The buffer is bounded in bytes: past the
bound the **oldest** payloads are deleted, counted in ``dropped`` (persisted)
and logged; nothing is dropped silently. A file SQLite cannot read is moved
aside (``buffer.db.corrupt-<time>``) with an error log line and a fresh one
is started.

The class is thread-safe (one connection behind a lock): the agent's cycle
thread appends, the forwarder thread reads and acknowledges.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    seq     INTEGER NOT NULL,
    topic   TEXT    NOT NULL,
    created REAL    NOT NULL,
    body    BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sent (
    seq   INTEGER NOT NULL,
    topic TEXT    NOT NULL,
    acked REAL    NOT NULL,
    body  BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS sent_seq ON sent (seq);
"""


@dataclass(frozen=True)
class Entry:
    """One buffered payload."""

    id: int
    seq: int
    topic: str
    created: float
    body: bytes


class Buffer:
    """A bounded FIFO of payloads on disk."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = 100 * 1024 * 1024, keep_sent: int = 0) -> None:
        """Open (or create, or replace a corrupt) buffer file; keep the newest ``keep_sent`` sent payloads."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.keep_sent = keep_sent
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error(
                "send buffer unreadable, moved aside; starting a fresh one",
                extra={"path": str(aside), "reason": f"{type(exc).__name__}: {exc}"},
            )
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    src.rename(f"{aside}{suffix}")
            self._db = self._open()
        self._load_counters()

    def _load_counters(self) -> None:
        """Read depth, size and the dropped count from the file (they are then kept in memory)."""
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM outbox").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])
        row = self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        self._dropped = int(row[0]) if row else 0

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def __len__(self) -> int:
        """Number of buffered payloads."""
        return self._count

    @property
    def size_bytes(self) -> int:
        """Total size of the buffered bodies."""
        return self._bytes

    @property
    def dropped(self) -> int:
        """Payloads deleted unsent because the buffer was full (since the file was created)."""
        return self._dropped

    def append(self, topic: str, seq: int, body: bytes, created: float | None = None) -> int:
        """Store a payload durably; drop the oldest when over the bound. Returns its id."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT INTO outbox (seq, topic, created, body) VALUES (?, ?, ?, ?)",
                    (seq, topic, time.time() if created is None else created, body),
                )
                self._count += 1
                self._bytes += len(body)
                dropped = self._trim()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._load_counters()
                raise
        if dropped:
            first, last, n = dropped
            log.warning(
                "send buffer full: dropped the oldest payloads",
                extra={"reason": f"{n} dropped (seq {first}..{last}); bound {self.max_bytes} bytes"},
            )
        return int(cur.lastrowid or 0)

    def _trim(self) -> tuple[int, int, int] | None:
        if self._bytes <= self.max_bytes:
            return None
        first = last = -1
        n = 0
        while self._bytes > self.max_bytes and self._count > 1:
            batch = self._db.execute("SELECT id, seq, LENGTH(body) FROM outbox ORDER BY id LIMIT 64").fetchall()
            for row_id, seq, size in batch:
                if self._bytes <= self.max_bytes or self._count <= 1:
                    break
                self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
                self._bytes -= size
                self._count -= 1
                first = seq if first < 0 else first
                last = seq
                n += 1
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (n,),
        )
        self._dropped += n
        return first, last, n

    def oldest(self, limit: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[Entry]:
        """Return up to ``limit`` of the oldest payloads whose ids are not in ``exclude``."""
        if limit <= 0:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT id, seq, topic, created, body FROM outbox ORDER BY id LIMIT ?", (limit + len(exclude),)
            ).fetchall()
        return [Entry(*row) for row in rows if row[0] not in exclude][:limit]

    def get(self, entry_id: int) -> Entry | None:
        """Return one payload by id, if it is still buffered."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, seq, topic, created, body FROM outbox WHERE id = ?", (entry_id,)
            ).fetchone()
        return Entry(*row) if row else None

    def ack(self, ids: list[int]) -> None:
        """Move acknowledged payloads out of the outbox (one transaction), keeping the newest ``keep_sent``."""
        if not ids:
            return
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for entry_id in ids:
                    if self.keep_sent:
                        self._db.execute(
                            "INSERT INTO sent (seq, topic, acked, body) SELECT seq, topic, ?, body FROM outbox "
                            "WHERE id = ?",
                            (now, entry_id),
                        )
                    row = self._db.execute("DELETE FROM outbox WHERE id = ? RETURNING LENGTH(body)", (entry_id,))
                    deleted = row.fetchone()
                    if deleted is not None:
                        self._count -= 1
                        self._bytes -= int(deleted[0])
                if self.keep_sent:  # rowids grow by one per insert: this is a range delete on the PK, no scan
                    self._db.execute(
                        "DELETE FROM sent WHERE rowid <= (SELECT MAX(rowid) FROM sent) - ?", (self.keep_sent,)
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def requeue(self, first: int, last: int) -> list[int]:
        """Put the sent payloads with ``first <= seq <= last`` back in the outbox; returns their seqs.

        Seqs no longer kept (older than the newest ``keep_sent``) are simply not returned.
        """
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT rowid, seq, topic, body FROM sent WHERE seq BETWEEN ? AND ? ORDER BY seq", (first, last)
                ).fetchall()
                for rowid, seq, topic, body in rows:
                    self._db.execute(
                        "INSERT INTO outbox (seq, topic, created, body) VALUES (?, ?, ?, ?)", (seq, topic, now, body)
                    )
                    self._db.execute("DELETE FROM sent WHERE rowid = ?", (rowid,))
                    self._count += 1
                    self._bytes += len(body)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._load_counters()
                raise
        return [int(row[1]) for row in rows]

    def oldest_age(self, now: float | None = None) -> float | None:
        """Seconds since the oldest buffered payload was stored (``None`` when empty)."""
        with self._lock:
            row = self._db.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()  # the PK, no scan
        if row is None:
            return None
        return (time.time() if now is None else now) - float(row[0])

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
