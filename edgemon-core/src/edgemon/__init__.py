"""edgemon: a pluggable monitoring agent for fleets of edge devices.

Everything a plugin needs is imported from here::

    from edgemon import Metric, RegisterCollector, hookimpl

    @hookimpl
    def edgemon_register_collectors(register: RegisterCollector) -> None:
        register("example", lambda: {"example": {"answer": 42}},
                 metrics={"example-answer": Metric("count", headline="Answer")})

- :data:`hookimpl` marks a hook implementation (:mod:`edgemon.hookspecs` lists the hooks);
- :class:`RegisterCollector`, :class:`RegisterRule`: the register callbacks' signatures;
- :class:`SettingsSpec`: a plugin's ``[plugins.<name>]`` section;
- :class:`Metric`, :data:`UNITS`, :data:`KINDS`: what a value means (unit, kind, headline);
- :func:`safe_key`: a name from the outside world (a mount point) as a metric key;
- :class:`PluginUnavailable`: raised by ``edgemon_startup`` when the plugin cannot work on this host.
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


from edgemon.registry import (  # noqa: E402 - after the markers, which the registry's users import from here
    KINDS,
    UNITS,
    Metric,
    RegisterCollector,
    RegisterRule,
    SettingsSpec,
    safe_key,
)

__all__ = [
    "KINDS",
    "PROJECT",
    "UNITS",
    "Metric",
    "PluginUnavailable",
    "RegisterCollector",
    "RegisterRule",
    "SettingsSpec",
    "__version__",
    "hookimpl",
    "hookspec",
    "safe_key",
]
