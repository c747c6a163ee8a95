"""Built-in ``system`` collector: identity and uptime of the host and agent."""

from __future__ import annotations

import platform
import socket
import time
from typing import Any

import psutil

from edgemon import __version__, hookimpl
from edgemon.registry import Metric, RegisterCollector

REFRESH = 60.0
"""Seconds between re-reads of what rarely changes (host name, kernel release, boot time)."""


class SystemCollector:
    """Host name, OS, boot time, uptime, agent and Python versions.

    ``psutil.boot_time()`` reads all of ``/proc/stat``; it, the host name and
    the kernel release are re-read every :data:`REFRESH` seconds, not every
    cycle (a clock step moves the boot time psutil computes, so it is re-read
    too, not kept forever). The plugins and their states are the agent's own
    (``agent.plugin.<name>``).
    """

    def __init__(self) -> None:
        """Nothing is read until the first call."""
        self._static: dict[str, Any] = {}
        self._boot = 0.0
        self._read_at = -REFRESH

    def __call__(self) -> dict[str, Any]:
        """Return ``{"system": {...}}``."""
        now = time.monotonic()
        if now - self._read_at >= REFRESH:
            self._read_at = now
            self._boot = psutil.boot_time()
            self._static = {
                "hostname": socket.gethostname()[:256],
                "os": f"{platform.system()} {platform.release()}"[:256],
                "arch": platform.machine(),
                "boot_time": int(self._boot),
                "agent_version": __version__,
                "python": platform.python_version(),
            }
        return {"system": {**self._static, "uptime_s": int(time.time() - self._boot)}}


@hookimpl
def edgemon_register_collectors(register: RegisterCollector) -> None:
    """Register the system collector."""
    register(
        "system",
        SystemCollector(),
        metrics={
            "system-uptime_s": Metric("s"),
            "system-boot_time": Metric("epoch_s", description="when the host booted"),
        },
    )
