"""The OpenAPI 3.1 document of the HTTP API (served at ``/api/v1/openapi.json``)."""

from __future__ import annotations

from typing import Any

from edgemon_protocol.meta import KINDS, UNITS
from edgemon_server import __version__

TIME = {"type": ["string", "null"], "format": "date-time", "description": "UTC, ISO 8601 with Z"}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
UNIT = {
    "enum": [*UNITS, None],
    "description": "the unit the device declared (null: none declared; a client may guess from the key)",
}
HEADLINE = {
    "type": "object",
    "required": ["label", "key", "value", "unit"],
    "properties": {
        "label": {"type": "string", "description": "the column label the plugin declared (CPU, Disk, ...)"},
        "key": {"type": ["string", "null"], "description": "the metric key behind the value (the fullest disk)"},
        "value": {"type": ["number", "null"], "description": "the largest latest value of the matching keys"},
        "unit": UNIT,
    },
}
METRIC = {
    "type": "object",
    "required": ["key", "value", "ts", "unit", "kind", "description"],
    "properties": {
        "key": {"type": "string"},
        "value": {"type": ["number", "null"]},
        "ts": TIME,
        "unit": UNIT,
        "kind": {"enum": list(KINDS), "description": "gauge: a level; counter: only grows"},
        "description": {"type": ["string", "null"]},
    },
}
TAGS = {
    "type": "object",
    "additionalProperties": {"type": "string"},
    "description": "the device's tags ([agent] tags), as it last sent them",
}
DEVICE_SUMMARY = {
    "type": "object",
    "required": [
        "id",
        "first_seen",
        "last_seen",
        "last_ts",
        "interval",
        "online",
        "metrics",
        "alerts",
        "alert_severity",
        "headlines",
        "config_drift",
        "tags",
    ],
    "properties": {
        "id": {"type": "string"},
        "first_seen": TIME,
        "last_seen": TIME,
        "last_ts": TIME,
        "interval": {"type": "number"},
        "online": {"type": "boolean"},
        "metrics": {"type": "integer"},
        "alerts": {"type": "integer", "description": "firing alerts (the device's and the server's about it)"},
        "alert_severity": {"enum": ["critical", "warning", "info", None], "description": "the worst firing"},
        "headlines": {
            "type": "array",
            "items": HEADLINE,
            "description": "the overview's columns for this device, as its plugins declared them",
        },
        "config_drift": {"type": "boolean", "description": "its applied configuration is not the desired one"},
        "tags": TAGS,
    },
}
DEVICE_CONFIG = {
    "type": "object",
    "required": ["desired_version", "applied_version", "status", "error", "reported_at", "drift"],
    "properties": {
        "desired_version": {"type": ["integer", "null"], "description": "the version it should have (null: none)"},
        "applied_version": {"type": ["integer", "null"], "description": "the version it last reported applied"},
        "status": {
            "enum": ["applied", "rejected", "rolled_back", "expired", None],
            "description": "what it did with the version it last reported on",
        },
        "error": {"type": ["string", "null"], "description": "why, when it rejected or rolled back"},
        "reported_at": TIME,
        "drift": {"type": "boolean", "description": "applied_version is not desired_version"},
    },
}
ROLLOUT = {
    "type": "object",
    "required": [
        "id",
        "scope",
        "name",
        "match",
        "state",
        "reason",
        "canary",
        "document",
        "expires_at",
        "created",
        "updated",
    ],
    "properties": {
        "id": {"type": "integer"},
        "scope": {"enum": ["fleet", "group", "device", "override"]},
        "name": {"type": "string", "description": "the group or device (empty for the fleet)"},
        "match": {"type": "string", "description": "the device ids it reaches (a glob)"},
        "state": {"enum": ["canary", "complete", "aborted"]},
        "reason": {"type": "string"},
        "canary": {"type": "array", "items": {"type": "string"}, "description": "the devices that got it first"},
        "document": {"type": "object", "description": "the layer, in the agent's TOML vocabulary"},
        "expires_at": TIME,
        "created": TIME,
        "updated": TIME,
    },
}
DEVICE = {
    "type": "object",
    "required": [
        "id",
        "first_seen",
        "last_seen",
        "last_ts",
        "last_seq",
        "interval",
        "online",
        "attributes",
        "tags",
        "counters",
        "config",
    ],
    "properties": {
        "id": {"type": "string"},
        "first_seen": TIME,
        "last_seen": TIME,
        "last_ts": TIME,
        "last_seq": {"type": "integer"},
        "interval": {"type": "number"},
        "online": {"type": "boolean"},
        "attributes": {"type": "object", "additionalProperties": {"type": "string"}},
        "tags": TAGS,
        "counters": {
            "type": "object",
            "required": ["received", "duplicates", "missing", "rejected"],
            "properties": {k: {"type": "integer"} for k in ("received", "duplicates", "missing", "rejected")},
        },
        "config": DEVICE_CONFIG,
    },
}
POINT = {"type": "array", "items": {"type": ["number", "null"]}, "minItems": 2, "maxItems": 4}
SERIES = {
    "type": "object",
    "required": ["metric", "downsampled", "count", "points"],
    "properties": {
        "metric": {"type": "string"},
        "downsampled": {"type": "boolean"},
        "count": {"type": "integer"},
        "bucket_ms": {"type": "integer"},
        "points": {
            "type": "array",
            "items": POINT,
            "description": "[ts_ms, value] raw, or [bucket_start_ms, min, max, avg] when downsampled",
        },
    },
}
REJECT = {
    "type": "object",
    "required": ["id", "received", "device", "topic", "reason", "size", "payload"],
    "properties": {
        "id": {"type": "integer"},
        "received": TIME,
        "device": {"type": ["string", "null"]},
        "topic": {"type": "string"},
        "reason": {"type": "string"},
        "size": {"type": "integer"},
        "payload": {"type": "string", "description": "the first KiB, decoded as UTF-8 with replacement"},
    },
}


def _param(name: str, schema: dict[str, Any], description: str, where: str = "query", **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": where, "schema": schema, "description": description, **extra}


DEVICE_PARAM = _param("device", {"type": "string"}, "device id", "path", required=True)


def _ok(schema: dict[str, Any], *codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}}
    for code in (*codes, 401, 429):
        out[str(code)] = {"description": "error", "content": {"application/json": {"schema": ERROR}}}
    return out


def _with_csv(responses: dict[str, Any]) -> dict[str, Any]:
    """``responses`` whose 200 may also be CSV (``format=csv``)."""
    responses["200"]["content"]["text/csv"] = {"schema": {"type": "string"}}
    return responses


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _page_params(default: int) -> list[dict[str, Any]]:
    return [
        _param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, f"page size ({default})"),
        _param("cursor", {"type": "string"}, "next_cursor of the previous page"),
    ]


def _page(name: str, item: dict[str, Any]) -> dict[str, Any]:
    """A page of ``name`` with the cursor of the next one."""
    return _obj(
        [name, "next_cursor"], **{name: {"type": "array", "items": item}}, next_cursor={"type": ["string", "null"]}
    )


SEVERITY = {"enum": ["critical", "warning", "info"]}
ALERT = {
    "type": "object",
    "required": [
        "device_id",
        "fingerprint",
        "rule",
        "key",
        "severity",
        "state",
        "since",
        "changed",
        "value",
        "message",
        "source",
        "stale",
    ],
    "properties": {
        "device_id": {"type": "string"},
        "fingerprint": {"type": "string", "description": "identifies (rule, key) of a device"},
        "rule": {"type": "string"},
        "key": {"type": "string", "description": "the metric key (or the rule's own key) it is about"},
        "severity": SEVERITY,
        "state": {"enum": ["pending", "firing", "resolved"]},
        "since": {**TIME, "description": "when the condition first held (device time for device alerts)"},
        "changed": {**TIME, "description": "the last transition (firing, escalation, resolved)"},
        "value": {"type": ["number", "null"]},
        "message": {"type": "string"},
        "source": {"enum": ["device", "server"], "description": "the device's own rule, or the server's"},
        "stale": {"type": "boolean", "description": "the device is silent: its own alerts may be out of date"},
    },
}
ALERT_EVENT = {
    "type": "object",
    "required": ["id", "rule", "key", "severity", "state", "at", "value", "message"],
    "properties": {
        "id": {"type": "integer"},
        "rule": {"type": "string"},
        "key": {"type": "string"},
        "severity": SEVERITY,
        "state": {"enum": ["firing", "resolved"], "description": "an escalation is 'firing' with the new severity"},
        "at": {**TIME, "description": "when it happened (the device's clock for device alerts)"},
        "value": {"type": ["number", "null"]},
        "message": {"type": "string"},
    },
}

COMPONENTS = {
    "DeviceSummary": DEVICE_SUMMARY,
    "Headline": HEADLINE,
    "Device": DEVICE,
    "Metric": METRIC,
    "Series": SERIES,
    "Reject": REJECT,
    "Alert": ALERT,
    "AlertEvent": ALERT_EVENT,
    "DeviceConfig": DEVICE_CONFIG,
    "Rollout": ROLLOUT,
    "Error": ERROR,
}
"""Named schemas: the paths refer to them, and the dashboard's TypeScript types are generated from them."""

OPERATIONS = {
    "/api/v1/devices": "listDevices",
    "/api/v1/devices/{device}": "getDevice",
    "/api/v1/devices/{device}/metrics": "listMetrics",
    "/api/v1/devices/{device}/latest": "getLatest",
    "/api/v1/devices/{device}/series": "getSeries",
    "/api/v1/rejects": "listRejects",
    "/api/v1/alerts": "listAlerts",
    "/api/v1/devices/{device}/alerts": "getDeviceAlerts",
    "/api/v1/silences": "listSilences",
    "/api/v1/config/rollouts": "listRollouts",
    "/api/v1/query": "queryFleet",
    "/api/v1/overview": "getOverview",
    "/api/v1/sparklines": "getSparklines",
    "/api/v1/openapi.json": "getOpenapi",
    "/metrics": "getPrometheusMetrics",
    "/healthz": "getHealth",
}


def _refs(node: Any, keep: Any = None) -> Any:
    """``node`` with every named schema (but ``keep``) replaced by a ``$ref`` to it."""
    for name, schema in COMPONENTS.items():
        if node is schema and node is not keep:
            return {"$ref": f"#/components/schemas/{name}"}
    if isinstance(node, dict):
        return {k: _refs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_refs(v) for v in node]
    return node


def document() -> dict[str, Any]:
    """The whole document."""
    from edgemon_server.openapi_fleet import PATHS  # noqa: PLC0415 - it builds on this module's schemas

    doc = _paths()
    doc["paths"].update(PATHS)
    for path, operation in OPERATIONS.items():
        doc["paths"][path]["get"]["operationId"] = operation
    out: dict[str, Any] = _refs(doc)
    out["components"]["schemas"] = {name: _refs(schema, keep=schema) for name, schema in COMPONENTS.items()}
    return out


def _paths() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgemon API", "version": __version__, "description": "Read-only fleet monitoring data."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{}, {"bearer": []}],
        "paths": {
            "/api/v1/devices": {
                "get": {
                    "summary": "The fleet",
                    "parameters": [
                        _param("prefix", {"type": "string", "maxLength": 128}, "device id prefix"),
                        _param(
                            "tag",
                            {"type": "array", "items": {"type": "string"}, "maxItems": 10},
                            "name=value (a glob value; repeatable: all must hold)",
                            style="form",
                            explode=True,
                        ),
                        _param(
                            "sort",
                            {
                                "type": "string",
                                "enum": ["id", "-id", "last_seen", "-last_seen", "first_seen", "-first_seen"],
                            },
                            "order ('-' descending)",
                        ),
                        *_page_params(100),
                    ],
                    "responses": _ok(_page("devices", DEVICE_SUMMARY), 400),
                }
            },
            "/api/v1/devices/{device}": {
                "get": {"summary": "One device", "parameters": [DEVICE_PARAM], "responses": _ok(DEVICE, 400, 404)}
            },
            "/api/v1/devices/{device}/metrics": {
                "get": {
                    "summary": "Metric keys with their latest value, unit, kind and description",
                    "parameters": [DEVICE_PARAM, _param("prefix", {"type": "string"}, "key prefix, e.g. cpu-")],
                    "responses": _ok(
                        _obj(
                            ["device", "metrics"],
                            device={"type": "string"},
                            metrics={"type": "array", "items": METRIC},
                        ),
                        400,
                        404,
                    ),
                }
            },
            "/api/v1/devices/{device}/latest": {
                "get": {
                    "summary": "Latest snapshot, flat or nested",
                    "parameters": [
                        DEVICE_PARAM,
                        _param("nested", {"type": "string", "enum": ["0", "1"]}, "re-nest keys"),
                    ],
                    "responses": {
                        **_ok(
                            _obj(
                                ["device", "ts", "attributes", "metrics"],
                                device={"type": "string"},
                                ts=TIME,
                                attributes={"type": "object"},
                                metrics={"type": "object"},
                            ),
                            400,
                            404,
                        ),
                        "304": {"description": "not modified (If-None-Match)"},
                    },
                }
            },
            "/api/v1/devices/{device}/series": {
                "get": {
                    "summary": "Time series, downsampled to at most `points` buckets (min/max/avg)",
                    "parameters": [
                        DEVICE_PARAM,
                        _param(
                            "metric",
                            {"type": "array", "items": {"type": "string"}, "maxItems": 10},
                            "metric key (repeatable)",
                            required=True,
                            style="form",
                            explode=True,
                        ),
                        _param("from", {"type": "string"}, "ISO 8601, epoch seconds, now, -15m/-1h/-7d (to - 1 h)"),
                        _param("to", {"type": "string"}, "same forms (now)"),
                        _param("points", {"type": "integer", "minimum": 2, "maximum": 5000}, "most points (500)"),
                        _param("fn", {"enum": ["rate"]}, "rate: a counter's per-second rate (reset-aware)"),
                        _param("format", {"enum": ["json", "csv"]}, "csv: metric,ts,value,min,max,avg"),
                    ],
                    "responses": _with_csv(
                        _ok(
                            _obj(
                                ["device", "from", "to", "series"],
                                device={"type": "string"},
                                **{"from": TIME},
                                to=TIME,
                                fn={"enum": ["rate"]},
                                series={"type": "array", "items": SERIES},
                            ),
                            400,
                            404,
                        )
                    ),
                }
            },
            "/api/v1/alerts": {
                "get": {
                    "summary": "Alerts now, most severe first",
                    "parameters": [
                        _param(
                            "state",
                            {"enum": ["active", "firing", "pending", "resolved", "all"]},
                            "active (default: pending and firing), firing, pending, resolved, all",
                        ),
                        _param("severity", SEVERITY, "only this severity"),
                        _param("device", {"type": "string", "maxLength": 128}, "only this device"),
                        _param("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "most alerts (1000)"),
                    ],
                    "responses": _ok(
                        _obj(
                            ["alerts", "truncated"],
                            alerts={"type": "array", "items": ALERT},
                            truncated={"type": "boolean"},
                        ),
                        400,
                    ),
                }
            },
            "/api/v1/devices/{device}/alerts": {
                "get": {
                    "summary": "A device's alerts now and their history, newest first",
                    "parameters": [DEVICE_PARAM, *_page_params(100)],
                    "responses": _ok(
                        _obj(
                            ["device", "current", "history", "next_cursor"],
                            device={"type": "string"},
                            current={"type": "array", "items": ALERT},
                            history={"type": "array", "items": ALERT_EVENT},
                            next_cursor={"type": ["string", "null"]},
                        ),
                        400,
                        404,
                    ),
                }
            },
            "/api/v1/silences": {
                "get": {
                    "summary": "Silences in force (alerts they match are not notified until their end)",
                    "responses": _ok(
                        _obj(
                            ["silences"],
                            silences={
                                "type": "array",
                                "items": _obj(
                                    ["id", "matchers", "starts", "ends", "comment"],
                                    id={"type": "integer"},
                                    matchers={"type": "object", "additionalProperties": {"type": "string"}},
                                    starts=TIME,
                                    ends=TIME,
                                    comment={"type": "string"},
                                ),
                            },
                        )
                    ),
                }
            },
            "/api/v1/query": {
                "get": {
                    "summary": "One metric across the fleet: a value per device, worst first",
                    "parameters": [
                        _param(
                            "metric",
                            {"type": "string", "maxLength": 256},
                            "a key or pattern: * one level, ** any (disk-usage-*-percent)",
                            required=True,
                        ),
                        _param("agg", {"enum": ["max", "min", "avg", "sum"]}, "over a device's matching keys (max)"),
                        _param("order", {"enum": ["desc", "asc"]}, "desc: highest first (desc)"),
                        _param("top", {"type": "integer", "minimum": 1, "maximum": 10000}, "how many devices (100)"),
                        _param("device", {"type": "string", "maxLength": 128}, "only devices matching this glob"),
                        _param(
                            "tag",
                            {"type": "array", "items": {"type": "string"}, "maxItems": 10},
                            "only devices with this tag: name=value (a glob value; repeatable)",
                            style="form",
                            explode=True,
                        ),
                        _param("from", {"type": "string"}, "aggregate every sample since (default: latest values)"),
                        _param("to", {"type": "string"}, "until (now)"),
                    ],
                    "responses": _ok(
                        _obj(
                            ["metric", "agg", "window", "devices", "results"],
                            metric={"type": "string"},
                            agg={"enum": ["max", "min", "avg", "sum"]},
                            window={
                                "type": ["object", "null"],
                                "properties": {"from": TIME, "to": TIME},
                                "description": "null: latest values",
                            },
                            devices={"type": "integer", "description": "devices with a value (before top)"},
                            results={
                                "type": "array",
                                "items": _obj(
                                    ["device", "value", "key", "keys"],
                                    device={"type": "string"},
                                    value={"type": "number"},
                                    key={"type": ["string", "null"], "description": "the key of a max or min"},
                                    keys={"type": "integer", "description": "matching keys of the device"},
                                ),
                            },
                        ),
                        400,
                    ),
                }
            },
            "/api/v1/config/rollouts": {
                "get": {
                    "summary": "Remote configuration rollouts, newest first",
                    "parameters": [_param("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "how many (50)")],
                    "responses": _ok(_obj(["rollouts"], rollouts={"type": "array", "items": ROLLOUT}), 400),
                }
            },
            "/api/v1/rejects": {
                "get": {
                    "summary": "Dead-letter entries, newest first",
                    "parameters": [
                        _param("device", {"type": "string", "maxLength": 128}, "only this device"),
                        *_page_params(50),
                    ],
                    "responses": _ok(_page("rejects", REJECT), 400),
                }
            },
            "/api/v1/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OK"}}, "security": [{}]}
            },
            "/metrics": {
                "get": {
                    "summary": "Every device's latest values in the Prometheus text format (0.0.4)",
                    "parameters": [
                        _param(
                            "device", {"type": "string", "maxLength": 128}, "only devices whose id matches this glob"
                        ),
                        _param("after", {"type": "string", "maxLength": 128}, "devices after this id (the next page)"),
                        _param("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "devices (1000)"),
                    ],
                    "responses": {
                        "200": {
                            "description": "the exposition",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **{
                            str(code): {"description": "error", "content": {"application/json": {"schema": ERROR}}}
                            for code in (400, 401, 429)
                        },
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Health",
                    "security": [{}],
                    "responses": {
                        code: {
                            "description": "health",
                            "content": {
                                "application/json": {
                                    "schema": _obj(
                                        ["status", "database", "collector", "collectors"],
                                        status={"type": "string", "enum": ["ok", "error"]},
                                        database={"type": "object"},
                                        collector={"type": ["object", "null"]},
                                        collectors={
                                            "type": "array",
                                            "items": _obj(
                                                ["id", "host", "pid", "started", "updated", "age_s", "state", "stats"],
                                                id={"type": "string"},
                                                host={"type": "string"},
                                                pid={"type": "integer"},
                                                started=TIME,
                                                updated=TIME,
                                                age_s={"type": "number"},
                                                state={"type": ["string", "null"]},
                                                stats={"type": "object"},
                                            ),
                                        },
                                    )
                                }
                            },
                        }
                        for code in ("200", "503")
                    },
                }
            },
        },
    }
