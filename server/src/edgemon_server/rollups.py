"""Rollups that stay right when data arrives late, and the retention that may then drop raw samples.

Two tiers, ``rollups_5m`` and ``rollups_1h``: per (series, bucket) the count, sum, min, max and last
value, computed from the raw samples with an upsert (the same statement on SQLite and PostgreSQL).

**Late data.** Edge devices deliver hours or days of backlog after an outage; a rollup that missed it
would be wrong forever. Two rules make that impossible without the writer reading any cursor:

- the maintenance worker rolls a bucket up only once it ended ``ROLL_DELAY`` (10 min) ago;
- the writer, in the transaction that stores a payload, marks its device's five-minute bucket in
  ``rollup_dirty`` when the payload is more than ``MARK_AFTER`` (9 min) old; the minute between the
  two covers a slow commit. The worker recomputes marked buckets, in both tiers, from raw.

Payloads that arrive live (within 9 minutes) cost nothing extra.

**Retention** (``[retention]``: ``raw``, ``rollup_5m``, ``rollup_1h``) deletes in short transactions,
by primary-key range (a few hundred series at a time), so the collector is never blocked for long;
raw samples are never dropped before the buckets they belong to are rolled up and unmarked.

One worker at a time on PostgreSQL (a transaction-level advisory lock); on SQLite the database's
single writer serialises them, and every step is an idempotent upsert anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, literal_column, select, text, update

from edgemon_server import chunks, partitions
from edgemon_server.config import Retention
from edgemon_server.db import Base
from edgemon_server.queries import raw_rows

log = logging.getLogger(__name__)

SAMPLES = Base.metadata.tables["samples"]
SERIES = Base.metadata.tables["series"]
PAYLOADS = Base.metadata.tables["payloads"]
DIRTY = Base.metadata.tables["rollup_dirty"]
STATE = Base.metadata.tables["rollup_state"]
TIERS = {"5m": (Base.metadata.tables["rollups_5m"], 300_000), "1h": (Base.metadata.tables["rollups_1h"], 3_600_000)}
"""Tier name -> (table, bucket width in ms)."""

ROLL_DELAY_MS = 600_000
"""A bucket is rolled up once it ended this long ago."""
MARK_AFTER_MS = 540_000
"""A payload older than this when stored marks its bucket dirty (a minute inside ``ROLL_DELAY_MS``)."""
CHUNK = 400
"""Series per statement (an ``IN`` list: one primary-key seek each)."""
STEP_BUCKETS = 12
"""Buckets rolled forward per transaction."""
VACUUM_STEP = 2048
"""SQLite pages (8 MB at 4 KiB) handed back per incremental-vacuum transaction."""
LOCK_ID = 0x6564_6765_6D6F
"""The PostgreSQL advisory lock of the maintenance worker ("edgemo")."""


def bucket_of(ts_ms: int, width: int = 300_000) -> int:
    """The start of the bucket ``ts_ms`` falls in."""
    return ts_ms - ts_ms % width


def mark_late(conn: Connection, payloads: Sequence[Any], now_ms: int, insert: Any) -> int:
    """In the writer's transaction: mark the five-minute buckets of payloads that arrived late."""
    marks = {(p.device_id, bucket_of(p.ts_ms)) for p in payloads if p.ts_ms < now_ms - MARK_AFTER_MS}
    if marks:
        conn.execute(insert(DIRTY).on_conflict_do_nothing(), [{"device_id": d, "bucket": b} for d, b in sorted(marks)])
    return len(marks)


def _upsert(conn: Connection, table: Any, width: int, start: int, end: int, series: Sequence[int]) -> int:
    """Recompute the buckets of ``series`` in [start, end) from raw samples; returns the rows written."""
    if not series:
        return 0
    ids = ", ".join(str(int(s)) for s in series)
    source = f"samples WHERE series_id IN ({ids}) AND ts >= :start AND ts < :end"
    if conn.dialect.name == "postgresql":  # and the packed hours (late data recomputed below the cursor)
        source = (
            f"(SELECT series_id, ts, value FROM {source} UNION ALL "
            "SELECT c.series_id, u.ts, u.value FROM sample_chunks c, unnest(c.ts, c.value) AS u(ts, value) "
            f"WHERE c.series_id IN ({ids}) AND c.hour >= :hour AND c.hour < :end AND u.ts >= :start AND u.ts < :end"
            ") AS packed"
        )
    sql = (
        f"INSERT INTO {table.name} (series_id, bucket, count, sum, min, max, last) "
        "SELECT series_id, b, count(*), sum(value), min(value), max(value), max(lastv) FROM ("
        f"  SELECT series_id, ts - (ts % {width}) AS b, value,"
        f"    first_value(value) OVER (PARTITION BY series_id, ts - (ts % {width}) ORDER BY ts DESC) AS lastv"
        f"  FROM {source}"
        ") AS raw GROUP BY series_id, b "
        "ON CONFLICT (series_id, bucket) DO UPDATE SET count = excluded.count, sum = excluded.sum, "
        "min = excluded.min, max = excluded.max, last = excluded.last"
    )
    params = {"start": start, "end": end, "hour": start - start % chunks.HOUR_MS}
    return conn.execute(text(sql), params).rowcount or 0


def _all_series(conn: Connection) -> list[int]:
    return [int(r[0]) for r in conn.execute(select(SERIES.c.id).order_by(SERIES.c.id))]


def _locked(conn: Connection) -> bool:
    """Take the worker's lock for this transaction (PostgreSQL); ``False`` when another worker has it."""
    if conn.dialect.name != "postgresql":
        return True
    return bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": LOCK_ID}).scalar())


def cursor(conn: Connection, tier: str) -> int | None:
    """Every bucket of ``tier`` before this is rolled up (``None``: not started)."""
    value = conn.execute(select(STATE.c.cursor).where(STATE.c.tier == tier)).scalar()
    return int(value) if value is not None else None


def roll_forward(engine: Engine, now_ms: int, budget_s: float = 5.0, series: Sequence[int] | None = None) -> int:
    """Roll every tier up to ``ROLL_DELAY_MS`` ago, a few buckets per transaction; the buckets done.

    ``series``: every series id, read once a round by :func:`maintain` (a series created meanwhile
    has no older samples); read here when not given.
    """
    done = 0
    deadline = time.monotonic() + budget_s
    if series is None:
        with engine.connect() as conn:
            series = _all_series(conn)
    for tier, (table, width) in TIERS.items():
        upto = bucket_of(now_ms - ROLL_DELAY_MS, width)
        while time.monotonic() < deadline:
            with engine.begin() as conn:
                if not _locked(conn):
                    return done
                start = cursor(conn, tier)
                if start is None:
                    first = conn.execute(select(func.min(SAMPLES.c.ts))).scalar()
                    if first is None:
                        break
                    start = bucket_of(int(first), width)
                    conn.execute(STATE.insert().values(tier=tier, cursor=start))
                if start >= upto:
                    break
                # A gap in the data (an old first sample, a quiet fleet) is skipped at once: the
                # payloads table (a row per payload, not per sample) says where data starts again.
                following = conn.execute(select(func.min(PAYLOADS.c.ts)).where(PAYLOADS.c.ts >= start)).scalar()
                if following is None or following >= upto:
                    conn.execute(update(STATE).where(STATE.c.tier == tier).values(cursor=upto))
                    done += (upto - start) // width
                    break
                if following >= start + width * STEP_BUCKETS:
                    start = bucket_of(int(following), width)
                end = min(upto, start + width * STEP_BUCKETS)
                for i in range(0, len(series), CHUNK):
                    _upsert(conn, table, width, start, end, series[i : i + CHUNK])
                conn.execute(update(STATE).where(STATE.c.tier == tier).values(cursor=end))
                done += (end - start) // width
    return done


def recompute_dirty(engine: Engine, limit: int = 200) -> int:
    """Recompute the buckets late payloads marked, in both tiers, and clear the marks; how many."""
    with engine.begin() as conn:
        if not _locked(conn):
            return 0
        marks = conn.execute(select(DIRTY.c.device_id, DIRTY.c.bucket).limit(limit)).all()
        if not marks:
            return 0
        by_device: dict[str, list[int]] = {}
        for device, bucket in marks:
            by_device.setdefault(device, []).append(int(bucket))
        packed_upto = chunks.cursor(conn) if chunks.enabled(conn) else None
        for device, buckets in by_device.items():
            series = [int(r[0]) for r in conn.execute(select(SERIES.c.id).where(SERIES.c.device_id == device))]
            for table, width in TIERS.values():
                for start in sorted({bucket_of(b, width) for b in buckets}):
                    for i in range(0, len(series), CHUNK):
                        _upsert(conn, table, width, start, start + width, series[i : i + CHUNK])
            if packed_upto is not None:  # late rows in hours already packed join their chunks
                for hour in sorted({bucket_of(b, chunks.HOUR_MS) for b in buckets if b < packed_upto}):
                    chunks.merge(conn, series, hour)
            conn.execute(delete(DIRTY).where(DIRTY.c.device_id == device, DIRTY.c.bucket.in_(buckets)))
        log.info("late data rolled up", extra={"reason": f"{len(marks)} buckets of {len(by_device)} devices"})
        return len(marks)


def apply_retention(
    engine: Engine, retention: Retention, now_ms: int, budget_s: float = 5.0, series: Sequence[int] | None = None
) -> dict[str, int]:
    """Delete what is older than each horizon, in short transactions; the rows deleted per table.

    Raw samples go only where the 1-hour tier has rolled past them and no dirty mark remains before
    the horizon (late data still to roll up keeps its raw samples).
    """
    deleted = {"samples": 0, "payloads": 0, "chunks": 0, "rollups_5m": 0, "rollups_1h": 0, "vacuumed_pages": 0}
    deadline = time.monotonic() + budget_s
    with engine.connect() as conn:
        if series is None:
            series = _all_series(conn)
        rolled = min((cursor(conn, tier) or 0) for tier in TIERS)
        oldest_dirty = conn.execute(select(func.min(DIRTY.c.bucket))).scalar()
    horizons: list[tuple[str, Any, int]] = []
    raw_horizon = None
    if retention.raw:
        raw_horizon = min(now_ms - round(retention.raw * 1000), rolled)
        if oldest_dirty is not None:
            raw_horizon = min(raw_horizon, int(oldest_dirty))
        horizons.append(("samples", SAMPLES, raw_horizon))
    parts = partitions.maintain(engine, now_ms, raw_horizon)  # PostgreSQL: whole days go first
    deleted.update({f"partitions_{k}": v for k, v in parts.items()})
    for tier, seconds in (("5m", retention.rollup_5m), ("1h", retention.rollup_1h)):
        if seconds:
            horizons.append((f"rollups_{tier}", TIERS[tier][0], now_ms - round(seconds * 1000)))
    for name, table, horizon in horizons:
        column = table.c.ts if name == "samples" else table.c.bucket
        for i in range(0, len(series), CHUNK):
            if time.monotonic() > deadline:
                return deleted
            with engine.begin() as conn:  # a short transaction per chunk of series
                result = conn.execute(
                    delete(table).where(table.c.series_id.in_(series[i : i + CHUNK]), column < horizon)
                )
                deleted[name] += result.rowcount or 0
    if retention.raw:
        with engine.begin() as conn:
            result = conn.execute(delete(PAYLOADS).where(PAYLOADS.c.ts < horizons[0][2]))
            deleted["payloads"] = result.rowcount or 0
        deleted["chunks"] = chunks.expire(engine, horizons[0][2], series)
    if engine.dialect.name == "sqlite":
        deleted["vacuumed_pages"] = incremental_vacuum(engine, deadline)
    return deleted


def incremental_vacuum(engine: Engine, deadline: float) -> int:
    """SQLite: hand free pages back to the file system, ``VACUUM_STEP`` pages per short transaction.

    Works on databases created with ``auto_vacuum=INCREMENTAL`` (every database this version makes;
    an older file converts with ``edgemon-server maintain --vacuum``, which rewrites it once).
    """
    freed = 0
    raw = engine.raw_connection()
    try:
        while time.monotonic() < deadline:
            free = int(raw.execute("PRAGMA freelist_count").fetchone()[0] or 0)
            if not free or raw.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
                break
            # each step of this statement frees one page, and sqlite3's execute() steps once:
            # executescript() runs it to the end (in its own implicit transaction)
            raw.driver_connection.executescript(f"PRAGMA incremental_vacuum({VACUUM_STEP})")  # type: ignore[union-attr]
            freed += min(free, VACUUM_STEP)
    finally:
        raw.close()
    return freed


def maintain(engine: Engine, retention: Retention, now_ms: int | None = None) -> dict[str, int]:
    """One round: late buckets, then roll forward, then retention; what it did."""
    now_ms = round(time.time() * 1000) if now_ms is None else now_ms
    with engine.connect() as conn:
        series = _all_series(conn)  # once a round, for every step
    report = {"dirty": recompute_dirty(engine), "rolled": roll_forward(engine, now_ms, series=series)}
    with engine.connect() as conn:
        rolled = cursor(conn, "1h")
    report["packed_hours"] = chunks.compact(engine, now_ms, rolled, series)
    report.update(apply_retention(engine, retention, now_ms, series=series))
    return report


def tier_for(width_ms: int) -> str | None:
    """The coarsest tier whose buckets fit in an API bucket of ``width_ms`` (``None``: raw)."""
    return "1h" if width_ms >= 3_600_000 else "5m" if width_ms >= 300_000 else None


def aligned(tier: str, start: int, width: int) -> tuple[int, int]:
    """``(base, width)`` of API buckets the tier's buckets nest in: a multiple of its width, on its grid."""
    tw = TIERS[tier][1]
    return bucket_of(start, tw), -(-width // tw) * tw


def read_buckets(
    conn: Connection, tier: str, series_id: int, start: int, end: int, width: int
) -> tuple[int, list[list[Any]]]:
    """``(count, [[bucket_start, min, max, avg], ...])`` of ``width`` ms buckets from ``start``.

    ``start`` and ``width`` must come from :func:`aligned`, so every rollup bucket falls in exactly
    one of them. Whole rollup buckets inside the range come from the tier; what it has not reached
    yet (the last ``ROLL_DELAY_MS`` and more) comes from raw samples.
    """
    table, tw = TIERS[tier]
    reached = cursor(conn, tier) or 0
    lo = -(-start // tw) * tw  # the first whole bucket
    hi = min(bucket_of(end + 1, tw), bucket_of(reached, tw))
    acc: dict[int, list[float]] = {}

    def add(b: int, mn: float, mx: float, total: float, n: int) -> None:
        cur = acc.get(b)
        if cur is None:
            acc[b] = [mn, mx, total, n]
        else:
            cur[0], cur[1], cur[2], cur[3] = min(cur[0], mn), max(cur[1], mx), cur[2] + total, cur[3] + n

    w: Any = literal_column(str(int(width)))
    if hi > lo:
        rows = conn.execute(
            select(
                ((table.c.bucket - start) // w).label("b"),
                func.min(table.c.min),
                func.max(table.c.max),
                func.sum(table.c.sum),
                func.sum(table.c.count),
            )
            .where(table.c.series_id == series_id, table.c.bucket >= lo, table.c.bucket < hi)
            .group_by(text("1"))
        )
        for b, mn, mx, total, n in rows:
            add(int(b), mn, mx, total, int(n))
        raw_ranges = [(start, lo - 1), (hi, end)]
    else:
        raw_ranges = [(start, end)]
    for a, z in raw_ranges:
        if z < a:
            continue
        raw = raw_rows(series_id, a, z, conn.dialect.name)
        rows = conn.execute(
            select(
                ((raw.c.ts - start) // w).label("b"),
                func.min(raw.c.value),
                func.max(raw.c.value),
                func.sum(raw.c.value),
                func.count(),
            ).group_by(text("1"))
        )
        for b, mn, mx, total, n in rows:
            add(int(b), mn, mx, total, int(n))
    points = [[start + b * width, v[0], v[1], v[2] / v[3]] for b, v in sorted(acc.items()) if v[3]]
    return sum(int(v[3]) for v in acc.values()), points
