"""``/api/v1/devices/<id>/series``: time series, raw or downsampled into min/max/avg buckets.

``fn=rate`` gives a counter's per-second rate (reset-aware); ``format=csv`` (or ``Accept: text/csv``)
the same points as CSV.
"""

from __future__ import annotations

import csv
import io
import math
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request

from edgemon_protocol.meta import Metric
from edgemon_protocol.meta import lookup as meta_lookup
from edgemon_server import queries as q
from edgemon_server import rollups
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
    text_arg,
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
    fn = text_arg("fn", 10)
    if fn not in ("", "rate"):
        raise ApiError(400, f"fn: {fn!r} is not rate (or leave it out for the values)")
    c = conn()
    ids = q.series_ids(c, row.id, keys)
    unknown = [k for k in keys if k not in ids]
    if unknown:
        raise ApiError(404, f"device {row.id!r} has no metric {unknown[0][:200]!r}")
    if fn == "rate":
        described = q.metadata(c, [row.id])[row.id]
        for key in keys:
            kind = (meta_lookup(described, key) or Metric()).kind
            if kind != "counter":
                raise ApiError(400, f"fn=rate: {key[:200]!r} is a {kind}, not a counter (as its device declares it)")
    out = []
    dialect = c.dialect.name
    width = max(1, math.ceil((end - start + 1) / points))
    tier = None if fn else rollups.tier_for(width)
    for key in dict.fromkeys(keys):
        sid = ids[key]
        if tier is not None:  # long ranges: read the rollups (raw only where they have not reached)
            base, wide = rollups.aligned(tier, start, width)
            count, data = rollups.read_buckets(c, tier, sid, base, end, wide)
            out.append({"metric": key, "downsampled": True, "count": count, "bucket_ms": wide, "points": data})
            continue
        rates = q.rate_subquery(sid, start, end, dialect) if fn == "rate" else None
        count_query = q.rate_count_query(rates) if rates is not None else q.count_query(sid, start, end, dialect)
        count = int(c.execute(count_query).scalar() or 0)
        if count <= points:
            raw = q.rate_raw_query(rates) if rates is not None else q.raw_query(sid, start, end, dialect)
            data = [[ts, value] for ts, value in c.execute(raw)]
            out.append({"metric": key, "downsampled": False, "count": count, "points": data})
            continue
        buckets = (
            q.rate_buckets_query(rates, start, width)
            if rates is not None
            else q.buckets_query(sid, start, end, width, dialect)
        )
        data = [[start + int(b) * width, lo, hi, avg] for b, lo, hi, avg in c.execute(buckets)]
        out.append({"metric": key, "downsampled": True, "count": count, "bucket_ms": width, "points": data})
    if wants_csv():
        return csv_response(row.id, out)
    body = {"device": row.id, "from": iso(start), "to": iso(end), "series": out}
    if fn:
        body["fn"] = fn
    return jsonify(body)


def wants_csv() -> bool:
    """``format=csv``, or an ``Accept`` that prefers ``text/csv`` to JSON."""
    fmt = text_arg("format", 10)
    if fmt not in ("", "csv", "json"):
        raise ApiError(400, f"format: {fmt!r} is not csv or json")
    if fmt:
        return fmt == "csv"
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    return best == "text/csv" and request.accept_mimetypes["text/csv"] > request.accept_mimetypes["application/json"]


def csv_response(device: str, out: list[dict[str, Any]]) -> Response:
    """The series as CSV: ``metric,ts,value,min,max,avg`` (raw points fill ``value``, buckets the rest)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["metric", "ts", "value", "min", "max", "avg"])
    for item in out:
        for point in item["points"]:
            when = iso(int(point[0]))
            if item["downsampled"]:
                writer.writerow([item["metric"], when, "", *point[1:]])
            else:
                writer.writerow([item["metric"], when, point[1], "", "", ""])
    response = Response(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{device}-series.csv"'
    return response
