"""edgemon-example: the smallest useful third-party plugin.

It counts its own calls, takes settings, says what its values mean (units, a headline column for
the fleet overview) and declares one alert rule: every hook a plugin has, end to end through a
real entry point. Copy it to start a plugin of your own.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from edgemon import Metric, RegisterCollector, RegisterRule, SettingsSpec, hookimpl

_calls = itertools.count(1)


@hookimpl
def edgemon_settings_spec() -> SettingsSpec:
    """``[plugins.example]``: ``answer`` (int) and ``alert_above`` (calls)."""
    return SettingsSpec({"answer": 42, "alert_above": 1_000_000})


@hookimpl
def edgemon_register_collectors(register: RegisterCollector, settings: Mapping[str, Any]) -> None:
    """Register the ``example`` collector."""
    answer = settings["answer"]
    register(
        "example",
        lambda: {"example": {"answer": answer, "calls": next(_calls), "label": "hello"}},
        metrics={
            "example-answer": Metric("count", headline="Answer", description="the configured answer"),
            "example-calls": Metric("count", "counter", "times the collector ran since the agent started"),
        },
    )


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
