"""Query parameters of the HTTP API: parsed and checked, every bad value a 400 with a message, never a 500."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
from typing import Any

from flask import request

from edgemon_protocol.ids import DEVICE_ID_RE
from edgemon_server.validate import from_ms, to_ms

DEVICE_RE = DEVICE_ID_RE
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


def encode_cursor(value: Any) -> str:
    """Opaque pagination cursor."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> Any:
    """Inverse of :func:`encode_cursor`; 400 on anything else."""
    try:
        return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "cursor: not a cursor returned by this API") from None
