"""edgemon-cpu: CPU usage, times, load, frequency, core counts and temperatures.

Percentages are non-blocking deltas of the CPU times since the previous
call, computed here from one ``psutil.cpu_times(percpu=True)`` read (one read
of ``/proc/stat`` a cycle; the total is the sum of the cores). Not
``psutil.cpu_percent(interval=None)``: psutil keeps that state per thread, and
the agent primes in one thread and collects in another, so the first sample
was always 0.0. Here the state belongs to the collector, whatever thread runs it.

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

from edgemon import Metric, RegisterCollector, SettingsSpec, hookimpl, safe_key

DEFAULTS: dict[str, Any] = {
    "percpu": True,
    "temperatures": True,
    "frequency": True,
    "freq_every": 60.0,
    "processes": False,
}

MIN_WINDOW = 0.2
"""Seconds the first sample waits after priming, so that it measures something."""

METRICS = {
    "cpu-percent": Metric("%", headline="CPU", description="busy time of all CPUs since the last cycle"),
    "cpu-times-*": Metric("%", description="share of CPU time by state since the last cycle"),
    "cpu-core-*-percent": Metric("%", description="busy time of one CPU since the last cycle"),
    "cpu-count-*": Metric("count"),
    "cpu-load-*": Metric(description="run-queue length averaged over 1, 5 or 15 minutes"),
    "cpu-freq-*": Metric("MHz"),
    "cpu-temp-**": Metric("°C"),
}


def _validate(settings: Mapping[str, Any]) -> None:
    if settings["freq_every"] < 0:
        raise ValueError("freq_every must be >= 0 seconds")


def _busy_total(times: Any) -> tuple[float, float]:
    """(busy, total) seconds of one CPU's times, as psutil counts them.

    On Linux ``guest`` and ``guest_nice`` are already inside ``user``/``nice``;
    ``idle`` and ``iowait`` are not busy.
    """
    fields = times._asdict()
    total = sum(fields.values()) - fields.get("guest", 0.0) - fields.get("guest_nice", 0.0)
    return total - fields["idle"] - fields.get("iowait", 0.0), total


def _percent(before: Any, after: Any) -> float:
    busy0, total0 = _busy_total(before)
    busy1, total1 = _busy_total(after)
    span = total1 - total0
    if span <= 0:
        return 0.0
    return round(min(100.0, max(0.0, (busy1 - busy0) / span * 100)), 1)


def _sum_times(per_cpu: list[Any]) -> Any:
    kind = type(per_cpu[0])
    return kind(*(sum(values) for values in zip(*per_cpu)))


class CpuCollector:
    """Holds the per-instance caches and the previous CPU times; one is created per agent start."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        """Read the static facts once and take the first CPU times."""
        self.settings = dict(settings)
        self.logical = psutil.cpu_count(logical=True) or 0
        self.physical = psutil.cpu_count(logical=False) or 0
        self._freq: dict[str, float] | None = None
        self._freq_at = -1e18
        self._prev = psutil.cpu_times(percpu=True)
        self._prev_at = time.monotonic()
        self._first = True

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

    def usage(self) -> dict[str, Any]:
        """Percent (total and per core) and times percent since the previous call."""
        if self._first:
            # The first call (``edgemon-agent once``) gets a short window instead of a meaningless 0.
            time.sleep(max(0.0, MIN_WINDOW - (time.monotonic() - self._prev_at)))
            self._first = False
        now = psutil.cpu_times(percpu=True)
        prev, self._prev, self._prev_at = self._prev, now, time.monotonic()
        if not now or len(now) != len(prev):  # a core went on- or offline: start again from here
            return {}
        total_before, total_after = _sum_times(prev), _sum_times(now)
        span = _busy_total(total_after)[1] - _busy_total(total_before)[1]
        before, after = total_before._asdict(), total_after._asdict()
        out: dict[str, Any] = {
            "percent": _percent(total_before, total_after),
            "times": {
                k: round(min(100.0, max(0.0, (after[k] - before[k]) / span * 100)), 1) if span > 0 else 0.0
                for k in after
            },
        }
        if self.settings["percpu"]:
            out["core"] = {str(i): {"percent": _percent(a, b)} for i, (a, b) in enumerate(zip(prev, now))}
        return out

    def __call__(self) -> dict[str, Any]:
        """Return ``{"cpu": {...}}``."""
        out: dict[str, Any] = {**self.usage(), "count": {"logical": self.logical, "physical": self.physical}}
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
    register("cpu", CpuCollector(settings), metrics=METRICS)
