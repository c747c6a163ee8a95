"""edgemon-cpu: CPU usage, times, load, frequency, core counts and temperatures.

Percentages are non-blocking: psutil measures them from the delta since the
previous call, which ``edgemon_startup`` primes, so each cycle reports usage
over the last interval without sleeping.

Costly calls are opt-in or cached (see ``docs/benchmarks.md`` for the
figures): ``cpu_freq`` reads one sysfs file per core on Linux and is refreshed
every ``freq_every`` seconds; the process table walk (``processes = true``)
is off by default.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import psutil

from edgemon import hookimpl
from edgemon.registry import RegisterCollector, SettingsSpec, safe_key

DEFAULTS: dict[str, Any] = {
    "percpu": True,
    "temperatures": True,
    "frequency": True,
    "freq_every": 60.0,
    "processes": False,
}

MIN_WINDOW = 0.2
"""Seconds the first sample waits after priming, so that it measures something."""

UNITS = {"percent": "%", "load1": "", "current_mhz": "MHz", "max_mhz": "MHz", "min_mhz": "MHz", "temp": "°C"}


def _validate(settings: Mapping[str, Any]) -> None:
    if settings["freq_every"] < 0:
        raise ValueError("freq_every must be >= 0 seconds")


class CpuCollector:
    """Holds the per-instance caches; one is created per agent start."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        """Read the static facts once and prime the percent counters."""
        self.settings = dict(settings)
        self.logical = psutil.cpu_count(logical=True) or 0
        self.physical = psutil.cpu_count(logical=False) or 0
        self._freq: dict[str, float] | None = None
        self._freq_at = -1e18
        psutil.cpu_percent(interval=None, percpu=True)
        psutil.cpu_percent(interval=None)
        psutil.cpu_times_percent(interval=None)
        self._primed_at: float | None = time.monotonic()

    def frequency(self) -> dict[str, float] | None:
        """Return the cached frequency, refreshed every ``freq_every`` seconds."""
        now = time.monotonic()
        if now - self._freq_at >= self.settings["freq_every"]:
            self._freq_at = now
            try:
                freq = psutil.cpu_freq()
            except (OSError, NotImplementedError):
                freq = None
            self._freq = (
                None
                if freq is None
                else {"current_mhz": round(freq.current, 1), "min_mhz": freq.min, "max_mhz": freq.max}
            )
        return self._freq

    def __call__(self) -> dict[str, Any]:
        """Return ``{"cpu": {...}}``."""
        if self._primed_at is not None:
            # Percentages are deltas since priming: give the very first call
            # (``edgemon-agent once``) a short window instead of a meaningless 0.
            time.sleep(max(0.0, MIN_WINDOW - (time.monotonic() - self._primed_at)))
            self._primed_at = None
        out: dict[str, Any] = {
            "percent": psutil.cpu_percent(interval=None),
            "count": {"logical": self.logical, "physical": self.physical},
        }
        times = psutil.cpu_times_percent(interval=None)
        out["times"] = {k: v for k, v in times._asdict().items()}
        if self.settings["percpu"]:
            per = psutil.cpu_percent(interval=None, percpu=True)
            out["core"] = {str(i): {"percent": p} for i, p in enumerate(per)}
        try:
            load1, load5, load15 = os.getloadavg()
            out["load"] = {"load1": load1, "load5": load5, "load15": load15}
        except OSError:  # pragma: no cover - not on Linux
            pass
        if self.settings["frequency"] and (freq := self.frequency()) is not None:
            out["freq"] = freq
        if self.settings["temperatures"] and (temps := temperatures()):
            out["temp"] = temps
        if self.settings["processes"]:
            out["procs"] = processes()
        return {"cpu": out}


def temperatures() -> dict[str, Any]:
    """Return ``{chip: {label: celsius}}``; empty when the host has no sensors."""
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return {}
    try:
        chips = reader()
    except (OSError, RuntimeError):
        return {}
    out: dict[str, Any] = {}
    for chip, entries in chips.items():
        values: dict[str, float] = {}
        for i, entry in enumerate(entries):
            label = safe_key(entry.label) if entry.label else str(i)
            if label in values:
                label = f"{label}_{i}"
            values[label] = entry.current
        if values:
            out[safe_key(chip)] = values
    return out


def processes() -> dict[str, int]:
    """Count processes by state: walks the whole process table (costly; opt-in)."""
    counts: dict[str, int] = {"total": 0}
    for proc in psutil.process_iter(["status"]):
        status = safe_key(str(proc.info.get("status") or "unknown"))
        counts[status] = counts.get(status, 0) + 1
        counts["total"] += 1
    return counts


@hookimpl
def edgemon_settings_spec() -> SettingsSpec:
    """``[plugins.cpu]``: percpu, temperatures, frequency, freq_every, processes."""
    return SettingsSpec(DEFAULTS, _validate)


@hookimpl
def edgemon_register_collectors(register: RegisterCollector, settings: Mapping[str, Any]) -> None:
    """Register the ``cpu`` collector."""
    register("cpu", CpuCollector(settings), units=UNITS)
