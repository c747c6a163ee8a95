"""Logging set-up: readable text, or JSON lines an operator can grep across a fleet.

Structured fields travel in ``extra=``: ``device``, ``plugin``, ``collector``,
``reason``. In JSON mode each becomes a top-level key::

    {"ts": "2026-11-29T01:51:09.123Z", "level": "error", "logger": "edgemon.collect",
     "msg": "collector failed", "device": "press-17", "plugin": "cpu", "reason": "..."}
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from edgemon_protocol.payload import utc_timestamp

FIELDS = ("device", "plugin", "collector", "rule", "reason", "topic", "seq", "path")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the structured fields as keys."""

    def __init__(self, device: str | None = None) -> None:
        """``device`` is added to every record that does not carry its own."""
        super().__init__()
        self.device = device

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        out: dict[str, Any] = {
            "ts": utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.device:
            out["device"] = self.device
        for key in FIELDS:
            if key in record.__dict__:
                out[key] = record.__dict__[key]
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """``LEVEL logger: message key=value ...`` for humans."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` with its structured fields appended."""
        extras = " ".join(f"{k}={record.__dict__[k]!s}" for k in FIELDS if k in record.__dict__)
        line = f"{record.levelname} {record.name}: {record.getMessage()}" + (f" {extras}" if extras else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(
    level: str = "info", fmt: str = "text", device: str | None = None, loggers: tuple[str, ...] = ("edgemon",)
) -> None:
    """Send the ``loggers``' records to stderr in the chosen format (stdout is for payloads)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(device) if fmt == "json" else TextFormatter())
    for name in loggers:
        root = logging.getLogger(name)
        root.handlers[:] = [handler]
        root.setLevel(level.upper())
        root.propagate = False
