"""edgemon-example: the smallest useful third-party plugin.

It counts its own calls, takes one setting and declares one alert rule, so
the tests can see every hook work end to end through a real entry point.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from edgemon import hookimpl
from edgemon.registry import RegisterCollector, RegisterRule, SettingsSpec

_calls = itertools.count(1)


@hookimpl
def edgemon_settings_spec() -> SettingsSpec:
    """``[plugins.example]``: ``answer`` (int) and ``alert_above`` (calls)."""
    return SettingsSpec({"answer": 42, "alert_above": 1_000_000})


@hookimpl
def edgemon_register_collectors(register: RegisterCollector, settings: Mapping[str, Any]) -> None:
    """Register the ``example`` collector."""
    answer = settings["answer"]
    register("example", lambda: {"example": {"answer": answer, "calls": next(_calls), "label": "hello"}})


@hookimpl
def edgemon_register_alert_rules(register: RegisterRule, settings: Mapping[str, Any]) -> None:
    """Alert when the call counter passes ``alert_above``."""
    limit = settings["alert_above"]

    def too_many(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
        calls = metrics.get("example", {}).get("calls", 0)
        if calls > limit:
            return [
                {
                    "rule": "example.calls",
                    "severity": "warning",
                    "message": f"{calls} calls > {limit}",
                    "metric": "example-calls",
                    "value": calls,
                }
            ]
        return []

    register("example_calls", too_many)
