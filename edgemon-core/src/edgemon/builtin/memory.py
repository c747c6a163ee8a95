"""Built-in ``memory`` collector: RAM and swap."""

from __future__ import annotations

from typing import Any

import psutil

from edgemon import hookimpl
from edgemon.registry import RegisterCollector


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


UNITS = {"total": "bytes", "used": "bytes", "available": "bytes", "free": "bytes", "percent": "%"}


@hookimpl
def edgemon_register_collectors(register: RegisterCollector) -> None:
    """Register the memory collector."""
    register("memory", collect, units=UNITS)
