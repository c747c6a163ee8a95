"""edgemon: a pluggable monitoring agent for fleets of edge devices.

Plugins import the markers from here::

    from edgemon import hookimpl

    @hookimpl
    def edgemon_register_collectors(register):
        register("example", lambda: {"example": {"answer": 42}})
"""

from importlib.metadata import PackageNotFoundError, version

import pluggy

PROJECT = "edgemon"
"""The pluggy project name, which is also the entry-point group."""

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

try:
    __version__ = version("edgemon-core")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0+unknown"


class PluginUnavailable(Exception):  # noqa: N818 - a state, not a failure of the core
    """Raised by a plugin's ``edgemon_startup`` when it cannot work on this host.

    The core marks the plugin *unavailable* with the message as reason (shown
    by ``edgemon-agent plugins``), logs it once, and calls none of its other
    hooks. The GPU plugin raises it when neither NVML nor a Jetson sysfs tree
    is present.
    """


__all__ = ["PROJECT", "PluginUnavailable", "__version__", "hookimpl", "hookspec"]
