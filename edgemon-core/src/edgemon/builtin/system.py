"""Built-in ``system`` collector: identity and uptime of the host and agent."""

from __future__ import annotations

import platform
import socket
import time
from typing import Any

import psutil

from edgemon import __version__, hookimpl
from edgemon.registry import RegisterCollector


def collect() -> dict[str, Any]:
    """Return ``{"system": {...}}``: host name, OS, boot time, uptime, agent and Python versions.

    The plugins and their states are the agent's own (``agent.plugin.<name>``).
    """
    boot = psutil.boot_time()
    return {
        "system": {
            "hostname": socket.gethostname()[:256],
            "os": f"{platform.system()} {platform.release()}"[:256],
            "arch": platform.machine(),
            "boot_time": int(boot),
            "uptime_s": int(time.time() - boot),
            "agent_version": __version__,
            "python": platform.python_version(),
        }
    }


@hookimpl
def edgemon_register_collectors(register: RegisterCollector) -> None:
    """Register the system collector."""
    register("system", collect, units={"uptime_s": "s", "boot_time": "epoch_s"})
