"""PostgreSQL: raw samples older than two hours packed into one row per (series, hour).

A row per sample costs about 100 bytes on PostgreSQL (a 23-byte tuple header, the line pointer,
and the primary key repeated in its index) against 20 on SQLite. ``sample_chunks`` (migration
0014, PostgreSQL only) holds an hour of one series as two arrays, ``ts`` and ``value``, in time
order: one tuple header and one index entry per 360 samples at 10 s, and arrays over 2 kB are
compressed by TOAST.

- **Packing** (:func:`compact`, each maintenance round): every hour that ended more than
  ``COMPACT_AFTER_MS`` ago and that the hourly rollup has passed is moved, a few thousand series per
  transaction, into chunks (``INSERT ... SELECT array_agg(...) GROUP BY series_id``, then the rows
  are deleted in the same transaction); ``rollup_state`` keeps the cursor (tier ``chunks``).
- **Late data** below the cursor lands as rows in ``samples`` as always, and is marked dirty by the
  writer (it is more than 9 minutes late); when the rollups are recomputed for it, its hours are
  packed again (:func:`merge`): the chunk and the new rows become one chunk.
- **Reading**: :func:`edgemon_server.queries.raw_rows` is every raw read: the rows of ``samples``
  plus the unnested chunks of the hours the range touches. Duplicates cannot meet there: a payload
  is stored once (the ``payloads`` table), whether its hour was packed or not.
- **Partitions**: once every hour of a day is packed, that day's partition of ``samples`` is empty
  and is dropped (its primary-key index would otherwise keep its size until retention); late rows
  for it later go to the default partition, from where maintenance moves them to a new one.
- **Retention** drops chunks whose hour ended before the raw horizon.

SQLite keeps a row per sample: 20 bytes is already at the floor of series, time and value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from sqlalchemy import BigInteger, Column, Connection, Double, Engine, Integer, MetaData, Table, text
from sqlalchemy.dialects.postgresql import ARRAY

from edgemon_server import partitions

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
COMPACT_AFTER_MS = 2 * HOUR_MS
"""Hours stay rows this long (recent data is read and written most; late data rarely reaches past)."""
SERIES_PER_STEP = 2000
"""Series packed per transaction."""
TIER = "chunks"
"""The cursor's name in ``rollup_state``: every hour before it is packed."""

CHUNKS = Table(
    "sample_chunks",
    MetaData(),  # not the models' metadata: the table exists on PostgreSQL only
    Column("series_id", Integer, primary_key=True),
    Column("hour", BigInteger, primary_key=True),
    Column("ts", ARRAY(BigInteger), nullable=False),
    Column("value", ARRAY(Double), nullable=False),
)

_PACK = """
INSERT INTO sample_chunks (series_id, hour, ts, value)
SELECT series_id, :hour, array_agg(ts ORDER BY ts), array_agg(value ORDER BY ts) FROM (
    SELECT series_id, ts, value FROM samples
    WHERE series_id = ANY(:ids) AND ts >= :hour AND ts < :hour + 3600000
    UNION ALL
    SELECT c.series_id, u.ts, u.value FROM sample_chunks c, unnest(c.ts, c.value) AS u(ts, value)
    WHERE c.series_id = ANY(:ids) AND c.hour = :hour
) AS rows GROUP BY series_id
ON CONFLICT (series_id, hour) DO UPDATE SET ts = excluded.ts, value = excluded.value
"""
_UNPACKED = "DELETE FROM samples WHERE series_id = ANY(:ids) AND ts >= :hour AND ts < :hour + 3600000"


def enabled(conn: Connection) -> bool:
    """Whether this database packs samples (PostgreSQL at migration 0014 or later)."""
    if conn.dialect.name != "postgresql":
        return False
    return conn.execute(text("SELECT to_regclass('sample_chunks') IS NOT NULL")).scalar() is True


def merge(conn: Connection, series: Sequence[int], hour: int) -> None:
    """Pack the rows of ``series`` in ``hour`` into their chunks, with what the chunks hold.

    In ``conn``'s transaction: the chunk is written and the rows deleted together.
    """
    for i in range(0, len(series), SERIES_PER_STEP):
        ids = [int(s) for s in series[i : i + SERIES_PER_STEP]]
        conn.execute(text(_PACK), {"ids": ids, "hour": hour})
        conn.execute(text(_UNPACKED), {"ids": ids, "hour": hour})


def cursor(conn: Connection) -> int | None:
    """Every hour before this is packed (``None``: nothing packed yet)."""
    value = conn.execute(text("SELECT cursor FROM rollup_state WHERE tier = :t"), {"t": TIER}).scalar()
    return int(value) if value is not None else None


def compact(engine: Engine, now_ms: int, rolled_ms: int | None, series: Sequence[int], budget_s: float = 5.0) -> int:
    """Pack every whole hour before ``min(now - COMPACT_AFTER_MS, rolled_ms)``; the hours packed.

    ``rolled_ms``: the hourly rollup's cursor (an hour is packed only once it is rolled up, so the
    rollup never reads chunks it is writing). One worker at a time: the caller holds the lock.
    """
    if rolled_ms is None:
        return 0
    upto = min(now_ms - COMPACT_AFTER_MS, rolled_ms)
    upto -= upto % HOUR_MS
    done = 0
    deadline = time.monotonic() + budget_s
    with engine.connect() as conn:
        if not enabled(conn):
            return 0
        start = cursor(conn)
        if start is None:
            first = conn.execute(text("SELECT min(ts) FROM samples")).scalar()
            if first is None:
                return 0
            start = int(first) - int(first) % HOUR_MS
            conn.execute(text("INSERT INTO rollup_state (tier, cursor) VALUES (:t, :c)"), {"t": TIER, "c": start})
            conn.commit()
    hour = start
    while hour < upto and time.monotonic() < deadline:
        with engine.begin() as conn:
            merge(conn, series, hour)
            conn.execute(text("UPDATE rollup_state SET cursor = :c WHERE tier = :t"), {"t": TIER, "c": hour + HOUR_MS})
        hour += HOUR_MS
        done += 1
    if done:
        log.info("samples packed", extra={"reason": f"{done} hours of {len(series)} series into chunks"})
    partitions.drop_empty_below(engine, hour)  # whole days packed: their partitions (and indexes) go
    return done


_TRIM = """
UPDATE sample_chunks c SET ts = k.ts, value = k.value FROM (
    SELECT c2.series_id, array_agg(u.ts ORDER BY u.ts) AS ts, array_agg(u.value ORDER BY u.ts) AS value
    FROM sample_chunks c2, unnest(c2.ts, c2.value) AS u(ts, value)
    WHERE c2.series_id = ANY(:ids) AND c2.hour = :hour AND u.ts >= :h
    GROUP BY c2.series_id
) AS k
WHERE c.series_id = k.series_id AND c.hour = :hour
"""


def expire(engine: Engine, horizon_ms: int, series: Sequence[int]) -> int:
    """Delete the packed samples older than ``horizon_ms``; how many chunks went.

    Whole chunks before the horizon's hour, and the older part of the chunk the horizon falls in.
    """
    deleted = 0
    with engine.connect() as conn:
        if not enabled(conn):
            return 0
    hour = horizon_ms - horizon_ms % HOUR_MS
    for i in range(0, len(series), SERIES_PER_STEP):
        ids = [int(s) for s in series[i : i + SERIES_PER_STEP]]
        with engine.begin() as conn:
            result = conn.execute(
                text(
                    "DELETE FROM sample_chunks WHERE series_id = ANY(:ids) "
                    "AND (hour < :hour OR (hour = :hour AND ts[array_upper(ts, 1)] < :h))"
                ),
                {"ids": ids, "hour": hour, "h": horizon_ms},
            )
            deleted += result.rowcount or 0
            if horizon_ms > hour:
                conn.execute(text(_TRIM), {"ids": ids, "hour": hour, "h": horizon_ms})
    return deleted
