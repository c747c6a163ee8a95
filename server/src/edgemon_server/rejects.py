"""``/api/v1/rejects``: the dead-letter table, newest first."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from edgemon_server import queries as q
from edgemon_server.lookup import conn
from edgemon_server.params import MAX_PAGE, ApiError, decode_cursor, encode_cursor, int_arg, iso, text_arg

rejects = Blueprint("rejects", __name__, url_prefix="/api/v1/rejects")


@rejects.get("")
def dead_letters() -> Response:
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
