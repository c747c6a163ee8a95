"""``/api/v1/devices/<id>/series``: time series, raw or downsampled into min/max/avg buckets."""

from __future__ import annotations

import math
import time

from flask import Blueprint, Response, jsonify, request

from edgemon_server import queries as q
from edgemon_server.lookup import conn, device_row
from edgemon_server.params import (
    DEFAULT_POINTS,
    DEFAULT_RANGE_MS,
    MAX_KEY,
    MAX_METRICS,
    MAX_POINTS,
    ApiError,
    int_arg,
    iso,
    parse_time,
)

series = Blueprint("series", __name__, url_prefix="/api/v1/devices")


@series.get("/<device>/series")
def get_series(device: str) -> Response:
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
