"""``/api/v1/alerts`` (the fleet's alerts now) and ``/api/v1/devices/<id>/alerts`` (one device's history)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy import select

from edgemon_server import alert_state
from edgemon_server.lookup import conn, device_row
from edgemon_server.params import DEVICE_RE, MAX_PAGE, ApiError, decode_cursor, encode_cursor, int_arg, iso, text_arg

alerts = Blueprint("alerts", __name__, url_prefix="/api/v1")

STATES = {
    "active": ("pending", "firing"),
    "firing": ("firing",),
    "pending": ("pending",),
    "resolved": ("resolved",),
    "all": ("pending", "firing", "resolved"),
}
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def _state_item(row: Any, silent: set[str]) -> dict[str, Any]:
    return {
        "device_id": row.device_id,
        "fingerprint": row.fingerprint,
        "rule": row.rule,
        "key": row.key,
        "severity": row.severity,
        "state": row.state,
        "since": iso(row.since),
        "changed": iso(row.changed),
        "value": row.value,
        "message": row.message,
        "source": row.source,
        "stale": row.source == "device" and row.device_id in silent and row.state != "resolved",
    }


@alerts.get("/alerts")
def fleet_alerts() -> Response:
    """Alerts now: ``state`` active (default: pending and firing), firing, pending, resolved or all."""
    state = text_arg("state", 16) or "active"
    if state not in STATES:
        raise ApiError(400, f"state: {state!r} is not one of {', '.join(STATES)}")
    severity = text_arg("severity", 16)
    if severity and severity not in SEVERITY_ORDER:
        raise ApiError(400, f"severity: {severity!r} is not one of {', '.join(SEVERITY_ORDER)}")
    device = text_arg("device", 128)
    if device and not DEVICE_RE.fullmatch(device):
        raise ApiError(400, f"device: {device[:140]!r} is not a device id")
    limit = int_arg("limit", 1000, 1, 10_000)
    query = select(alert_state.STATE).where(alert_state.STATE.c.state.in_(STATES[state]))
    if severity:
        query = query.where(alert_state.STATE.c.severity == severity)
    if device:
        query = query.where(alert_state.STATE.c.device_id == device)
    rows = conn().execute(query.order_by(alert_state.STATE.c.changed.desc()).limit(limit + 1)).all()
    silent = alert_state.silent_devices(conn(), [r.device_id for r in rows])
    items = sorted(
        (_state_item(r, silent) for r in rows[:limit]),
        key=lambda a: (a["state"] == "resolved", SEVERITY_ORDER[a["severity"]], a["device_id"], a["rule"], a["key"]),
    )
    return jsonify({"alerts": items, "truncated": len(rows) > limit})


@alerts.get("/devices/<device>/alerts")
def device_alerts(device: str) -> Response:
    """One device's alerts now, and its transition history, newest first, paginated by ``cursor``."""
    row = device_row(device)
    limit = int_arg("limit", 100, 1, MAX_PAGE)
    before = None
    if raw := text_arg("cursor", 64):
        before = decode_cursor(raw)
        if not isinstance(before, int) or isinstance(before, bool) or not 0 <= before < 2**63:
            raise ApiError(400, "cursor: not a cursor returned by this API")
    events = alert_state.EVENTS
    query = select(events).where(events.c.device_id == row.id)
    if before is not None:
        query = query.where(events.c.id < before)
    rows = conn().execute(query.order_by(events.c.id.desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    current = conn().execute(select(alert_state.STATE).where(alert_state.STATE.c.device_id == row.id)).all()
    silent = alert_state.silent_devices(conn(), [row.id])
    history = [
        {
            "id": r.id,
            "rule": r.rule,
            "key": r.key,
            "severity": r.severity,
            "state": r.state,
            "at": iso(r.at),
            "value": r.value,
            "message": r.message,
        }
        for r in rows
    ]
    return jsonify(
        {
            "device": row.id,
            "current": sorted(
                (_state_item(r, silent) for r in current if r.state != "resolved"),
                key=lambda a: (SEVERITY_ORDER[a["severity"]], a["rule"], a["key"]),
            ),
            "history": history,
            "next_cursor": encode_cursor(rows[-1].id) if more and rows else None,
        }
    )


@alerts.get("/silences")
def silences() -> Response:
    """Silences in force now (every one has an end)."""
    import time  # noqa: PLC0415

    from edgemon_server.silences import active_silences  # noqa: PLC0415

    rows = active_silences(conn(), round(time.time() * 1000))
    return jsonify(
        {
            "silences": [
                {
                    "id": r["id"],
                    "matchers": r["matchers"],
                    "starts": iso(r["starts"]),
                    "ends": iso(r["ends"]),
                    "comment": r["comment"],
                }
                for r in rows
            ]
        }
    )
