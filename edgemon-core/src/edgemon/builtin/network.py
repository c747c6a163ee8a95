"""Built-in ``net`` collector: traffic counters and per-second rates of each network interface."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psutil

from edgemon import hookimpl
from edgemon.registry import Metric, RegisterCollector, safe_key

COUNTERS = {
    "bytes_recv": "rx_bytes",
    "bytes_sent": "tx_bytes",
    "packets_recv": "rx_packets",
    "packets_sent": "tx_packets",
    "errin": "rx_errors",
    "errout": "tx_errors",
    "dropin": "rx_dropped",
    "dropout": "tx_dropped",
}
"""psutil's counter -> the key under ``net.<interface>``."""
RATES = ("rx_bytes", "tx_bytes")
"""Counters that also get a per-second rate since the previous cycle (``rx_bytes_per_s``)."""
SKIP = ("lo",)
"""The loopback interface carries the host's own traffic to itself, not the device's network."""


class NetCollector:
    """Counters per interface; rates need the previous call, so the first cycle has none."""

    def __init__(
        self,
        read: Callable[..., dict[str, Any]] = psutil.net_io_counters,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """No previous reading yet; ``read`` and ``clock`` are psutil's counters and the monotonic clock."""
        self._read = read
        self._clock = clock
        self._prev: tuple[float, dict[str, dict[str, int]]] | None = None

    def __call__(self) -> dict[str, Any]:
        """Return ``{"net": {"<interface>": {"rx_bytes": ..., "rx_bytes_per_s": ..., ...}}}``."""
        now = self._clock()
        raw = self._read(pernic=True, nowrap=True) or {}
        current = {
            name: {key: int(getattr(c, field)) for field, key in COUNTERS.items()}
            for name, c in raw.items()
            if name not in SKIP
        }
        out: dict[str, Any] = {}
        prev = self._prev
        for name, counters in current.items():
            entry: dict[str, Any] = dict(counters)
            if prev is not None and name in prev[1] and now > prev[0]:
                for key in RATES:
                    entry[f"{key}_per_s"] = round(max(0, counters[key] - prev[1][name][key]) / (now - prev[0]), 1)
            out[safe_key(name)] = entry
        self._prev = (now, current)
        return {"net": out}


METRICS = {
    "net-*-rx_bytes_per_s": Metric("B/s", description="bytes received per second"),
    "net-*-tx_bytes_per_s": Metric("B/s", description="bytes sent per second"),
    "net-*-rx_bytes": Metric("B", "counter", "bytes received since boot"),
    "net-*-tx_bytes": Metric("B", "counter", "bytes sent since boot"),
    "net-*-rx_packets": Metric("count", "counter"),
    "net-*-tx_packets": Metric("count", "counter"),
    "net-*-rx_errors": Metric("count", "counter", "receive errors since boot"),
    "net-*-tx_errors": Metric("count", "counter", "transmit errors since boot"),
    "net-*-rx_dropped": Metric("count", "counter", "incoming packets dropped since boot"),
    "net-*-tx_dropped": Metric("count", "counter", "outgoing packets dropped since boot"),
}


@hookimpl
def edgemon_register_collectors(register: RegisterCollector) -> None:
    """Register the network collector."""
    register("net", NetCollector(), metrics=METRICS)
