"""edgemon-disk-trend: warn when a filesystem will be full within ``horizon_hours`` at its current rate.

A rule plugin: it looks at the ``disk`` plugin's ``disk.usage.<device>.percent`` every cycle, keeps a
short history per device, fits a least-squares line through it and, when the line reaches 100 %
within the horizon, returns a condition for that device. The agent does the rest: one alert per
device, ``for`` (the rule registers ``for_s``), state kept across restarts, published to the server.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from edgemon import RegisterRule, SettingsSpec, hookimpl


def _validate(settings: Mapping[str, Any]) -> None:
    if not 0 < settings["horizon_hours"] <= 24 * 365:
        raise ValueError("horizon_hours must be between 0 and 8760")
    if not 3 <= settings["window"] <= 10_000:
        raise ValueError("window must be between 3 and 10000 samples")


@hookimpl
def edgemon_settings_spec() -> SettingsSpec:
    """``[plugins.disk_trend]``: ``horizon_hours`` (24), ``window`` samples (60), ``for`` seconds (300)."""
    return SettingsSpec({"horizon_hours": 24.0, "window": 60, "for": 300.0}, _validate)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y) points, in y per second (0 for fewer than two distinct times)."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (y - mean_y) for t, y in points) / var


class DiskTrend:
    """The rule: history per device, a verdict per cycle."""

    def __init__(self, horizon_hours: float, window: int, clock: Callable[[], float] = time.monotonic) -> None:
        """Keep ``window`` samples per device; warn when full within ``horizon_hours``."""
        self.horizon_s = horizon_hours * 3600
        self.window = window
        self.clock = clock
        self.history: dict[str, deque[tuple[float, float]]] = {}

    def __call__(self, metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The devices that fill within the horizon, as conditions."""
        now = self.clock()
        usage = metrics.get("disk", {}).get("usage", {})
        out = []
        for device, fields in usage.items():
            percent = fields.get("percent") if isinstance(fields, Mapping) else None
            if not isinstance(percent, (int, float)) or isinstance(percent, bool):
                continue
            points = self.history.setdefault(device, deque(maxlen=self.window))
            points.append((now, float(percent)))
            if len(points) < 3:
                continue
            rate = slope(list(points))
            if rate <= 0:
                continue
            seconds = (100.0 - percent) / rate
            if seconds <= self.horizon_s:
                out.append(
                    {
                        "key": f"disk-usage-{device}-percent",
                        "severity": "warning",
                        "message": f"{device} full in {seconds / 3600:.1f} h at the current rate ({percent:.1f} % now)",
                        "value": round(seconds / 3600, 2),
                    }
                )
        return out


@hookimpl
def edgemon_register_alert_rules(register: RegisterRule, settings: Mapping[str, Any]) -> None:
    """Register ``disk_trend``; its alerts fire after ``for`` seconds of a steady forecast."""
    register("disk_trend", DiskTrend(settings["horizon_hours"], settings["window"]), for_s=settings["for"])
