"""The read-only HTTP API (Flask), versioned under ``/api/v1``.

``create_app`` builds the application from an engine and settings; the
``edgemon-server api`` and ``run`` commands serve it with waitress. Every
response is JSON, every time is UTC (ISO 8601 with ``Z``; series points carry
epoch milliseconds), every bad parameter is a 4xx with ``{"error": ...}``.
The OpenAPI document (``/api/v1/openapi.json``) is :mod:`edgemon_server.openapi`;
a schemathesis test checks the implementation against it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request, send_from_directory
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.exc import DataError, SQLAlchemyError
from werkzeug.exceptions import HTTPException

from edgemon_server import queries as q
from edgemon_server.flatten import CollisionError, unflatten
from edgemon_server.openapi import document
from edgemon_server.validate import from_ms, to_ms

DEVICE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
MAX_METRICS = 10
MAX_KEY = 1024
DEFAULT_POINTS = 500
MAX_POINTS = 5000
DEFAULT_RANGE_MS = 3600_000
MAX_PAGE = 1000
RELATIVE_RE = re.compile(r"-(\d{1,6})(s|m|h|d)")
UNITS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class ApiError(Exception):
    """A client error: status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ApiSettings:
    """What the API needs from ``[server]``."""

    token: str = ""
    cors_origins: tuple[str, ...] = ()
    rate_limit: str = "600 per minute"
    online_factor: float = 3.0


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds -> ``2026-11-29T10:00:00.123Z``."""
    if ms is None:
        return None
    return from_ms(ms).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(value: str, name: str, now_ms: int) -> int:
    """ISO 8601 (UTC if no offset), epoch seconds, ``now`` or ``-15m``/``-1h``/``-7d`` -> epoch ms."""
    value = value.strip()
    if len(value) > 40:
        raise ApiError(400, f"{name}: too long")
    if value == "now":
        return now_ms
    if match := RELATIVE_RE.fullmatch(value):
        return _in_range(now_ms - int(match[1]) * UNITS[match[2]], name, value)
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or not 0 <= seconds < 1e11:
            raise ApiError(400, f"{name}: {value!r} is not an epoch time in seconds")
        return round(seconds * 1000)
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400, f"{name}: {value!r} is not a time (ISO 8601, epoch seconds, 'now' or '-15m', '-1h', '-7d')"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    try:
        return _in_range(to_ms(when), name, value)
    except (OverflowError, ValueError, OSError):
        raise ApiError(400, f"{name}: {value!r} is out of range") from None


MAX_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the last time every database, Python and JavaScript can represent."""


def _in_range(ms: int, name: str, value: str) -> int:
    if not 0 <= ms <= MAX_MS:
        raise ApiError(400, f"{name}: {value!r} is out of range (1970 to 9999)")
    return ms


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"\d{1,9}", raw.strip()):
        raise ApiError(400, f"{name}: {raw[:40]!r} is not a whole number")
    value = int(raw)
    if not low <= value <= high:
        raise ApiError(400, f"{name}: {value} is out of range {low}..{high}")
    return value


def text_arg(name: str, max_len: int = 256) -> str:
    """A short string query parameter."""
    value = request.args.get(name, "")
    if len(value) > max_len:
        raise ApiError(400, f"{name}: longer than {max_len} characters")
    return value


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


def encode_cursor(value: Any) -> str:
    """Opaque pagination cursor."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> Any:
    """Inverse of :func:`encode_cursor`; 400 on anything else."""
    try:
        return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "cursor: not a cursor returned by this API") from None


api = Blueprint("api", __name__, url_prefix="/api/v1")


@api.get("/devices")
def devices() -> Response:
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
    rows = conn().execute(q.devices_page(prefix, sort, descending, after, limit)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    ids = [r.id for r in rows]
    counts = q.metric_counts(conn(), ids) if ids else {}
    heads, head_keys = q.headlines(conn(), ids) if ids else ({}, {})
    items = [
        {
            "id": r.id,
            "first_seen": iso(r.first_seen),
            "last_seen": iso(r.last_seen),
            "last_ts": iso(r.last_ts),
            "interval": r.interval,
            "online": online(r, now_ms),
            "metrics": counts.get(r.id, 0),
            "alerts": 0,
            "headline": heads.get(r.id, dict.fromkeys(q.HEADLINES)),
            "headline_keys": head_keys.get(r.id, dict.fromkeys(q.HEADLINES)),
        }
        for r in rows
    ]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor([getattr(last, sort), last.id])
    return jsonify({"devices": items, "next_cursor": next_cursor})


@api.get("/devices/<device>")
def device(device: str) -> Response:
    """One device: attributes and counters."""
    row = device_row(device)
    now_ms = round(time.time() * 1000)
    c = conn()
    # The span of stored seqs minus the payloads stored (O(1); an agent whose seq restarted
    # makes it approximate). Late payloads that fill a hole lower it.
    missing = max(0, row.max_seq - row.first_seq + 1 - row.received) if row.first_seq is not None else 0
    rejected = int(c.execute(q.rejected_query(row.id)).scalar() or 0)
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
            "counters": {
                "received": row.received,
                "duplicates": row.duplicates,
                "missing": missing,
                "rejected": rejected,
            },
        }
    )


@api.get("/devices/<device>/metrics")
def metrics(device: str) -> Response:
    """Metric keys (optionally by prefix) with their latest value and time."""
    row = device_row(device)
    prefix = text_arg("prefix", MAX_KEY)
    items = [
        {"key": key, "value": value, "ts": iso(ts)}
        for key, value, ts in conn().execute(q.metrics_query(row.id, prefix))
    ]
    return jsonify({"device": row.id, "metrics": items})


@api.get("/devices/<device>/latest")
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


@api.get("/devices/<device>/series")
def series(device: str) -> Response:
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


@api.get("/rejects")
def rejects() -> Response:
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


@api.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document of this API."""
    return jsonify(document())


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
    if body["database"].get("ok") and not fresh:
        problems.append(f"no collector has written a heartbeat in the last {HEARTBEAT_STALE_S:g} s")
    if problems:
        body["status"] = "error"
        body["problems"] = problems
    if not _authorized():
        for c in body["collectors"]:  # host names and pids are for operators with the token
            c.pop("host", None)
            c.pop("pid", None)
    return jsonify(body), 200 if body["status"] == "ok" else 503


def _authorized() -> bool:
    """The request carries the API token (or none is configured)."""
    token: str = current_app.extensions["edgemon_api"].token
    if not token:
        return True
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    return hmac.compare_digest(given.encode(), token.encode())


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # The dashboard is one script and one style sheet from this origin; uPlot draws on a canvas.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    ),
}
"""On every response."""

HEARTBEAT_STALE_S = 30.0
"""A collector whose heartbeat (every 5 s) is older than this is not counted as running."""

DASHBOARD = Path(__file__).parent / "static"
"""Where ``npm run build`` in ``frontend/`` puts the dashboard."""


def _is_file(directory: Path, path: str) -> bool:
    """``path`` names a file of the built dashboard (a name too long for the file system is not one)."""
    if len(path) > 1024:
        return False
    try:
        return (directory / path).is_file()
    except OSError:  # ENAMETOOLONG, ELOOP
        return False


def _dashboard(directory: Path) -> Callable[..., Any]:
    def serve(path: str = "") -> Any:
        if path.startswith("api/"):
            raise ApiError(404, f"no such endpoint: /{path[:200]}")
        if not (directory / "index.html").is_file():
            return jsonify({"error": "the dashboard is not built: run `make run` or `npm run build` in frontend/"}), 404
        if path and _is_file(directory, path):
            response = send_from_directory(directory, path)
            if path.startswith("assets/"):  # content-hashed file names
                response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
            return response
        response = send_from_directory(directory, "index.html")  # client-side routes
        response.headers["Cache-Control"] = "no-cache"
        return response

    return serve


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
    app.register_blueprint(api)
    app.add_url_rule("/healthz", "healthz", healthz, methods=["GET"])
    if dashboard is not None:
        serve = limiter.exempt(_dashboard(dashboard))
        app.add_url_rule("/", "dashboard", serve, methods=["GET"])
        app.add_url_rule("/<path:path>", "dashboard_path", serve, methods=["GET"])

    @app.before_request
    def _auth() -> Response | None:
        if request.method == "OPTIONS":
            return None
        for name, value in request.args.items(multi=True):
            if "\x00" in value or "\x00" in name:  # no database stores NUL in text (PostgreSQL refuses it)
                raise ApiError(400, f"{name[:40]!r}: contains a NUL character")
        if request.path.startswith("/api/") and request.path != "/api/v1/openapi.json" and not _authorized():
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
