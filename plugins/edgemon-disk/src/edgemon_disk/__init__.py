"""edgemon-disk: usage per mounted partition and IO rates per disk.

``disk_partitions`` is the slowest psutil call of a cycle (about 80-140 us here), and
the mount table rarely changes, so the list of partitions is cached for
``partitions_every`` seconds. Rates are computed from the counters of the
previous run over the monotonic time between the two runs; the first run
reports counters only.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Mapping
from typing import Any

import psutil

from edgemon import Metric, RegisterCollector, SettingsSpec, hookimpl, safe_key

DEFAULTS: dict[str, Any] = {
    "all_partitions": False,
    "include_mounts": [],
    "exclude_mounts": [],
    "exclude_fstypes": ["squashfs", "tmpfs", "devtmpfs", "overlay"],
    "include_disks": [],
    "exclude_disks": ["loop*", "ram*"],
    "partitions_every": 60.0,
}
COUNTERS = ("read_count", "write_count", "read_bytes", "write_bytes", "read_time", "write_time", "busy_time")
METRICS = {
    "disk-usage-*-percent": Metric("%", headline="Disk", description="space used of a filesystem (the fullest heads)"),
    "disk-usage-*-total": Metric("B"),
    "disk-usage-*-used": Metric("B"),
    "disk-usage-*-free": Metric("B", description="space an unprivileged user can still write"),
    "disk-io-*-read_bytes": Metric("B", "counter", "bytes read since boot"),
    "disk-io-*-write_bytes": Metric("B", "counter", "bytes written since boot"),
    "disk-io-*-read_count": Metric("count", "counter"),
    "disk-io-*-write_count": Metric("count", "counter"),
    "disk-io-*-read_time": Metric("ms", "counter", "time spent reading since boot"),
    "disk-io-*-write_time": Metric("ms", "counter", "time spent writing since boot"),
    "disk-io-*-busy_time": Metric("ms", "counter", "time the device was busy since boot"),
}


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _validate(settings: Mapping[str, Any]) -> None:
    if settings["partitions_every"] < 0:
        raise ValueError("partitions_every must be >= 0 seconds")


class DiskCollector:
    """Keeps the partition cache and the previous IO counters."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        """Remember the settings; nothing is read until the first call."""
        self.s = dict(settings)
        self._parts: list[Any] = []
        self._parts_at = -1e18
        self._prev: tuple[float, dict[str, Any]] | None = None

    def partitions(self) -> list[Any]:
        """Return the selected partitions, from cache when fresh."""
        now = time.monotonic()
        if now - self._parts_at >= self.s["partitions_every"]:
            self._parts_at = now
            parts = psutil.disk_partitions(all=self.s["all_partitions"])
            self._parts = [
                p
                for p in parts
                if p.fstype not in self.s["exclude_fstypes"]
                and (not self.s["include_mounts"] or _matches(p.mountpoint, self.s["include_mounts"]))
                and not _matches(p.mountpoint, self.s["exclude_mounts"])
            ]
        return self._parts

    def usage(self) -> dict[str, Any]:
        """Usage per partition keyed by device name (``sda1``), with its mount point."""
        out: dict[str, Any] = {}
        for part in self.partitions():
            try:
                u = psutil.disk_usage(part.mountpoint)
            except OSError:  # unmounted since the cache was filled, or no permission
                continue
            key = safe_key(part.device.removeprefix("/dev/") or part.mountpoint)
            if key in out:  # the same device mounted twice (bind mounts): first wins
                continue
            out[key] = {
                "mount": part.mountpoint[:256],
                "fstype": part.fstype,
                "total": u.total,
                "used": u.used,
                "free": u.free,
                "percent": u.percent,
            }
        return out

    def io(self) -> dict[str, Any]:
        """IO counters per disk, and per-second rates since the previous call."""
        now = time.monotonic()
        raw = psutil.disk_io_counters(perdisk=True, nowrap=True) or {}
        current = {
            name: c._asdict()
            for name, c in raw.items()
            if (not self.s["include_disks"] or _matches(name, self.s["include_disks"]))
            and not _matches(name, self.s["exclude_disks"])
        }
        out: dict[str, Any] = {}
        prev = self._prev
        for name, counters in current.items():
            entry = {k: counters[k] for k in COUNTERS if k in counters}
            if prev is not None and name in prev[1] and now > prev[0]:
                dt = now - prev[0]
                before = prev[1][name]
                for k in ("read_bytes", "write_bytes", "read_count", "write_count"):
                    if k in counters and k in before:
                        entry[f"{k}_per_s"] = round(max(0, counters[k] - before[k]) / dt, 3)
                if "busy_time" in counters and "busy_time" in before:
                    busy_ms = counters["busy_time"] - before["busy_time"]
                    entry["busy_percent"] = round(min(100.0, busy_ms / dt / 10), 2)
            out[safe_key(name)] = entry
        self._prev = (now, current)
        return out

    def __call__(self) -> dict[str, Any]:
        """Return ``{"disk": {"usage": {...}, "io": {...}}}``."""
        return {"disk": {"usage": self.usage(), "io": self.io()}}


@hookimpl
def edgemon_settings_spec() -> SettingsSpec:
    """``[plugins.disk]``: partition and disk selection, cache period."""
    return SettingsSpec(DEFAULTS, _validate)


@hookimpl
def edgemon_register_collectors(register: RegisterCollector, settings: Mapping[str, Any]) -> None:
    """Register the ``disk`` collector."""
    register("disk", DiskCollector(settings), metrics=METRICS)
