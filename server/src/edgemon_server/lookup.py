"""What every resource of the API shares: the request's database connection and the device lookup."""

from __future__ import annotations

from typing import Any

from flask import current_app, g
from sqlalchemy import Connection, Engine, select

from edgemon_server import queries as q
from edgemon_server.access import ApiSettings
from edgemon_server.params import DEVICE_RE, ApiError


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
