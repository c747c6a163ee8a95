"""Plugin discovery and isolated hook calls.

Entry points in the ``edgemon`` group are loaded **one at a time**, each in
its own ``try``: pluggy's ``load_setuptools_entrypoints`` stops at the first
broken install, which would let one bad ``pip install`` take every other
plugin down with it. Built-in plugins go through the same registration path.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any, Literal

import pluggy

if sys.version_info >= (3, 10):
    from importlib.metadata import entry_points
else:  # 3.9 has no entry_points(group=) and no EntryPoint.dist: the backport has both
    from importlib_metadata import entry_points

from edgemon import PROJECT, PluginUnavailable, __version__, hookspecs, isolate
from edgemon_protocol.ids import DEVICE_ID_RE

log = logging.getLogger(__name__)

BUILTIN_PLUGINS = ("edgemon.builtin.memory", "edgemon.builtin.network", "edgemon.builtin.system")
"""Modules registered by the core itself, as pytest registers its own plugins."""

LOAD_ENV = "EDGEMON_LOAD_PLUGINS"
DEFAULT_HOOK_TIMEOUT = 10.0
"""Seconds an import or a hook may take before the plugin is failed (``agent.startup_timeout``)."""

Status = Literal["loaded", "unavailable", "failed", "disabled"]


@dataclass
class PluginRecord:
    """What the core knows about one plugin, shown by ``edgemon-agent plugins``.

    Attributes:
        name: plugin name (the entry-point name, or ``memory``/``system``).
        module: the module the entry point names.
        dist: distribution that provides it (``edgemon-core`` for built-ins).
        version: that distribution's version.
        status: ``loaded``, ``unavailable`` (its startup said so), ``failed``
            (import or hook error) or ``disabled`` (by ``EDGEMON_LOAD_PLUGINS``
            or ``enabled = false``).
        reason: why it is not ``loaded``.
        hooks: the hooks it implements.
        builtin: registered by the core itself.
    """

    name: str
    module: str
    dist: str
    version: str
    status: Status = "loaded"
    reason: str | None = None
    hooks: list[str] = field(default_factory=list)
    builtin: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON-ready dict."""
        return asdict(self)


def make_plugin_manager() -> pluggy.PluginManager:
    """Return a plugin manager with the hookspecs and nothing registered."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def allowed_from_env(environ: dict[str, str] | None = None) -> set[str] | None:
    """Parse ``EDGEMON_LOAD_PLUGINS``: unset -> all; ``""`` -> none; ``a,b`` -> those."""
    env = os.environ if environ is None else environ
    raw = env.get(LOAD_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def load_plugins(
    pm: pluggy.PluginManager,
    allowed: set[str] | None = None,
    disabled: Iterable[str] = (),
    timeout: float = DEFAULT_HOOK_TIMEOUT,
) -> list[PluginRecord]:
    """Register the built-ins and every ``edgemon`` entry point, isolating failures.

    Args:
        pm: from :func:`make_plugin_manager`.
        allowed: entry-point names to load; ``None`` loads all. Built-ins always load.
        disabled: names turned off in the configuration (``enabled = false``).
        timeout: seconds one plugin's import may take.

    Returns:
        One record per plugin seen, in load order, including the ones that failed.
    """
    records: list[PluginRecord] = []
    off = set(disabled)
    for module_name in BUILTIN_PLUGINS:
        name = module_name.rsplit(".", 1)[1]
        record = PluginRecord(name, module_name, "edgemon-core", __version__, builtin=True)
        records.append(record)
        if name in off:
            _disable(pm, record, "enabled = false in the configuration")
            continue
        _register(pm, record, functools.partial(importlib.import_module, module_name), timeout)

    seen = {r.name for r in records}
    for ep in sorted(entry_points(group=PROJECT), key=lambda ep: ep.name):
        dist = ep.dist.name if ep.dist is not None else "?"
        ver = ep.dist.version if ep.dist is not None else "?"
        record = PluginRecord(ep.name, ep.value, dist, ver)
        if ep.name in seen:
            record.status, record.reason = "failed", f"name {ep.name!r} already taken by another plugin"
            log.error("plugin name clash", extra={"plugin": ep.name, "reason": record.reason})
            records.append(record)
            continue
        seen.add(ep.name)
        records.append(record)
        if allowed is not None and ep.name not in allowed:
            _disable(pm, record, f"not in {LOAD_ENV}")
        elif ep.name in off:
            _disable(pm, record, "enabled = false in the configuration")
        else:
            _register(pm, record, ep.load, timeout)
    pm.check_pending()
    return records


def _disable(pm: pluggy.PluginManager, record: PluginRecord, reason: str) -> None:
    record.status, record.reason = "disabled", reason
    pm.set_blocked(record.name)


def _register(pm: pluggy.PluginManager, record: PluginRecord, load: Callable[[], Any], timeout: float) -> None:
    # The import runs in a thread of its own: sys.exit() or a hang at import time fails this plugin only.
    outcome = isolate.call(load, timeout, record.name)
    module = outcome.value
    if outcome.ok:
        try:
            pm.register(module, name=record.name)
            _check_hook_names(pm, record.name)
        except Exception as exc:  # noqa: BLE001 - any error in a third-party plugin must not stop the others
            outcome = isolate.Outcome(error=exc)
    if not outcome.ok:
        record.status, record.reason = "failed", f"import: {outcome.reason}"
        log.error("plugin failed to load", extra={"plugin": record.name, "reason": record.reason})
        if pm.has_plugin(record.name):
            pm.unregister(name=record.name)
        return
    record.hooks = sorted(
        caller.name for caller in pm.get_hookcallers(module) or [] if caller.name.startswith("edgemon_")
    )


def _check_hook_names(pm: pluggy.PluginManager, name: str) -> None:
    """``check_pending`` for one plugin: a misspelt hook fails that plugin, not the agent."""
    plugin = pm.get_plugin(name)
    for caller in pm.get_hookcallers(plugin) or []:
        if not caller.has_spec() and any(
            impl.plugin_name == name and not impl.optionalhook for impl in caller.get_hookimpls()
        ):
            raise pluggy.PluginValidationError(plugin, f"unknown hook {caller.name!r} (misspelt?)")


def call_one(
    pm: pluggy.PluginManager, hook: str, name: str, kwargs: dict[str, Any], timeout: float
) -> isolate.Outcome | None:
    """Call plugin ``name``'s implementation of ``hook`` in a thread of its own, with a timeout.

    Returns:
        Its :class:`~edgemon.isolate.Outcome`, or ``None`` when the plugin does not implement the hook.
    """
    for impl in getattr(pm.hook, hook).get_hookimpls():
        if impl.plugin_name == name:
            fn = functools.partial(impl.function, **{arg: kwargs[arg] for arg in impl.argnames})
            return isolate.call(fn, timeout, name)
    return None


def call_each(
    pm: pluggy.PluginManager,
    hook: str,
    records: dict[str, PluginRecord],
    kwargs_for: Callable[[str], dict[str, Any]],
    timeout: float = DEFAULT_HOOK_TIMEOUT,
    keep: bool = False,
    only: set[str] | None = None,
) -> dict[str, Any]:
    """Call ``hook`` on each loaded plugin separately, isolating failures and hangs.

    Each call runs in a thread of its own and is abandoned after ``timeout``
    seconds. A plugin whose hook raises ``PluginUnavailable`` is marked
    *unavailable*; anything else it raises (``SystemExit`` too), or a timeout,
    marks it *failed* with the reason. Either way none of its hooks run again
    (it is unregistered, or with ``keep`` only marked, so that the caller can
    retry it), and the next plugin is called as usual.

    Args:
        pm: the plugin manager.
        hook: hook name, e.g. ``edgemon_startup``.
        records: name -> record, updated in place; plugins whose record is not ``loaded`` are skipped.
        kwargs_for: builds the hook's arguments for a given plugin name.
        timeout: seconds each call may take.
        keep: leave a failed plugin registered (the agent retries a failed startup).
        only: call these plugins only (``None``: all).

    Returns:
        plugin name -> the value its hook returned, for those that returned.
    """
    results: dict[str, Any] = {}
    for impl in getattr(pm.hook, hook).get_hookimpls():  # registration order
        name = impl.plugin_name
        record = records.get(name)
        if (record is not None and record.status != "loaded") or (only is not None and name not in only):
            continue
        outcome = call_one(pm, hook, name, kwargs_for(name), timeout)
        if outcome is None:
            continue
        if outcome.ok:
            results[name] = outcome.value
        else:
            _failed(pm, record, name, hook, outcome, keep)
    return results


def _failed(
    pm: pluggy.PluginManager,
    record: PluginRecord | None,
    name: str,
    hook: str,
    outcome: isolate.Outcome,
    keep: bool = False,
) -> None:
    if isinstance(outcome.error, PluginUnavailable):
        reason = str(outcome.error) or "unavailable"
        _drop(pm, record, "unavailable", reason)
        log.warning("plugin unavailable", extra={"plugin": name, "reason": reason})
        return
    reason = f"{hook} {'raised ' if outcome.error is not None else ''}{outcome.reason}"
    _drop(pm, record, "failed", reason, unregister=not keep)
    log.error("plugin hook failed", extra={"plugin": name, "reason": reason})
    if outcome.error is not None and log.isEnabledFor(logging.DEBUG):
        log.debug("traceback:\n%s", isolate.format_traceback(outcome.error), extra={"plugin": name})


def choose_device_id(
    pm: pluggy.PluginManager, records: dict[str, PluginRecord], default: str, timeout: float = DEFAULT_HOOK_TIMEOUT
) -> str:
    """Ask ``edgemon_device_id`` (``firstresult``: the last registered plugin first), isolating each plugin.

    A plugin that raises or hangs is marked failed; an answer that is not a valid
    device id is logged and ignored. ``default`` when no plugin answers.
    """
    for impl in reversed(pm.hook.edgemon_device_id.get_hookimpls()):  # pluggy's own call order
        name = impl.plugin_name
        record = records.get(name)
        if record is not None and record.status != "loaded":
            continue
        outcome = call_one(pm, "edgemon_device_id", name, {"default": default}, timeout)
        if outcome is None:
            continue
        if not outcome.ok:
            _failed(pm, record, name, "edgemon_device_id", outcome)
            continue
        answer = outcome.value
        if answer is None:
            continue
        if isinstance(answer, str) and DEVICE_ID_RE.fullmatch(answer):
            return answer
        log.error(
            "plugin's device id ignored",
            extra={"plugin": name, "reason": f"{str(answer)[:60]!r} is not a device id ({DEVICE_ID_RE.pattern})"},
        )
    return default


def _drop(
    pm: pluggy.PluginManager, record: PluginRecord | None, status: Status, reason: str, unregister: bool = True
) -> None:
    if record is None:
        return
    record.status, record.reason = status, reason
    if unregister and pm.has_plugin(record.name):
        pm.unregister(name=record.name)


def plugin_module(pm: pluggy.PluginManager, name: str) -> ModuleType | None:
    """Return the registered module object of plugin ``name`` (``None`` if absent)."""
    plugin = pm.get_plugin(name)
    return plugin if isinstance(plugin, ModuleType) else None
