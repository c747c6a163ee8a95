"""The OpenAPI paths of the dashboard's fleet page: ``/api/v1/overview`` and ``/api/v1/sparklines``."""

from __future__ import annotations

from typing import Any

from edgemon_server.openapi import DEVICE_SUMMARY, TIME, _obj, _ok, _param

COUNTS = _obj(
    ["devices", "offline", "critical"],
    devices={"type": "integer"},
    offline={"type": "integer"},
    critical={"type": "integer", "description": "devices whose worst firing alert is critical"},
)

PATHS: dict[str, Any] = {
    "/api/v1/overview": {
        "get": {
            "summary": "One page of the fleet as the dashboard shows it: searched, sorted and paged on the server",
            "parameters": [
                _param(
                    "sort",
                    {"type": "string", "maxLength": 140},
                    "status, id, last_seen, alerts, or h:<headline label> (status)",
                ),
                _param("desc", {"enum": ["0", "1", "true", "false"]}, "descending (0)"),
                _param("page", {"type": "integer", "minimum": 1}, "1-based page (1)"),
                _param("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "devices per page (50)"),
                _param("q", {"type": "string", "maxLength": 200}, "part of the id, or name=value of a tag"),
            ],
            "responses": _ok(
                _obj(
                    ["total", "page", "pages", "limit", "sort", "desc", "labels", "summary", "devices"],
                    total={"type": "integer", "description": "devices matching q"},
                    page={"type": "integer"},
                    pages={"type": "integer"},
                    limit={"type": "integer"},
                    sort={"type": "string"},
                    desc={"type": "boolean"},
                    labels={"type": "array", "items": {"type": "string"}, "description": "the headline columns"},
                    summary=_obj(
                        ["devices", "online", "offline", "silent", "critical", "warning", "by_tag"],
                        devices={"type": "integer"},
                        online={"type": "integer"},
                        offline={"type": "integer"},
                        silent={"type": "integer", "description": "devices with a firing device_silent alert"},
                        critical={"type": "integer"},
                        warning={"type": "integer"},
                        by_tag={
                            "type": "object",
                            "description": "tag name -> value -> counts (the 20 values most in trouble)",
                            "additionalProperties": {"type": "object", "additionalProperties": COUNTS},
                        },
                    ),
                    devices={"type": "array", "items": DEVICE_SUMMARY},
                ),
                400,
            ),
        }
    },
    "/api/v1/sparklines": {
        "get": {
            "summary": "The recent averages of every headline key of a page of devices, in one request",
            "parameters": [
                _param(
                    "device",
                    {"type": "array", "items": {"type": "string"}, "maxItems": 100},
                    "device id (repeatable, up to 100)",
                    style="form",
                    explode=True,
                ),
                _param("minutes", {"type": "integer", "minimum": 1, "maximum": 1440}, "how far back (15)"),
                _param("points", {"type": "integer", "minimum": 2, "maximum": 200}, "averages per line (30)"),
            ],
            "responses": _ok(
                _obj(
                    ["from", "to", "points", "lines"],
                    **{"from": TIME, "to": TIME},
                    points={"type": "integer"},
                    lines={
                        "type": "object",
                        "description": "device -> key -> averages, oldest first (null: no sample in that step)",
                        "additionalProperties": {
                            "type": "object",
                            "additionalProperties": {"type": "array", "items": {"type": ["number", "null"]}},
                        },
                    },
                ),
                400,
            ),
        }
    },
}
