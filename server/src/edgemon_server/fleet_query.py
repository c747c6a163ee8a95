"""``GET /api/v1/query``: one metric across the fleet, one value per device, worst first.

``metric`` is a flat key or a pattern (``*`` one level, ``**`` any number: ``disk-usage-*-percent``).
Each device's value is ``agg`` (max, min, avg, sum) over its matching keys' latest values, or,
with ``from``/``to``, over every sample of its matching keys in that window. ``top`` and ``order``
keep the worst (or best) devices; ``device`` narrows the fleet by a glob, ``tag=name=value`` by its
tags. "Which devices have a disk above 90 %?" is one request:
``?metric=disk-usage-*-percent&agg=max&top=20``.
"""

from __future__ import annotations

import fnmatch
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import func, select

from edgemon_protocol.meta import check_pattern, compile_pattern
from edgemon_server import queries as q
from edgemon_server.lookup import conn
from edgemon_server.params import MAX_KEY, ApiError, int_arg, iso, parse_time, text_arg

fleet_query = Blueprint("fleet_query", __name__, url_prefix="/api/v1")

AGGS = ("max", "min", "avg", "sum")


@fleet_query.get("/query")
def query() -> Response:
    """One value per device for a metric (see the module docstring)."""
    pattern = text_arg("metric", MAX_KEY)
    if not pattern:
        raise ApiError(400, "metric: a key or pattern is required (disk-usage-*-percent)")
    try:
        check_pattern(pattern)
    except ValueError as exc:
        raise ApiError(400, f"metric: {exc}") from None
    agg = text_arg("agg", 8) or "max"
    if agg not in AGGS:
        raise ApiError(400, f"agg: {agg!r} is not one of {', '.join(AGGS)}")
    order = text_arg("order", 8) or "desc"
    if order not in ("desc", "asc"):
        raise ApiError(400, f"order: {order!r} is not desc or asc")
    top = int_arg("top", 100, 1, 10_000)
    glob = text_arg("device", 128) or "*"
    window = "from" in request.args or "to" in request.args
    now_ms = round(time.time() * 1000)
    end = parse_time(request.args["to"], "to", now_ms) if "to" in request.args else now_ms
    start = parse_time(request.args["from"], "from", now_ms) if "from" in request.args else end - 3_600_000
    if start > end:
        raise ApiError(400, f"from ({iso(start)}) is after to ({iso(end)})")
    matcher = compile_pattern(pattern)
    c = conn()
    candidates = select(q.SERIES.c.id, q.SERIES.c.device_id, q.SERIES.c.key, q.SERIES.c.last_value).where(
        q.SERIES.c.key.like(q.like(pattern), escape="!")
    )
    if (ranged := q.key_prefix(pattern, c.dialect.name)) is not None:
        candidates = candidates.where(ranged)  # a range on the key index instead of a scan of every series
    prefix = glob.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
    if prefix:
        candidates = candidates.where(q.SERIES.c.device_id.startswith(prefix, autoescape=True))
    allowed: set[str] | None = None
    if wanted := request.args.getlist("tag"):
        try:
            allowed = q.tagged(c, q.parse_tag_filters([w[:200] for w in wanted[:10]]))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
    series = [
        (sid, device, key, last)
        for sid, device, key, last in c.execute(candidates)
        if matcher.fullmatch(key) and fnmatch.fnmatchcase(device, glob) and (allowed is None or device in allowed)
    ]
    if window:
        values = _window(c, [(sid, device, key) for sid, device, key, _last in series], start, end)
    else:  # the latest values came with the candidates (series.last_value)
        values = [(sid, device, key, v, v, v, 1) for sid, device, key, v in series if v is not None]
    per_device: dict[str, list[tuple[str, float, float, float, int]]] = {}
    for _sid, device, key, lo, hi, total, count in values:
        if count:
            per_device.setdefault(device, []).append((key, lo, hi, total, count))
    results = [_combine(device, items, agg) for device, items in per_device.items()]
    results = [r for r in results if r["value"] is not None]
    results.sort(key=lambda r: (r["value"], r["device"]), reverse=order == "desc")
    body: dict[str, Any] = {
        "metric": pattern,
        "agg": agg,
        "window": {"from": iso(start), "to": iso(end)} if window else None,
        "devices": len(results),
        "results": results[:top],
    }
    return jsonify(body)


def _window(c: Any, series: list[tuple[int, str, str]], start: int, end: int) -> list[tuple[Any, ...]]:
    """(id, device, key, min, max, sum, count) per series over its samples in [start, end]."""
    out: list[tuple[Any, ...]] = []
    ids = {sid: (device, key) for sid, device, key in series}
    for chunk in [list(ids)[i : i + 500] for i in range(0, len(ids), 500)]:
        s = q.raw_rows(chunk, start, end, c.dialect.name)
        rows = c.execute(
            select(
                s.c.series_id, func.min(s.c.value), func.max(s.c.value), func.sum(s.c.value), func.count(s.c.value)
            ).group_by(s.c.series_id)
        )
        for sid, lo, hi, total, count in rows:
            out.append((sid, *ids[sid], lo, hi, total, count))
    return out


def _combine(device: str, items: list[tuple[str, float, float, float, int]], agg: str) -> dict[str, Any]:
    """One device's value over its keys; ``key`` names the one that gave a max or min."""
    if agg in ("max", "min"):
        pick = max if agg == "max" else min
        key, value = pick(((k, hi if agg == "max" else lo) for k, lo, hi, _t, _n in items), key=lambda kv: kv[1])
        return {"device": device, "value": float(value), "key": key, "keys": len(items)}
    total = sum(float(t) for _k, _lo, _hi, t, _n in items)
    count = sum(n for *_rest, n in items)
    value = total if agg == "sum" else total / count
    return {"device": device, "value": value, "key": None, "keys": len(items)}
