"""Structured logs: JSON lines with device, plugin and reason as fields."""

from __future__ import annotations

import json
import logging

from edgemon_protocol import logs


def test_json_lines_carry_structured_fields(capsys):
    logs.setup("info", "json", device="press-17")
    logging.getLogger("edgemon.test").error("collector failed", extra={"plugin": "cpu", "reason": "boom"})
    logging.getLogger("edgemon.test").debug("hidden")
    line = capsys.readouterr().err.strip()
    record = json.loads(line)
    assert record["device"] == "press-17"
    assert record["plugin"] == "cpu"
    assert record["reason"] == "boom"
    assert record["level"] == "error"
    assert record["msg"] == "collector failed"
    assert record["ts"].endswith("Z")


def test_text_format_appends_fields(capsys):
    logs.setup("debug", "text")
    logging.getLogger("edgemon.test").warning("plugin unavailable", extra={"plugin": "gpu-nvml", "reason": "no"})
    assert capsys.readouterr().err.strip() == "WARNING edgemon.test: plugin unavailable plugin=gpu-nvml reason=no"
