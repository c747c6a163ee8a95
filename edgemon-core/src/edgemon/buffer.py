"""The store-and-forward buffer: every payload is on disk before it is published.

A payload is written to ``<state_dir>/buffer.db`` (stdlib ``sqlite3``, WAL,
``synchronous=FULL``) and moved out of the outbox only when the broker
acknowledges it, so it survives ``kill -9`` and power loss. Acknowledged
payloads are kept a while longer in a ``sent`` table (the newest
``keep_sent``), so that the server can ask for a ``seq`` range again
(:meth:`Buffer.requeue`) when a broker lost messages after acknowledging them
(mosquitto killed with SIGKILL loses messages it had already acknowledged). The buffer is bounded in bytes: past the
bound the **oldest** payloads are deleted, counted in ``dropped`` (persisted)
and logged; nothing is dropped silently. A file SQLite cannot read is moved
aside (``buffer.db.corrupt-<time>``) with an error log line and a fresh one
is started.

When the state directory cannot be written (disk full, read-only, an I/O
error on a worn SD card, another process holding a lock), nothing stops: a
payload that cannot be stored is held in memory (at most ``memory_max``
payloads and :data:`MEMORY_MAX_BYTES`; past that the oldest are dropped and
counted), the forwarder sends it from there, and the next append moves what is
held back to disk once the disk allows it. Payloads held in memory are lost if
the process dies before that: the only window in which a payload is not on
disk. ``health()`` says which state the buffer is in.

Each append also records the payload's ``seq`` (table ``counters``, same
transaction), so in MQTT mode the agent's sequence counter needs no file and
no fsync of its own.

The class is thread-safe (one connection behind a lock): the agent's cycle
thread appends, the forwarder thread reads and acknowledges.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemon.state import DiskHealth
from edgemon_protocol import topics

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


PRIORITY = "%/" + topics.ALERTS
"""Entries whose topic ends in ``/alerts`` (alert transitions) are the priority lane: sent before the
payload backlog after a reconnect, and not kept for resends (their state travels in every payload)."""

MEMORY_MAX_BYTES = 16 * 1024 * 1024
"""Bytes of payloads held in memory while the disk cannot take them."""

BUSY_TIMEOUT = 2.0
"""Seconds SQLite waits for another process's lock before the write fails (and is retried)."""

DiskError = (sqlite3.Error, OSError)


@dataclass(frozen=True)
class Entry:
    """One buffered payload."""

    id: int
    seq: int
    topic: str
    created: float
    body: bytes


class Buffer:
    """A bounded FIFO of payloads on disk, with a bounded memory fallback."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int = 100 * 1024 * 1024,
        keep_sent: int = 0,
        memory_max: int = 1000,
    ) -> None:
        """Open (or create, or replace a corrupt) buffer file; keep the newest ``keep_sent`` sent payloads.

        A file that cannot be opened because of the disk (not its contents) is not an error:
        the buffer starts in memory and keeps trying the disk.
        """
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep_sent = keep_sent
        self.memory_max = memory_max
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._count = self._bytes = self._dropped = 0
        self._last_seq = 0
        self._last_alert_seq = 0
        self._mem: OrderedDict[int, Entry] = OrderedDict()
        self._mem_bytes = 0
        self._next_mem_id = -1
        self._moved: dict[int, int] = {}
        """Memory id -> disk id, for payloads moved to disk while they were in flight."""
        self._unsaved_drops = 0
        self.disk = DiskHealth(
            self.path,
            "send buffer cannot write to disk; holding payloads in memory until it can",
            "send buffer writes to disk again",
        )
        self._connect()

    # -- opening ---------------------------------------------------------------

    def _connect(self) -> bool:
        """Open the file if it is not open; ``False`` (and the reason recorded) when the disk refuses."""
        if self._db is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                db = self._open()
            except sqlite3.OperationalError:
                raise  # the disk, not the file: keep the file, retry later
            except sqlite3.DatabaseError as exc:
                self._move_aside(exc)
                db = self._open()
            self._db = db
            self._load_counters()
        except DiskError as exc:
            self._db = None
            self.disk.failed(exc)
            return False
        return True

    def _move_aside(self, exc: Exception) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        log.error(
            "send buffer unreadable, moved aside; starting a fresh one",
            extra={"path": str(aside), "reason": f"{type(exc).__name__}: {exc}"},
        )
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                src.rename(f"{aside}{suffix}")

    def _load_counters(self) -> None:
        """Read depth, size, the dropped count and the last seq from the file (then kept in memory)."""
        assert self._db is not None
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM outbox").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])
        counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        self._dropped = int(counters.get("dropped", 0)) + self._unsaved_drops
        highest = self._db.execute(
            "SELECT MAX(s) FROM (SELECT MAX(seq) AS s FROM outbox WHERE topic NOT LIKE ? "
            "UNION ALL SELECT MAX(seq) FROM sent)",
            (PRIORITY,),
        ).fetchone()[0]
        self._last_seq = max(self._last_seq, int(counters.get("last_seq", 0)), int(highest or 0))
        self._last_alert_seq = max(self._last_alert_seq, int(counters.get("last_alert_seq", 0)))

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT)
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

    # -- sizes -----------------------------------------------------------------

    def __len__(self) -> int:
        """Number of buffered payloads (on disk and in memory)."""
        return self._count + len(self._mem)

    @property
    def size_bytes(self) -> int:
        """Total size of the buffered bodies."""
        return self._bytes + self._mem_bytes

    @property
    def dropped(self) -> int:
        """Payloads deleted unsent because the buffer was full (since the file was created)."""
        return self._dropped

    @property
    def in_memory(self) -> int:
        """Payloads held in memory because the disk refused them."""
        return len(self._mem)

    def last_seq(self) -> int:
        """The highest payload ``seq`` ever appended (0 when none is known)."""
        return self._last_seq

    def last_alert_seq(self) -> int:
        """The highest alert transition ``seq`` ever appended (0 when none is known)."""
        return self._last_alert_seq

    def health(self) -> dict[str, Any]:
        """``disk_ok``, ``disk_errors``, ``in_memory`` and the current ``disk_error``."""
        out: dict[str, Any] = {"disk_ok": self.disk.reason is None, "disk_errors": self.disk.errors}
        out["in_memory"] = len(self._mem)
        if self.disk.reason is not None:
            out["disk_error"] = self.disk.reason[:200]
        return out

    # -- writing ---------------------------------------------------------------

    def append(self, topic: str, seq: int, body: bytes, created: float | None = None) -> int:
        """Store a payload; drop the oldest when over the bound. Returns its id (negative: held in memory).

        Never raises for a disk problem: the payload is then held in memory. An alert transition
        (a topic ending in ``/alerts``) counts its ``seq`` apart from the payloads'.
        """
        created = time.time() if created is None else created
        entry = Entry(0, seq, topic, created, body)
        dropped = None
        with self._lock:
            if _priority(topic):
                self._last_alert_seq = max(self._last_alert_seq, seq)
            else:
                self._last_seq = max(self._last_seq, seq)
            try:
                if not self._connect():
                    raise sqlite3.OperationalError(self.disk.reason or "cannot open")
                self._flush_memory()
                entry_id, dropped = self._insert(entry)
            except DiskError as exc:
                self.disk.failed(exc)
                return self._hold(entry)
            self.disk.ok(f"{len(self._mem)} payloads held in memory moved to disk")
        if dropped:
            first, last, n = dropped
            log.warning(
                "send buffer full: dropped the oldest payloads",
                extra={"reason": f"{n} dropped (seq {first}..{last}); bound {self.max_bytes} bytes"},
            )
        return entry_id

    def _insert(self, entry: Entry) -> tuple[int, tuple[int, int, int] | None]:
        assert self._db is not None
        before = (self._count, self._bytes, self._dropped)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cur = self._db.execute(
                "INSERT INTO outbox (seq, topic, created, body) VALUES (?, ?, ?, ?)",
                (entry.seq, entry.topic, entry.created, entry.body),
            )
            self._count += 1
            self._bytes += len(entry.body)
            self._db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
                ("last_alert_seq", self._last_alert_seq) if _priority(entry.topic) else ("last_seq", self._last_seq),
            )
            if self._unsaved_drops:
                self._add_dropped(self._unsaved_drops)
            dropped = self._trim()
            self._db.execute("COMMIT")
        except BaseException:
            self._count, self._bytes, self._dropped = before
            self._rollback()
            raise
        self._unsaved_drops = 0
        return int(cur.lastrowid or 0), dropped

    def _rollback(self) -> None:
        """Undo the open transaction (the caller has restored its counters)."""
        assert self._db is not None
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except DiskError as exc:  # the connection itself is broken: reopen on the next append
            log.debug("rollback failed; reopening the buffer later", extra={"reason": repr(exc)})
            self._db.close()
            self._db = None

    def _flush_memory(self) -> None:
        """Move payloads held in memory to disk, oldest first (the caller holds the lock)."""
        while self._mem:
            mem_id, entry = next(iter(self._mem.items()))
            disk_id, _ = self._insert(entry)
            del self._mem[mem_id]
            self._mem_bytes -= len(entry.body)
            self._moved[mem_id] = disk_id
            if len(self._moved) > 4 * self.memory_max:
                self._moved.pop(next(iter(self._moved)))

    def _hold(self, entry: Entry) -> int:
        """Keep ``entry`` in memory (the caller holds the lock); drop the oldest held past the bounds."""
        mem_id = self._next_mem_id
        self._next_mem_id -= 1
        self._mem[mem_id] = Entry(mem_id, entry.seq, entry.topic, entry.created, entry.body)
        self._mem_bytes += len(entry.body)
        n, first, last = 0, -1, -1
        while len(self._mem) > 1 and (len(self._mem) > self.memory_max or self._mem_bytes > MEMORY_MAX_BYTES):
            _, old = self._mem.popitem(last=False)
            self._mem_bytes -= len(old.body)
            first = old.seq if first < 0 else first
            last = old.seq
            n += 1
        if n:
            self._dropped += n
            self._unsaved_drops += n
            log.warning(
                "memory hold full: dropped the oldest payloads",
                extra={"reason": f"{n} dropped (seq {first}..{last}); disk: {self.disk.reason}"},
            )
        return mem_id

    def _add_dropped(self, n: int) -> None:
        assert self._db is not None
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (n,),
        )

    def _trim(self) -> tuple[int, int, int] | None:
        assert self._db is not None
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
        self._add_dropped(n)
        self._dropped += n
        return first, last, n

    # -- reading ---------------------------------------------------------------

    def oldest(self, limit: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[Entry]:
        """Return up to ``limit`` of the oldest payloads whose ids are not in ``exclude`` (disk, then memory).

        Raises:
            sqlite3.Error: the disk could not be read (the forwarder retries).
        """
        if limit <= 0:
            return []
        with self._lock:
            rows: list[Any] = []
            if self._db is not None:
                rows = self._db.execute(
                    "SELECT id, seq, topic, created, body FROM outbox ORDER BY topic NOT LIKE ?, id LIMIT ?",
                    (PRIORITY, limit + len(exclude)),
                ).fetchall()
            entries = [Entry(*row) for row in rows if row[0] not in exclude]
            entries += [e for i, e in self._mem.items() if i not in exclude]
        entries.sort(key=lambda e: not _priority(e.topic))  # stable: alert transitions first, each lane in order
        return entries[:limit]

    def ack(self, ids: list[int]) -> None:
        """Move acknowledged payloads out of the outbox (one transaction), keeping the newest ``keep_sent``.

        Raises:
            sqlite3.Error: the disk refused the change; nothing was acknowledged (the forwarder retries).
        """
        if not ids:
            return
        now = time.time()
        with self._lock:
            disk_ids = []
            for entry_id in ids:
                if entry_id >= 0:
                    disk_ids.append(entry_id)
                elif entry_id in self._mem:
                    self._mem_bytes -= len(self._mem.pop(entry_id).body)
                elif entry_id in self._moved:
                    disk_ids.append(self._moved.pop(entry_id))
            if not disk_ids:
                return
            if self._db is None:
                raise sqlite3.OperationalError(self.disk.reason or "send buffer not open")
            before = (self._count, self._bytes)
            # No fsync of its own for an acknowledgement: the next append's commit (synchronous=FULL)
            # syncs the WAL with it. A power cut before that re-sends the payload (a duplicate the
            # server discards by seq); it never loses one.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for entry_id in disk_ids:
                    if self.keep_sent:
                        self._db.execute(
                            "INSERT INTO sent (seq, topic, acked, body) SELECT seq, topic, ?, body FROM outbox "
                            "WHERE id = ? AND topic NOT LIKE ?",
                            (now, entry_id, PRIORITY),
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
                self._count, self._bytes = before
                self._rollback()
                raise
            finally:
                if self._db is not None:
                    with contextlib.suppress(*DiskError):
                        self._db.execute("PRAGMA synchronous=FULL")

    def requeue(self, first: int, last: int) -> list[int]:
        """Put the sent payloads with ``first <= seq <= last`` back in the outbox; returns their seqs.

        Seqs no longer kept (older than the newest ``keep_sent``) are simply not returned.

        Raises:
            sqlite3.Error: the disk refused the change.
        """
        now = time.time()
        with self._lock:
            if self._db is None:
                raise sqlite3.OperationalError(self.disk.reason or "send buffer not open")
            before = (self._count, self._bytes)
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
                self._count, self._bytes = before
                self._rollback()
                raise
        return [int(row[1]) for row in rows]

    def oldest_age(self, now: float | None = None) -> float | None:
        """Seconds since the oldest buffered payload was stored (``None`` when empty)."""
        created: float | None = None
        with self._lock:
            if self._db is not None and self._count:
                try:
                    row = self._db.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()  # the PK
                except DiskError:
                    row = None
                created = float(row[0]) if row else None
            if created is None and self._mem:
                created = next(iter(self._mem.values())).created
        if created is None:
            return None
        return (time.time() if now is None else now) - created

    def close(self) -> None:
        """Close the file (payloads still held in memory are lost, and logged)."""
        with self._lock:
            if self._mem:
                log.error(
                    "stopping with payloads held in memory: they are lost",
                    extra={"reason": f"{len(self._mem)} payloads; disk: {self.disk.reason}"},
                )
            if self._db is not None:
                self._db.close()
                self._db = None


def inspect(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a buffer file without changing it (``edgemon-agent status``, also beside a running agent).

    Returns:
        ``buffered``, ``buffered_bytes``, ``dropped``, ``oldest_created`` (epoch or ``None``), ``last_seq``.

    Raises:
        sqlite3.Error: the file cannot be read (it is left as it is).
    """
    db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
    try:
        count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM outbox").fetchone()
        counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
        row = db.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
    finally:
        db.close()
    return {
        "buffered": int(count),
        "buffered_bytes": int(size),
        "dropped": int(counters.get("dropped", 0)),
        "oldest_created": float(row[0]) if row else None,
        "last_seq": int(counters.get("last_seq", 0)),
    }


def _priority(topic: str) -> bool:
    return topic.endswith(PRIORITY[1:])
