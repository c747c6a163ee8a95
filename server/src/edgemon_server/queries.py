"""The read queries of the HTTP API, in SQLAlchemy Core; every one uses an index (see tests)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Double,
    Integer,
    Select,
    and_,
    case,
    func,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    union_all,
)

from edgemon_protocol.meta import Metric
from edgemon_protocol.meta import lookup as meta_lookup
from edgemon_server.db import Base

DEVICES = Base.metadata.tables["devices"]
SERIES = Base.metadata.tables["series"]
SAMPLES = Base.metadata.tables["samples"]
REJECTS = Base.metadata.tables["rejects"]
COLLECTORS = Base.metadata.tables["collectors"]

META = Base.metadata.tables["metric_meta"]
ALERTS = Base.metadata.tables["alert_state"]

SORTS = {"id": DEVICES.c.id, "last_seen": DEVICES.c.last_seen, "first_seen": DEVICES.c.first_seen}


def devices_page(prefix: str, sort: str, descending: bool, after: tuple[Any, str] | None, limit: int) -> Select[Any]:
    """One page of devices, keyset-paginated on (sort column, id)."""
    column = SORTS[sort]
    query = select(DEVICES)
    if prefix:
        query = query.where(DEVICES.c.id.startswith(prefix, autoescape=True))
    if after is not None:
        value, last_id = after
        if sort == "id":
            query = query.where(DEVICES.c.id < last_id if descending else DEVICES.c.id > last_id)
        elif descending:
            query = query.where(or_(column < value, and_(column == value, DEVICES.c.id < last_id)))
        else:
            query = query.where(tuple_(column, DEVICES.c.id) > tuple_(value, last_id))
    order = [column.desc(), DEVICES.c.id.desc()] if descending else [column.asc(), DEVICES.c.id.asc()]
    return query.order_by(*order).limit(limit + 1)


def alert_counts(conn: Connection, ids: Sequence[str] | None) -> dict[str, tuple[int, str | None]]:
    """Firing alerts per device (of ``ids``; ``None``: the fleet): how many, and the worst severity."""
    rank = {"critical": 0, "warning": 1, "info": 2}
    out: dict[str, tuple[int, str | None]] = {}
    query = (
        select(ALERTS.c.device_id, ALERTS.c.severity, func.count())
        .where(ALERTS.c.state == "firing")
        .group_by(ALERTS.c.device_id, ALERTS.c.severity)
    )
    if ids is not None:
        query = query.where(ALERTS.c.device_id.in_(ids))
    for device, severity, count in conn.execute(query):
        total, worst = out.get(device, (0, None))
        if worst is None or rank[severity] < rank[worst]:
            worst = severity
        out[device] = (total + int(count), worst)
    return out


def metric_counts(conn: Connection, ids: Sequence[str]) -> dict[str, int]:
    """Number of series per device."""
    query = select(SERIES.c.device_id, func.count()).where(SERIES.c.device_id.in_(ids)).group_by(SERIES.c.device_id)
    return {d: int(n) for d, n in conn.execute(query)}


def metadata(conn: Connection, ids: Sequence[str]) -> dict[str, list[tuple[str, Metric]]]:
    """Each device's metric metadata, in its order (the first matching pattern wins)."""
    out: dict[str, list[tuple[str, Metric]]] = {d: [] for d in ids}
    for device, entries in conn.execute(select(META.c.device_id, META.c.entries).where(META.c.device_id.in_(ids))):
        out[device] = [(pattern, Metric(**fields)) for pattern, fields in entries]
    return out


def device_tags(conn: Connection, ids: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
    """Each device's tags (``{}`` for a device that sent none)."""
    query = select(META.c.device_id, META.c.tags)
    if ids is not None:
        query = query.where(META.c.device_id.in_(ids))
    return {device: dict(tags or {}) for device, tags in conn.execute(query)}


def parse_tag_filters(values: Sequence[str]) -> dict[str, str]:
    """``tag=site=berlin`` (repeatable) as ``{"site": "berlin"}``.

    Raises:
        ValueError: a filter that is not name=value.
    """
    out = {}
    for value in values:
        name, sep, wanted = value.partition("=")
        if not sep or not name:
            raise ValueError(f"tag: {value[:80]!r} is not name=value")
        out[name] = wanted
    return out


def tagged(conn: Connection, wanted: dict[str, str]) -> set[str]:
    """The devices whose tags hold every ``name=value`` of ``wanted`` (a value may be a glob)."""
    import fnmatch  # noqa: PLC0415

    return {
        device
        for device, tags in device_tags(conn).items()
        if all(name in tags and fnmatch.fnmatchcase(tags[name], value) for name, value in wanted.items())
    }


KEY_INDEX = "ix_series_key"
"""The index on ``series.key`` in byte order (migration 0015; an expression index on PostgreSQL)."""


def key_prefix(pattern: str, dialect: str) -> Any:
    """A condition on ``series.key`` for the literal start of a metadata pattern (None: it has none).

    ``disk-usage-*-percent`` -> ``key >= 'disk-usage-' AND key < 'disk-usage.'`` in byte order, a
    range on :data:`KEY_INDEX`; the caller keeps its exact match (LIKE and the pattern) beside it.
    """
    prefix = pattern.split("*", 1)[0]
    if not prefix:
        return None
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    key = SERIES.c.key.collate("C") if dialect == "postgresql" else SERIES.c.key
    return and_(key >= prefix, key < upper)


def like(pattern: str) -> str:
    """A SQL LIKE (escape character ``!``) that matches at least what a metadata pattern matches."""
    escaped = pattern.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return escaped.replace("**", "%").replace("*", "%")


def latest_values_query(ids: Sequence[str]) -> Select[Any]:
    """(device, key, latest value) of every series of the devices ``ids``."""
    return select(SERIES.c.device_id, SERIES.c.key, SERIES.c.last_value.label("value")).where(
        SERIES.c.device_id.in_(ids)
    )


def headlines_query(ids: Sequence[str], patterns: Sequence[str]) -> Select[Any]:
    """(device, key, latest value) of the series of ``ids`` that may match a headline pattern."""
    wanted = [SERIES.c.key.like(like(p), escape="!") for p in sorted(set(patterns))]
    return select(SERIES.c.device_id, SERIES.c.key, SERIES.c.last_value.label("value")).where(
        SERIES.c.device_id.in_(ids), or_(*wanted)
    )


def headlines(
    conn: Connection, ids: Sequence[str], described: dict[str, list[tuple[str, Metric]]]
) -> dict[str, list[dict[str, Any]]]:
    """Each device's headline metrics, as its plugins declared them: ``[{label, key, value, unit}]``.

    The value of a headline is the largest of the device's keys its pattern matches (the fullest
    disk, the busiest GPU); ``key`` says which. A device without metadata has none.
    """
    heads = {d: [(p, m) for p, m in entries if m.headline] for d, entries in described.items()}
    out: dict[str, list[dict[str, Any]]] = {d: [] for d in ids}
    patterns = [p for entries in heads.values() for p, _ in entries]
    if not patterns:
        return out
    best: dict[tuple[str, str], tuple[float, str]] = {}
    for device, key, value in conn.execute(headlines_query(ids, patterns)):
        metric = meta_lookup(described.get(device, []), key)  # the first match decides, as everywhere
        if value is None or metric is None or not metric.headline:
            continue
        current = best.get((device, metric.headline))
        if current is None or value > current[0]:
            best[(device, metric.headline)] = (value, key)
    for device, entries in heads.items():
        labels = dict.fromkeys(m.headline for _, m in entries)
        units = {m.headline: m.unit for _, m in reversed(entries)}
        for label in labels:
            value, key = best.get((device, label), (None, None))
            out[device].append({"label": label, "key": key, "value": value, "unit": units[label] or None})
    return out


def metrics_query(device: str, prefix: str) -> Select[Any]:
    """Series of a device (optionally by key prefix) with their latest value and time."""
    query = select(SERIES.c.key, SERIES.c.last_value.label("value"), SERIES.c.last_ts.label("ts")).where(
        SERIES.c.device_id == device
    )
    if prefix:
        query = query.where(SERIES.c.key.startswith(prefix, autoescape=True))
    return query.order_by(SERIES.c.key)


def series_ids(conn: Connection, device: str, keys: Sequence[str]) -> dict[str, int]:
    """Ids of the named series of a device."""
    query = select(SERIES.c.key, SERIES.c.id).where(SERIES.c.device_id == device, SERIES.c.key.in_(keys))
    return {k: int(i) for k, i in conn.execute(query)}


_raw_names = itertools.count()
"""A distinct suffix for each :func:`raw_rows`'s parameters (a statement may hold two)."""
_HOUR_MS = 3_600_000


def raw_rows(series: int | Sequence[int], start: int, end: int, dialect: str) -> Any:
    """Every raw sample of ``series`` in [start, end] as a subquery of (series_id, ts, value).

    The rows of ``samples``, and on PostgreSQL also the packed hours of ``sample_chunks``
    (:mod:`edgemon_server.chunks`) that the range touches, unnested. Every raw read goes through here.
    """
    ids = [series] if isinstance(series, int) else [int(s) for s in series]
    rows = select(SAMPLES.c.series_id, SAMPLES.c.ts, SAMPLES.c.value).where(
        SAMPLES.c.series_id.in_(ids), SAMPLES.c.ts.between(start, end)
    )
    if dialect != "postgresql":
        return rows.subquery()
    n = next(_raw_names)
    packed = (
        text(
            "SELECT c.series_id, u.ts, u.value FROM sample_chunks c, unnest(c.ts, c.value) AS u(ts, value) "
            f"WHERE c.series_id = ANY(:chunk_ids_{n}) AND c.hour >= :chunk_hour_{n} AND c.hour <= :chunk_end_{n} "
            f"AND u.ts >= :chunk_start_{n} AND u.ts <= :chunk_end_{n}"
        )
        .bindparams(
            **{
                f"chunk_ids_{n}": ids,
                f"chunk_hour_{n}": start - start % _HOUR_MS,
                f"chunk_start_{n}": start,
                f"chunk_end_{n}": end,
            }
        )
        .columns(series_id=Integer, ts=BigInteger, value=Double)
    )
    return union_all(rows, packed).subquery()


def count_query(series_id: int, start: int, end: int, dialect: str) -> Select[Any]:
    """How many samples a series has in [start, end]."""
    return select(func.count()).select_from(raw_rows(series_id, start, end, dialect))


def raw_query(series_id: int, start: int, end: int, dialect: str) -> Select[Any]:
    """The samples of a series in [start, end], oldest first."""
    raw = raw_rows(series_id, start, end, dialect)
    return select(raw.c.ts, raw.c.value).order_by(raw.c.ts)


def buckets_query(series_id: int, start: int, end: int, width: int, dialect: str) -> Select[Any]:
    """Min/max/avg per time bucket of ``width`` ms from ``start`` (integer division on both databases)."""
    raw = raw_rows(series_id, start, end, dialect)
    bucket = ((raw.c.ts - start) // literal_column(str(int(width)))).label("bucket")
    return (
        select(bucket, func.min(raw.c.value), func.max(raw.c.value), func.avg(raw.c.value))
        .group_by(bucket)
        .order_by(bucket)
    )


RATE_LOOKBACK_MS = 6 * 3_600_000
"""How far before a range the sample a rate starts from is looked for."""


def rate_subquery(series_id: int, start: int, end: int, dialect: str) -> Any:
    """(ts, per-second rate) of a counter in [start, end]: reset-aware, from each sample and the one before.

    A drop means the counter restarted from zero (a reboot): the new value itself is what was counted
    since. The first sample of the range has no rate unless the sample before it (looked up within
    ``RATE_LOOKBACK_MS``) gives it one, so a range that starts mid-series loses nothing.
    """
    raw = raw_rows(series_id, start - RATE_LOOKBACK_MS, end, dialect)
    prev_v = func.lag(raw.c.value).over(order_by=raw.c.ts)
    prev_t = func.lag(raw.c.ts).over(order_by=raw.c.ts)
    inner = select(raw.c.ts, raw.c.value, prev_v.label("pv"), prev_t.label("pt")).subquery()
    delta = case((inner.c.value >= inner.c.pv, inner.c.value - inner.c.pv), else_=inner.c.value)
    rate = (delta * 1000.0 / (inner.c.ts - inner.c.pt)).label("value")
    return (
        select(inner.c.ts, rate).where(inner.c.pv.is_not(None), inner.c.ts > inner.c.pt, inner.c.ts >= start).subquery()
    )


def rate_count_query(rates: Any) -> Select[Any]:
    """How many rate points a :func:`rate_subquery` has."""
    return select(func.count()).select_from(rates)


def rate_raw_query(rates: Any) -> Select[Any]:
    """The rate points, oldest first."""
    return select(rates.c.ts, rates.c.value).order_by(rates.c.ts)


def rate_buckets_query(rates: Any, start: int, width: int) -> Select[Any]:
    """Min/max/avg of the rate per time bucket."""
    bucket = ((rates.c.ts - start) // literal_column(str(int(width)))).label("bucket")
    return (
        select(bucket, func.min(rates.c.value), func.max(rates.c.value), func.avg(rates.c.value))
        .group_by(bucket)
        .order_by(bucket)
    )


def rejected_query(device: str) -> Select[Any]:
    """Rejected messages of a device."""
    return select(func.count()).select_from(REJECTS).where(REJECTS.c.device_id == device)


def rejects_page(device: str | None, before: int | None, limit: int) -> Select[Any]:
    """Newest rejects first, keyset-paginated on id."""
    query = select(REJECTS)
    if device:
        query = query.where(REJECTS.c.device_id == device)
    if before is not None:
        query = query.where(REJECTS.c.id < before)
    return query.order_by(REJECTS.c.id.desc()).limit(limit + 1)
