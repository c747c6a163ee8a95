"""The ``/api/v1`` routes (one blueprint): the fleet, a device, its metrics, latest values and series, rejects."""

from __future__ import annotations

import math
import time
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from sqlalchemy import Connection, Engine, select

from edgemon_protocol.flatten import CollisionError, unflatten
from edgemon_protocol.meta import Metric
from edgemon_protocol.meta import lookup as meta_lookup
from edgemon_server import queries as q
from edgemon_server.access import ApiSettings
from edgemon_server.openapi import document
from edgemon_server.params import (
    DEFAULT_POINTS,
    DEFAULT_RANGE_MS,
    DEVICE_RE,
    MAX_KEY,
    MAX_METRICS,
    MAX_PAGE,
    MAX_POINTS,
    ApiError,
    decode_cursor,
    encode_cursor,
    int_arg,
    iso,
    parse_time,
    text_arg,
)


def conn() -> Connection:
    """The request's database connection, opened on first use and closed at teardown."""
    if "conn" not in g:
        engine: Engine = current_app.extensions["edgemon_engine"]
        g.conn = engine.connect()
    connection: Connection = g.conn
    return connection


def device_row(device: str) -> Any:
    """The device's row, or 404."""
    if not DEVICE_RE.fullmatch(device):
        raise ApiError(400, f"device id {device[:140]!r} may hold only letters, digits, _ . : - (1-128)")
    row = conn().execute(select(q.DEVICES).where(q.DEVICES.c.id == device)).first()
    if row is None:
        raise ApiError(404, f"no device {device!r}")
    return row


def online(row: Any, now_ms: int) -> bool:
    """Seen within ``online_factor`` intervals (at least 5 s)."""
    settings: ApiSettings = current_app.extensions["edgemon_api"]
    return bool(now_ms - row.last_seen <= max(5000.0, settings.online_factor * row.interval * 1000))


api = Blueprint("api", __name__, url_prefix="/api/v1")

NO_METADATA = Metric()
"""What a key the device did not describe gets: no unit, a gauge."""


@api.get("/devices")
def devices() -> Response:
    """The fleet: status, counts, headline values; sorted, filtered by id prefix, paginated."""
    now_ms = round(time.time() * 1000)
    prefix = text_arg("prefix", 128)
    sort = text_arg("sort", 20) or "id"
    descending = sort.startswith("-")
    sort = sort.lstrip("-")
    if sort not in q.SORTS:
        raise ApiError(400, f"sort: {sort!r} is not one of {', '.join(q.SORTS)} (prefix '-' for descending)")
    limit = int_arg("limit", 100, 1, MAX_PAGE)
    after = None
    if raw := request.args.get("cursor"):
        after = decode_cursor(raw[:512])
        if not (isinstance(after, list) and len(after) == 2 and isinstance(after[1], str)):
            raise ApiError(400, "cursor: not a cursor returned by this API")
        if not DEVICE_RE.fullmatch(after[1]) or (sort == "id" and after[0] != after[1]):
            raise ApiError(400, "cursor: not a cursor returned by this API")
        if sort != "id" and not (isinstance(after[0], int) and not isinstance(after[0], bool)):
            raise ApiError(400, "cursor: does not belong to this sort order")
        if sort != "id" and not -(2**63) < after[0] < 2**63:
            raise ApiError(400, "cursor: not a cursor returned by this API")
    rows = conn().execute(q.devices_page(prefix, sort, descending, after, limit)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    ids = [r.id for r in rows]
    counts = q.metric_counts(conn(), ids) if ids else {}
    heads = q.headlines(conn(), ids, q.metadata(conn(), ids)) if ids else {}
    items = [
        {
            "id": r.id,
            "first_seen": iso(r.first_seen),
            "last_seen": iso(r.last_seen),
            "last_ts": iso(r.last_ts),
            "interval": r.interval,
            "online": online(r, now_ms),
            "metrics": counts.get(r.id, 0),
            "alerts": 0,
            "headlines": heads.get(r.id, []),
        }
        for r in rows
    ]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor([getattr(last, sort), last.id])
    return jsonify({"devices": items, "next_cursor": next_cursor})


@api.get("/devices/<device>")
def device(device: str) -> Response:
    """One device: attributes and counters."""
    row = device_row(device)
    now_ms = round(time.time() * 1000)
    c = conn()
    # The span of stored seqs minus the payloads stored (O(1); an agent whose seq restarted
    # makes it approximate). Late payloads that fill a hole lower it.
    missing = max(0, row.max_seq - row.first_seq + 1 - row.received) if row.first_seq is not None else 0
    rejected = int(c.execute(q.rejected_query(row.id)).scalar() or 0)
    return jsonify(
        {
            "id": row.id,
            "first_seen": iso(row.first_seen),
            "last_seen": iso(row.last_seen),
            "last_ts": iso(row.last_ts),
            "last_seq": row.last_seq,
            "interval": row.interval,
            "online": online(row, now_ms),
            "attributes": row.attributes or {},
            "counters": {
                "received": row.received,
                "duplicates": row.duplicates,
                "missing": missing,
                "rejected": rejected,
            },
        }
    )


@api.get("/devices/<device>/metrics")
def metrics(device: str) -> Response:
    """Metric keys (optionally by prefix): latest value and time, and what the device says they mean."""
    row = device_row(device)
    prefix = text_arg("prefix", MAX_KEY)
    described = q.metadata(conn(), [row.id])[row.id]
    items = []
    for key, value, ts in conn().execute(q.metrics_query(row.id, prefix)):
        metric = meta_lookup(described, key) or NO_METADATA
        items.append(
            {
                "key": key,
                "value": value,
                "ts": iso(ts),
                "unit": metric.unit or None,
                "kind": metric.kind,
                "description": metric.description or None,
            }
        )
    return jsonify({"device": row.id, "metrics": items})


@api.get("/devices/<device>/latest")
def latest(device: str) -> Response:
    """The newest value of every metric, flat or (``nested=1``) re-nested; with an ETag."""
    row = device_row(device)
    nested = text_arg("nested", 5)
    if nested not in ("", "0", "1", "true", "false"):
        raise ApiError(400, f"nested: {nested!r} is not 0 or 1")
    values = {key: value for key, value, _ts in conn().execute(q.metrics_query(row.id, ""))}
    body: dict[str, Any] = {"device": row.id, "ts": iso(row.last_ts), "attributes": row.attributes or {}}
    if nested in ("1", "true"):
        try:
            body["metrics"] = unflatten({**values, **(row.attributes or {})})
        except CollisionError as exc:  # pragma: no cover - valid keys cannot collide
            raise ApiError(409, f"cannot re-nest: {exc}") from None
    else:
        body["metrics"] = values
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-cache"
    response.add_etag()
    response.make_conditional(request)
    return response


@api.get("/devices/<device>/series")
def series(device: str) -> Response:
    """Time series of up to 10 metrics; downsampled into min/max/avg buckets when above ``points``."""
    row = device_row(device)
    keys = request.args.getlist("metric")
    if not keys:
        raise ApiError(400, "metric: at least one metric=KEY is required")
    if len(keys) > MAX_METRICS:
        raise ApiError(400, f"metric: at most {MAX_METRICS} per request")
    for key in keys:
        if len(key) > MAX_KEY:
            raise ApiError(400, f"metric: key longer than {MAX_KEY} characters")
    now_ms = round(time.time() * 1000)
    end = parse_time(request.args["to"], "to", now_ms) if "to" in request.args else now_ms
    start = parse_time(request.args["from"], "from", now_ms) if "from" in request.args else end - DEFAULT_RANGE_MS
    if start > end:
        raise ApiError(400, f"from ({iso(start)}) is after to ({iso(end)})")
    points = int_arg("points", DEFAULT_POINTS, 2, MAX_POINTS)
    c = conn()
    ids = q.series_ids(c, row.id, keys)
    unknown = [k for k in keys if k not in ids]
    if unknown:
        raise ApiError(404, f"device {row.id!r} has no metric {unknown[0][:200]!r}")
    out = []
    for key in dict.fromkeys(keys):
        sid = ids[key]
        count = int(c.execute(q.count_query(sid, start, end)).scalar() or 0)
        if count <= points:
            data = [[ts, value] for ts, value in c.execute(q.raw_query(sid, start, end))]
            out.append({"metric": key, "downsampled": False, "count": count, "points": data})
            continue
        width = max(1, math.ceil((end - start + 1) / points))
        data = [
            [start + int(b) * width, lo, hi, avg]
            for b, lo, hi, avg in c.execute(q.buckets_query(sid, start, end, width))
        ]
        out.append({"metric": key, "downsampled": True, "count": count, "bucket_ms": width, "points": data})
    return jsonify({"device": row.id, "from": iso(start), "to": iso(end), "series": out})


@api.get("/rejects")
def rejects() -> Response:
    """Dead-letter entries, newest first, paginated by ``cursor``."""
    device_filter = text_arg("device", 128)
    limit = int_arg("limit", 50, 1, MAX_PAGE)
    before = None
    if raw := request.args.get("cursor"):
        before = decode_cursor(raw[:64])
        if not isinstance(before, int) or isinstance(before, bool) or not 0 <= before < 2**63:
            raise ApiError(400, "cursor: not a cursor returned by this API")
    rows = conn().execute(q.rejects_page(device_filter or None, before, limit)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        {
            "id": r.id,
            "received": iso(r.received),
            "device": r.device_id,
            "topic": r.topic,
            "reason": r.reason,
            "size": r.size,
            "payload": r.payload.decode("utf-8", "replace"),
        }
        for r in rows
    ]
    return jsonify({"rejects": items, "next_cursor": encode_cursor(rows[-1].id) if more and rows else None})


@api.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document of this API."""
    return jsonify(document())
