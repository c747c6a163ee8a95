"""The payload envelope, its JSON Schema, and the limits both ends hold it to.

One payload per collection cycle, published to ``devices/<device_id>/monitoring``::

    {"schema": 1, "device_id": "press-17", "ts": "2026-11-30T01:00:00.000Z", "seq": 42,
     "interval": 10, "metrics": {"cpu": {"percent": 3.5}}, "alerts": []}

The JSON Schema (``edgemon_protocol/schema/payload.schema.json``) is the reference; the server's
validator is checked against it by a property test.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import cache
from importlib.resources import files
from typing import Any

SCHEMA_VERSION = 1
MAX_BYTES = 128 * 1024
"""Largest payload an agent builds: AWS IoT Core's message size limit (the server accepts up to 256 KB)."""
MAX_SEQ = 2**53 - 1
"""Largest ``seq``: the largest integer a JSON number holds exactly in every parser (IEEE double)."""
MAX_INTERVAL = 86400.0
MAX_DEPTH = 8
"""Deepest nesting of ``metrics`` an agent sends."""
MAX_LEAVES = 4096
"""Most leaves in one payload an agent sends."""
MAX_STRING = 256
"""Longest string leaf."""
SEVERITIES = ("info", "warning", "critical")


def utc_timestamp(epoch: float) -> str:
    """Format seconds since the epoch as RFC 3339 UTC with milliseconds and ``Z``."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def build(
    device_id: str,
    seq: int,
    epoch: float,
    interval: float,
    metrics: Mapping[str, Any],
    alerts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Return the payload envelope."""
    return {
        "schema": SCHEMA_VERSION,
        "device_id": device_id,
        "ts": utc_timestamp(epoch),
        "seq": seq,
        "interval": interval,
        "metrics": dict(metrics),
        "alerts": list(alerts or []),
    }


def dumps(payload: Mapping[str, Any]) -> str:
    """Serialise compactly; NaN and infinities are refused (``ValueError``), as JSON has none."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


@cache
def load_schema() -> dict[str, Any]:
    """Return the payload JSON Schema."""
    text = files("edgemon_protocol").joinpath("schema/payload.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validation_errors(payload: Any) -> list[str]:
    """Validate against the schema; return readable errors (empty when valid).

    Needs ``jsonschema`` (the ``validate`` extra); imported here only, so an agent's collection
    loop never pays for it.
    """
    import jsonschema  # noqa: PLC0415 - optional dependency, kept off the hot path

    validator = jsonschema.Draft202012Validator(load_schema())
    return [
        f"{'/'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(payload), key=lambda e: list(map(str, e.absolute_path)))
    ]
