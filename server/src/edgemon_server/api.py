"""The read-only HTTP API (Flask), versioned under ``/api/v1``.

``create_app`` builds the application from an engine and settings; the
``edgemon-server api`` and ``run`` commands serve it with waitress. Every
response is JSON, every time is UTC (ISO 8601 with ``Z``; series points carry
epoch milliseconds), every bad parameter is a 4xx with ``{"error": ...}``.
The OpenAPI document (``/api/v1/openapi.json``) is :mod:`edgemon_server.openapi`;
a schemathesis test checks the implementation against it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, jsonify, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from sqlalchemy import Engine
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException

from edgemon_server.access import SECURITY_HEADERS, ApiSettings, authorized
from edgemon_server.dashboard import DASHBOARD, dashboard_view
from edgemon_server.health import healthz
from edgemon_server.params import ApiError
from edgemon_server.routes import BLUEPRINTS

__all__ = ["DASHBOARD", "ApiError", "ApiSettings", "create_app"]


def create_app(
    engine: Engine,
    settings: ApiSettings | None = None,
    collector_stats: Callable[[], Any] | None = None,
    dashboard: Path | None = DASHBOARD,
) -> Flask:
    """The Flask application.

    Args:
        engine: the database (already migrated).
        settings: token, CORS origins, rate limit, online factor.
        collector_stats: returns the in-process collector's stats, for ``/healthz``.
        dashboard: directory of the built dashboard, served at ``/`` (client routes fall back to
            ``index.html``); ``None``: no dashboard.
    """
    settings = settings or ApiSettings()
    app = Flask("edgemon_server", static_folder=None)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["edgemon_engine"] = engine
    app.extensions["edgemon_api"] = settings
    if collector_stats is not None:
        app.extensions["edgemon_collector"] = collector_stats
    limiter = Limiter(
        get_remote_address,
        app=app,
        # One budget per client across every route (a per-route limit multiplied it by the routes).
        application_limits=[settings.rate_limit] if settings.rate_limit else [],
        storage_uri="memory://",
        headers_enabled=True,
    )
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    app.add_url_rule("/healthz", "healthz", healthz, methods=["GET"])
    if dashboard is not None:
        serve = limiter.exempt(dashboard_view(dashboard))
        app.add_url_rule("/", "dashboard", serve, methods=["GET"])
        app.add_url_rule("/<path:path>", "dashboard_path", serve, methods=["GET"])

    @app.before_request
    def _auth() -> Response | None:
        if request.method == "OPTIONS":
            return None
        for name, value in request.args.items(multi=True):
            if "\x00" in value or "\x00" in name:  # no database stores NUL in text (PostgreSQL refuses it)
                raise ApiError(400, f"{name[:40]!r}: contains a NUL character")
        guarded = request.path.startswith(("/api/", "/metrics")) and request.path != "/api/v1/openapi.json"
        if guarded and not authorized():
            response = jsonify({"error": "a bearer token is required (Authorization: Bearer <token>)"})
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Bearer realm="edgemon"'
            return response
        return None

    @app.after_request
    def _cors(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        origin = request.headers.get("Origin")
        if origin and origin in settings.cors_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = "Authorization"
            response.headers["Access-Control-Allow-Methods"] = "GET"
            response.headers["Vary"] = "Origin"
        return response

    @app.teardown_appcontext
    def _close(_exc: BaseException | None) -> None:
        connection = g.pop("conn", None)
        if connection is not None:
            connection.close()

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        return jsonify({"error": exc.message}), exc.status

    @app.errorhandler(DataError)
    def _data_error(exc: DataError) -> tuple[Response, int]:
        # A value the database cannot take (out of range, bad encoding): the client's input, not our fault.
        return jsonify({"error": f"a parameter has a value the database cannot use: {type(exc.orig).__name__}"}), 400

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        message = exc.description or exc.name
        if exc.code == 405:
            message = "this API is read-only: only GET is allowed"
        elif exc.code == 429:
            message = f"rate limit exceeded ({exc.description}); slow down"
        return jsonify({"error": message}), exc.code or 500

    return app
