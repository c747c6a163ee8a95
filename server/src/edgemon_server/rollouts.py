"""``/api/v1/config/rollouts``: remote configuration rollouts, newest first (:mod:`edgemon_server.fleet_config`)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from edgemon_server import fleet_config
from edgemon_server.lookup import conn
from edgemon_server.params import int_arg, iso

rollouts = Blueprint("rollouts", __name__, url_prefix="/api/v1/config")


@rollouts.get("/rollouts")
def list_rollouts() -> Response:
    """The newest rollouts: target, state, why, the canary devices, the document."""
    limit = int_arg("limit", 50, 1, 500)
    items = [
        {
            "id": r["id"],
            "scope": r["scope"],
            "name": r["name"],
            "match": r["match"],
            "state": r["state"],
            "reason": r["reason"],
            "canary": list(r["canary"]),
            "document": r["document"],
            "expires_at": iso(r["expires_at"]) if r["expires_at"] else None,
            "created": iso(r["created"]),
            "updated": iso(r["updated"]),
        }
        for r in fleet_config.rollouts(conn(), limit)
    ]
    return jsonify({"rollouts": items})
