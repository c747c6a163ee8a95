"""Daily range partitions of ``samples`` on PostgreSQL: made ahead, dropped whole, watched.

Migration 0012 turns ``samples`` into a table partitioned by ``ts`` (one partition per UTC day,
``samples_pYYYYMMDD``) with a ``samples_default`` partition for rows no day partition takes; the
rows of an older database stay where they were, attached as ``samples_legacy`` (everything before
the day after the migration ran), and leave by the ordinary chunked deletes.

Each maintenance round (:func:`maintain`):

- **makes** the partitions of today and the next ``AHEAD_DAYS`` days, never one that ends at or
  before the retention horizon (a long outage of maintenance then does not create a run of
  partitions that all expire at once);
- **moves** rows that landed in the default partition into day partitions it creates for them (in
  one transaction: PostgreSQL refuses to attach a partition whose range the default still holds);
- **drops** day partitions that end at or before the horizon, whole (no row-by-row delete, no
  vacuum debt), under a short ``lock_timeout`` so a busy table makes it wait for the next round
  instead of queueing the writer behind it;
- **counts** the rows left in the default partition: anything there means maintenance fell behind
  or rows arrived from outside the horizon, and the collector reports it in ``/healthz``.

SQLite has no partitions; its retention deletes by primary-key range and reclaims pages with
``PRAGMA incremental_vacuum`` (:mod:`edgemon_server.rollups`).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
AHEAD_DAYS = 3
"""Day partitions kept ready beyond today: three days of maintenance outage before rows fall into
the default partition."""
DEFAULT = "samples_default"
LEGACY = "samples_legacy"
DEFAULT_COUNT_CAP = 100_000
"""Rows of the default partition counted at most (an alarm needs a count, not an exact one)."""
LOCK_ID = 0x6564_6765_6D70
"""The session advisory lock of partition maintenance (one collector at a time does the DDL)."""
_NAME = re.compile(r"^samples_p(\d{8})$")
_BOUND = re.compile(r"FROM \((?:'?(-?\d+|MINVALUE)'?)\) TO \((?:'?(-?\d+|MAXVALUE)'?)\)")


def is_partition(name: str) -> bool:
    """Whether ``name`` is one of the partitions of ``samples`` (not a table of the models)."""
    return name in (DEFAULT, LEGACY) or bool(_NAME.match(name))


def day_of(ts_ms: int) -> int:
    """The start (ms) of the UTC day holding ``ts_ms``."""
    return ts_ms - ts_ms % DAY_MS


def name_for(day_ms: int) -> str:
    """``samples_pYYYYMMDD`` for the UTC day starting at ``day_ms``."""
    return "samples_p" + dt.datetime.fromtimestamp(day_ms / 1000, dt.UTC).strftime("%Y%m%d")


@dataclass(frozen=True)
class Partition:
    """One partition of ``samples``: its range ``[lo, hi)`` in ms (``None``: unbounded or default)."""

    name: str
    lo: int | None
    hi: int | None


def partitions(conn: Connection) -> list[Partition]:
    """The partitions of ``samples``, from the catalogue."""
    rows = conn.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'samples'::regclass ORDER BY 1"
        )
    )
    out = []
    for name, bound in rows:
        m = _BOUND.search(bound or "")
        if m is None:
            out.append(Partition(name, None, None))  # DEFAULT
            continue
        lo, hi = m.groups()
        out.append(Partition(name, None if lo == "MINVALUE" else int(lo), None if hi == "MAXVALUE" else int(hi)))
    return out


def is_partitioned(conn: Connection) -> bool:
    """Whether ``samples`` is a partitioned table (PostgreSQL after migration 0012)."""
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.execute(text("SELECT relkind FROM pg_class WHERE oid = 'samples'::regclass")).scalar()
    return bool(kind == "p")


def _covered(parts: list[Partition], lo: int, hi: int) -> bool:
    """Whether any bounded partition overlaps ``[lo, hi)``."""
    return any(p.hi is not None and (p.lo is None or p.lo < hi) and lo < p.hi for p in parts)


def create_day(conn: Connection, day_ms: int) -> str:
    """Create the partition of one UTC day, moving the day's rows out of the default partition first.

    Runs in the caller's transaction; the whole step commits or none of it.
    """
    name, lo, hi = name_for(day_ms), day_ms, day_ms + DAY_MS
    conn.execute(text(f"CREATE TABLE {name} (LIKE samples INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
    moved = conn.execute(
        text(
            f"WITH moved AS (DELETE FROM {DEFAULT} WHERE ts >= :lo AND ts < :hi RETURNING series_id, ts, value) "
            f"INSERT INTO {name} (series_id, ts, value) SELECT series_id, ts, value FROM moved"
        ),
        {"lo": lo, "hi": hi},
    ).rowcount
    conn.execute(text(f"ALTER TABLE samples ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})"))
    if moved:
        log.warning("rows moved out of the default partition", extra={"reason": f"{moved} rows into {name}"})
    return name


def drop_empty_below(engine: Engine, upto_ms: int) -> int:
    """Drop the partitions that end at or before ``upto_ms`` and hold no row any more; how many.

    Packing (:mod:`edgemon_server.chunks`) empties whole days of ``samples``; their heap pages could be
    reused, but their primary-key index keeps its size until the partition goes. Each is checked
    empty under an exclusive lock, so a late row cannot slip in between the check and the drop.
    """
    dropped = 0
    with engine.connect() as conn:
        if not is_partitioned(conn):
            return 0
        candidates = [p for p in partitions(conn) if p.hi is not None and p.hi <= upto_ms]
    for p in candidates:
        try:
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '2s'"))
                conn.execute(text(f"LOCK TABLE {p.name} IN ACCESS EXCLUSIVE MODE"))
                if conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {p.name})")).scalar():
                    continue
                conn.execute(text(f"DROP TABLE {p.name}"))
        except OperationalError as exc:
            log.warning("empty partition not dropped; tried again next round", extra={"reason": str(exc)[:200]})
            continue
        dropped += 1
    return dropped


def default_rows(conn: Connection) -> int:
    """Rows in the default partition (counted up to ``DEFAULT_COUNT_CAP``)."""
    return int(
        conn.execute(text(f"SELECT count(*) FROM (SELECT 1 FROM {DEFAULT} LIMIT {DEFAULT_COUNT_CAP}) d")).scalar() or 0
    )


def maintain(engine: Engine, now_ms: int, horizon_ms: int | None) -> dict[str, int]:
    """Make partitions ahead, empty the default one into day partitions, drop expired ones.

    ``horizon_ms``: raw samples before it may go (``None``: keep everything). Returns counts of
    partitions ``created`` and ``dropped`` and the rows in the ``default`` partition.
    """
    report = {"created": 0, "dropped": 0, "default": 0}
    with engine.connect() as lock:
        if not is_partitioned(lock):
            return report
        if not lock.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": LOCK_ID}).scalar():
            return report  # another collector is at it
        try:
            _maintain(engine, now_ms, horizon_ms, report)
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": LOCK_ID})
            lock.commit()
    if report["default"]:
        log.warning(
            "rows in the default partition of samples",
            extra={"reason": f"{report['default']} rows outside every day partition: maintenance fell behind?"},
        )
    return report


def _maintain(engine: Engine, now_ms: int, horizon_ms: int | None, report: dict[str, int]) -> None:
    with engine.connect() as conn:
        parts = partitions(conn)
        stray = conn.execute(text(f"SELECT DISTINCT ts - ts % {DAY_MS} FROM {DEFAULT} LIMIT 400")).scalars().all()
    wanted = {day_of(now_ms) + i * DAY_MS for i in range(AHEAD_DAYS + 1)}
    wanted |= {int(d) for d in stray}
    for day in sorted(wanted):
        if horizon_ms is not None and day + DAY_MS <= horizon_ms:
            continue  # would expire at once: its rows (if any) go by the chunked delete
        if _covered(parts, day, day + DAY_MS):
            continue
        with engine.begin() as conn:
            name = create_day(conn, day)
        parts.append(Partition(name, day, day + DAY_MS))
        report["created"] += 1
    if horizon_ms is not None:
        for p in parts:
            if p.hi is None or p.hi > horizon_ms:
                continue
            try:
                with engine.begin() as conn:
                    conn.execute(text("SET LOCAL lock_timeout = '2s'"))
                    conn.execute(text(f"DROP TABLE {p.name}"))
            except OperationalError as exc:
                log.warning("partition not dropped; tried again next round", extra={"reason": str(exc)[:200]})
                continue
            report["dropped"] += 1
    with engine.connect() as conn:
        report["default"] = default_rows(conn)
