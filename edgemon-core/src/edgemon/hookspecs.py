"""Hook specifications: the whole contract between the core and its plugins.

Every hook is named ``edgemon_*``. A plugin implements any subset, with any
subset of each hook's arguments (pluggy passes only those it asks for).

The core calls every hook *one plugin at a time* (see
:func:`edgemon.plugins.call_each`), so one plugin raising never stops the next
one, unlike a plain ``pm.hook.<name>()`` call.

Collectors and alert rules are declared with **register callbacks**: the
plugin hands the core a function and the core decides when to run it, with
which timeout, and what to do when it fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgemon import hookspec
from edgemon.registry import RegisterCollector, RegisterRule, SettingsSpec


@hookspec
def edgemon_settings_spec() -> SettingsSpec | None:
    """Declare the plugin's own configuration section, ``[plugins.<name>]``.

    Called once at start-up, before any other hook of the plugin, so that the
    configuration file can be checked in full before anything runs.

    Returns:
        A :class:`~edgemon.registry.SettingsSpec` with the defaults (every
        allowed key, with a value of the expected type) and an optional
        ``validate(settings)`` that raises ``ValueError`` with a message for a
        bad combination. ``None`` when the plugin takes no settings. Keys not
        in the defaults are errors. The keys ``enabled``, ``interval`` and
        ``timeout`` are the core's and are valid in every section.
    """


@hookspec
def edgemon_startup(settings: Mapping[str, Any]) -> None:
    """Acquire the plugin's resources (e.g. ``nvmlInit``, priming counters).

    Called once when the agent starts, after settings are validated and before
    collectors are registered.

    Args:
        settings: the plugin's effective settings (defaults, then the file,
            then environment and flags).

    Raises:
        PluginUnavailable: the plugin cannot work on this host (no library, no
            device). The core reports it as *unavailable* and skips it.
    """


@hookspec
def edgemon_register_collectors(register: RegisterCollector, settings: Mapping[str, Any]) -> None:
    """Register the plugin's metric collectors.

    Called once after ``edgemon_startup``. Call ``register(name, fn, ...)`` for
    each collector; ``fn()`` takes no arguments and returns the plugin's
    namespaced sub-tree, e.g. ``{"cpu": {"percent": 3.0}}``. The core runs it
    every cycle (or every ``interval`` seconds), abandons it after ``timeout``
    seconds, and leaves its sub-tree out of a cycle where it raised.

    Args:
        register: the callback, see :class:`~edgemon.registry.RegisterCollector`.
        settings: the plugin's effective settings.
    """


@hookspec
def edgemon_register_alert_rules(register: RegisterRule, settings: Mapping[str, Any]) -> None:
    """Register local alert rules, evaluated on the device every cycle.

    Called once after ``edgemon_register_collectors``. ``register(name, fn)``
    takes a rule ``fn(metrics) -> list[dict]`` that receives the merged metrics
    tree of the cycle and returns alert objects (``rule``, ``severity``,
    ``message``, optional ``value``); the core adds them to the payload's
    ``alerts`` list. A raising rule is isolated like a raising collector.

    Args:
        register: the callback, see :class:`~edgemon.registry.RegisterRule`.
        settings: the plugin's effective settings.
    """


@hookspec(firstresult=True)
def edgemon_device_id(default: str) -> str | None:
    """Name this device (``firstresult``: the first non-``None`` answer wins).

    Called once at start-up. The core's own answer is the configured
    ``client_id``, else the host name, and comes last.

    Args:
        default: what the core would use.

    Returns:
        The device id, or ``None`` to let the next plugin (or the core) decide.
    """


@hookspec
def edgemon_shutdown() -> None:
    """Release the plugin's resources (e.g. ``nvmlShutdown``).

    Called once when the agent stops (SIGTERM, SIGINT, end of ``once``), for
    every plugin whose ``edgemon_startup`` succeeded. Exceptions are logged.
    """
