"""The API's resources, one Flask blueprint each, as :func:`edgemon_server.api.create_app` registers them."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from edgemon_server.alerts import alerts
from edgemon_server.devices import devices
from edgemon_server.fleet_query import fleet_query
from edgemon_server.openapi import document
from edgemon_server.overview import overview
from edgemon_server.prometheus import prometheus
from edgemon_server.rejects import rejects
from edgemon_server.rollouts import rollouts
from edgemon_server.series import series

docs = Blueprint("docs", __name__, url_prefix="/api/v1")


@docs.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document of this API."""
    return jsonify(document())


BLUEPRINTS = (devices, series, alerts, rejects, rollouts, fleet_query, overview, prometheus, docs)
