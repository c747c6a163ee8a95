"""Built-in ``memory`` collector: RAM and swap."""

from __future__ import annotations

from typing import Any

import psutil

from edgemon import hookimpl
from edgemon.registry import Metric, RegisterCollector


def collect() -> dict[str, Any]:
    """Return ``{"memory": {...}, "swap": {...}}`` in bytes and percent."""
    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    return {
        "memory": {
            "total": vm.total,
            "used": vm.used,
            "available": vm.available,
            "percent": vm.percent,
            "swap": {"total": sw.total, "used": sw.used, "free": sw.free, "percent": sw.percent},
        }
    }


METRICS = {
    "memory-percent": Metric("%", headline="Memory", description="RAM in use (not available)"),
    "memory-**-percent": Metric("%"),
    "memory-**-total": Metric("B"),
    "memory-**-used": Metric("B"),
    "memory-**-available": Metric("B", description="RAM that can be given to programs without swapping"),
    "memory-**-free": Metric("B"),
}


@hookimpl
def edgemon_register_collectors(register: RegisterCollector) -> None:
    """Register the memory collector."""
    register("memory", collect, metrics=METRICS)
