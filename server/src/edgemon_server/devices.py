"""``/api/v1/devices``: the fleet, one device, its metrics (with what they mean) and its latest values."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Response, jsonify, request

from edgemon_protocol.flatten import CollisionError, unflatten
from edgemon_protocol.meta import Metric
from edgemon_protocol.meta import lookup as meta_lookup
from edgemon_server import fleet_config
from edgemon_server import queries as q
from edgemon_server.lookup import conn, device_row, online
from edgemon_server.params import (
    DEVICE_RE,
    MAX_KEY,
    MAX_PAGE,
    ApiError,
    decode_cursor,
    encode_cursor,
    int_arg,
    iso,
    text_arg,
)

devices = Blueprint("devices", __name__, url_prefix="/api/v1/devices")

NO_METADATA = Metric()
"""What a key the device did not describe gets: no unit, a gauge."""


@devices.get("")
def fleet() -> Response:
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
    page = q.devices_page(prefix, sort, descending, after, limit)
    if wanted := request.args.getlist("tag"):
        try:
            filters = q.parse_tag_filters([w[:200] for w in wanted[:10]])
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        page = page.where(q.DEVICES.c.id.in_(sorted(q.tagged(conn(), filters))))
    rows = conn().execute(page).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = summaries(rows, now_ms)
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor([getattr(last, sort), last.id])
    return jsonify({"devices": items, "next_cursor": next_cursor})


def summaries(rows: Sequence[Any], now_ms: int) -> list[dict[str, Any]]:
    """The fleet view of device rows: status, counts, headline values, alerts, drift, tags."""
    ids = [r.id for r in rows]
    if not ids:
        return []
    c = conn()
    counts = q.metric_counts(c, ids)
    heads = q.headlines(c, ids, q.metadata(c, ids))
    firing = q.alert_counts(c, ids)
    drift = {s["device"] for s in fleet_config.status(c, ids) if s["drift"]}
    tags = q.device_tags(c, ids)
    return [
        {
            "id": r.id,
            "first_seen": iso(r.first_seen),
            "last_seen": iso(r.last_seen),
            "last_ts": iso(r.last_ts),
            "interval": r.interval,
            "online": online(r, now_ms),
            "metrics": counts.get(r.id, 0),
            "alerts": firing.get(r.id, (0, None))[0],
            "alert_severity": firing.get(r.id, (0, None))[1],
            "headlines": heads.get(r.id, []),
            "config_drift": r.id in drift,
            "tags": tags.get(r.id, {}),
        }
        for r in rows
    ]


@devices.get("/<device>")
def device(device: str) -> Response:
    """One device: attributes and counters."""
    row = device_row(device)
    now_ms = round(time.time() * 1000)
    c = conn()
    # The span of stored seqs minus the payloads stored (O(1); an agent whose seq restarted
    # makes it approximate). Late payloads that fill a hole lower it.
    missing = max(0, row.max_seq - row.first_seq + 1 - row.received) if row.first_seq is not None else 0
    rejected = int(c.execute(q.rejected_query(row.id)).scalar() or 0)
    config = next(iter(fleet_config.status(c, [row.id])), None)
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
            "tags": q.device_tags(c, [row.id]).get(row.id, {}),
            "counters": {
                "received": row.received,
                "duplicates": row.duplicates,
                "missing": missing,
                "rejected": rejected,
            },
            "config": {
                "desired_version": config["desired_version"] if config else None,
                "applied_version": config["applied_version"] if config else None,
                "status": config["status"] if config else None,
                "error": config["error"] if config else None,
                "reported_at": iso(config["reported_at"]) if config and config["reported_at"] else None,
                "drift": bool(config and config["drift"]),
            },
        }
    )


@devices.get("/<device>/metrics")
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


@devices.get("/<device>/latest")
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
