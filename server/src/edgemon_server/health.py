"""``/healthz``: is ingest working? The database, and a collector heartbeat fresher than 30 s."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from flask import Response, current_app, jsonify
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from edgemon_server import queries as q
from edgemon_server.access import authorized
from edgemon_server.lookup import conn
from edgemon_server.params import iso

HEARTBEAT_STALE_S = 30.0
"""A collector whose heartbeat (every 5 s) is older than this is not counted as running."""


def healthz() -> tuple[Response, int]:
    """Database reachability and, when in this process, the collector's state."""
    body: dict[str, Any] = {"status": "ok"}
    try:
        c = conn()
        c.execute(text("SELECT 1"))
        last = c.execute(select(func.max(q.DEVICES.c.last_seen))).scalar()  # payloads.received has no index
        body["database"] = {"ok": True, "last_received": iso(last)}
        now_ms = round(time.time() * 1000)
        body["collectors"] = [
            {
                "id": r.id,
                "host": r.host,
                "pid": r.pid,
                "started": iso(r.started),
                "updated": iso(r.updated),
                "age_s": round((now_ms - r.updated) / 1000, 1),
                "state": (r.stats or {}).get("state"),
                "stats": r.stats or {},
            }
            for r in c.execute(select(q.COLLECTORS).order_by(q.COLLECTORS.c.updated.desc()).limit(100))
        ]
    except SQLAlchemyError as exc:
        body["status"] = "error"
        body["database"] = {"ok": False, "error": str(exc).splitlines()[0][:200]}
        body["collectors"] = []
    stats: Callable[[], Any] | None = current_app.extensions.get("edgemon_collector")
    body["collector"] = asdict(stats()) if stats is not None else None
    problems = []
    if body["collector"] is not None and body["collector"].get("state") == "failed":
        problems.append(f"this process' collector writer failed: {body['collector'].get('fatal')}")
    fresh = [c for c in body["collectors"] if c["age_s"] <= HEARTBEAT_STALE_S and c["state"] not in ("failed",)]
    stray = max((int(c["stats"].get("default_partition_rows") or 0) for c in fresh), default=0)
    if stray:
        problems.append(
            f"{stray} samples in the default partition (no day partition took them): "
            "partition maintenance fell behind, or rows came from outside the retention horizon"
        )
    if body["database"].get("ok") and not fresh:
        problems.append(f"no collector has written a heartbeat in the last {HEARTBEAT_STALE_S:g} s")
    if problems:
        body["status"] = "error"
        body["problems"] = problems
    if not authorized():
        for c in body["collectors"]:  # host names and pids are for operators with the token
            c.pop("host", None)
            c.pop("pid", None)
    return jsonify(body), 200 if body["status"] == "ok" else 503
