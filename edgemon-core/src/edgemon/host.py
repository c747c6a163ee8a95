"""The plugin host: discover plugins, check their settings, start them, gather what they register.

A plugin's life here: found (an entry point or a built-in) -> settings checked against its
``edgemon_settings_spec`` -> ``edgemon_startup`` (a failed one is tried again with back-off while the
agent runs) -> its collectors and rules registered -> ``edgemon_shutdown`` at exit. Every call goes
through :mod:`edgemon.isolate`; :class:`edgemon.agent.Agent` builds the collection cycle on top.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pluggy

from edgemon import PluginUnavailable, isolate, sanitize
from edgemon import plugins as plugins_mod
from edgemon.config import Config, ConfigError, plugin_settings
from edgemon.registry import (
    NAME_RE,
    CollectFn,
    Collector,
    Metric,
    RegisterCollector,
    RegisterRule,
    Rule,
    RuleFn,
    SettingsSpec,
    safe_key,
)

log = logging.getLogger("edgemon.agent")

RETRY_FIRST, RETRY_MAX = 10.0, 600.0
"""Back-off of a failed plugin startup: 10 s, doubling, at most 10 minutes."""


@dataclass
class _Retry:
    """A plugin whose ``edgemon_startup`` failed, waiting to be tried again."""

    attempts: int
    next_at: float
    worker: isolate.Worker
    pending: Future[isolate.Outcome] | None = None


class PluginHost:
    """The plugins of one agent: their records, settings, collectors and rules."""

    def __init__(
        self,
        config: Config,
        *,
        pm: pluggy.PluginManager | None = None,
        allowed: set[str] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Nothing is loaded until :meth:`load` / :meth:`start_plugins`.

        Args:
            config: the effective configuration.
            pm: a plugin manager whose plugins are already registered (tests);
                ``None`` discovers built-ins and entry points.
            allowed: entry-point names to load (``EDGEMON_LOAD_PLUGINS``).
            monotonic: the clock retries are timed on.
        """
        self.config = config
        self.monotonic = monotonic
        self._given_pm = pm
        self.pm = pm or plugins_mod.make_plugin_manager()
        self.allowed = allowed
        self.records: dict[str, plugins_mod.PluginRecord] = {}
        self.settings: dict[str, dict[str, Any]] = {}
        self.collectors: list[Collector] = []
        self.rules: list[Rule] = []
        self.device_id = config.device_id
        self._retries: dict[str, _Retry] = {}
        self._states_for: tuple[Any, ...] = ()
        self._states: dict[str, Any] = {}

    def load(self) -> list[plugins_mod.PluginRecord]:
        """Discover plugins and validate every loaded plugin's settings.

        Raises:
            ConfigError: a ``[plugins.<name>]`` section names no plugin or holds a bad key.
        """
        if self._given_pm is None:
            disabled = [n for n, s in self.config.plugins.items() if s.get("enabled") is False]
            records = plugins_mod.load_plugins(self.pm, self.allowed, disabled, self.config.agent.startup_timeout)
        else:
            records = [
                plugins_mod.PluginRecord(name, type(p).__name__, "?", "?")
                for name, p in self.pm.list_name_plugin()
                if p is not None
            ]
        self.records = {r.name: r for r in records}
        for name in self.config.plugins:
            if name not in self.records:
                raise ConfigError(
                    f"{self.config.source or 'configuration'}: [plugins.{name}] names no installed plugin "
                    f"(installed: {', '.join(sorted(self.records))})"
                )
        specs = plugins_mod.call_each(
            self.pm, "edgemon_settings_spec", self.records, lambda _: {}, self.config.agent.startup_timeout
        )
        for name, record in self.records.items():
            if record.status != "loaded":
                continue
            spec = specs.get(name)
            if spec is not None and not isinstance(spec, SettingsSpec):
                plugins_mod._drop(self.pm, record, "failed", "edgemon_settings_spec returned no SettingsSpec")
                continue
            defaults = spec.defaults if spec else {}
            validate = spec.validate if spec else None
            self.settings[name] = plugin_settings(self.config, name, defaults, validate)
        return list(self.records.values())

    def start_plugins(self) -> None:
        """Load plugins, start them, and gather their collectors and rules.

        A plugin whose ``edgemon_startup`` fails (raises, or does not return within
        ``agent.startup_timeout``) is reported *failed* and tried again with back-off
        while the agent runs; :meth:`retry_startups` does that each cycle.
        """
        if not self.records:
            self.load()
        timeout = self.config.agent.startup_timeout
        before = {n for n, r in self.records.items() if r.status == "loaded"}
        plugins_mod.call_each(
            self.pm, "edgemon_startup", self.records, lambda n: {"settings": self._settings(n)}, timeout, keep=True
        )
        for name in before:
            record = self.records[name]
            if record.status == "failed" and self.pm.has_plugin(name):
                self._retries[name] = _Retry(1, self.monotonic() + RETRY_FIRST, isolate.Worker(f"retry-{name}", name))
        self._register_plugins()
        self.device_id = plugins_mod.choose_device_id(self.pm, self.records, self.device_id, timeout)

    def _register_plugins(self, only: str | None = None) -> tuple[list[Collector], list[Rule]]:
        """Call the register hooks (of every loaded plugin, or of ``only``); return what they added."""
        n_collectors, n_rules = len(self.collectors), len(self.rules)
        timeout = self.config.agent.startup_timeout
        for hook, registrar in (
            ("edgemon_register_collectors", self._collector_registrar),
            ("edgemon_register_alert_rules", self._rule_registrar),
        ):
            plugins_mod.call_each(
                self.pm,
                hook,
                self.records,
                functools.partial(self._register_kwargs, registrar),
                timeout,
                only={only} if only else None,
            )
        # A plugin dropped while registering must not leave collectors behind.
        live = {n for n, r in self.records.items() if r.status == "loaded"}
        added = [c for c in self.collectors[n_collectors:] if c.plugin in live]
        added_rules = [r for r in self.rules[n_rules:] if r.plugin in live]
        self.collectors = [c for c in self.collectors if c.plugin in live]
        self.rules = [r for r in self.rules if r.plugin in live]
        return added, added_rules

    def _register_kwargs(self, registrar: Callable[[str], Any], name: str) -> dict[str, Any]:
        return {"register": registrar(name), "settings": self._settings(name)}

    def retry_startups(self) -> tuple[list[Collector], list[Rule]]:
        """Try the failed startups that are due again; return what the plugins that now started registered."""
        now = self.monotonic()
        added: tuple[list[Collector], list[Rule]] = ([], [])
        for name, retry in list(self._retries.items()):
            record = self.records[name]
            if retry.pending is not None:
                if not retry.pending.done():
                    continue  # still stuck in an earlier attempt
                outcome = retry.pending.result()
                retry.pending = None
                if outcome.ok:
                    collectors, rules = self._started_late(name, retry)
                    added[0].extend(collectors)
                    added[1].extend(rules)
                    continue
                reason = f"edgemon_startup {'raised ' if outcome.error is not None else ''}{outcome.reason}"
                if isinstance(outcome.error, PluginUnavailable):
                    self._give_up(name, retry, "unavailable", str(outcome.error) or "unavailable")
                    continue
                record.reason = f"{reason} (attempt {retry.attempts}; retrying)"
                retry.attempts += 1
                retry.next_at = now + min(RETRY_MAX, RETRY_FIRST * 2 ** (retry.attempts - 1))
                log.warning("plugin startup failed again", extra={"plugin": name, "reason": record.reason})
            if now < retry.next_at:
                continue
            impl = next((i for i in self.pm.hook.edgemon_startup.get_hookimpls() if i.plugin_name == name), None)
            if impl is None:
                self._give_up(name, retry, "failed", record.reason or "unregistered")
                continue
            kwargs = {"settings": self._settings(name)}
            retry.pending = retry.worker.submit(
                functools.partial(impl.function, **{a: kwargs[a] for a in impl.argnames})
            )
            retry.next_at = now + self.config.agent.startup_timeout  # checked again next cycle
        return added

    def _started_late(self, name: str, retry: _Retry) -> tuple[list[Collector], list[Rule]]:
        record = self.records[name]
        record.status, record.reason = "loaded", None
        retry.worker.stop()
        del self._retries[name]
        collectors, rules = self._register_plugins(only=name)
        log.info(
            "plugin started on a retry",
            extra={
                "plugin": name,
                "reason": f"attempt {retry.attempts + 1}; collectors={[c.name for c in collectors]}",
            },
        )
        return collectors, rules

    def _give_up(self, name: str, retry: _Retry, status: plugins_mod.Status, reason: str) -> None:
        retry.worker.stop()
        del self._retries[name]
        plugins_mod._drop(self.pm, self.records[name], status, reason)
        log.warning("plugin startup not retried", extra={"plugin": name, "reason": reason})

    def _settings(self, name: str) -> dict[str, Any]:
        return self.settings.get(name, {})

    def _collector_registrar(self, plugin: str) -> RegisterCollector:
        def register(
            name: str,
            fn: CollectFn,
            *,
            interval: float | None = None,
            timeout: float | None = None,
            units: Mapping[str, str] | None = None,
            metrics: Mapping[str, Metric] | None = None,
        ) -> None:
            self._check_registration(plugin, "collector", name, [c.name for c in self.collectors])
            for key, value in (("interval", interval), ("timeout", timeout)):
                if value is not None and not (isinstance(value, (int, float)) and 0 < value < 86400 * 366):
                    raise ValueError(f"collector {name}: {key} must be a number of seconds > 0, got {value!r}")
            settings = self._settings(plugin)
            agent = self.config.agent
            eff_interval = settings.get("interval") or interval
            eff_timeout = settings.get("timeout") or timeout or agent.timeout
            eff_timeout = min(eff_timeout, agent.interval * 0.9)
            self.collectors.append(
                Collector(name, plugin, fn, eff_interval, eff_timeout, dict(units or {}), dict(metrics or {}))
            )

        return register

    def _rule_registrar(self, plugin: str) -> RegisterRule:
        def register(name: str, fn: RuleFn, *, for_s: float = 0.0, clear_for_s: float = 0.0) -> None:
            self._check_registration(plugin, "rule", name, [r.name for r in self.rules])
            for key, value in (("for_s", for_s), ("clear_for_s", clear_for_s)):
                if not (isinstance(value, (int, float)) and 0 <= value <= 7 * 86400):
                    raise ValueError(f"rule {name}: {key} must be seconds between 0 and 7 days, got {value!r}")
            self.rules.append(Rule(name, plugin, fn, float(for_s), float(clear_for_s)))

        return register

    def _check_registration(self, plugin: str, kind: str, name: Any, taken: list[str]) -> None:
        record = self.records.get(plugin)
        if record is not None and record.status != "loaded":
            # A register hook that timed out and registers later, from its abandoned thread.
            raise RuntimeError(f"{kind} {name!r} registered after plugin {plugin} was failed")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ValueError(f"{kind} name {name!r} must match {NAME_RE.pattern}")
        if name in taken:
            raise ValueError(f"{kind} name {name!r} is already registered")

    def plugin_states(self) -> dict[str, Any]:
        """``agent.plugin.<name>``: status, version and (unless loaded) the reason, cut to 200 characters."""
        signature = tuple((r.name, r.status, r.reason, r.version) for r in self.records.values())
        if signature == self._states_for:
            return self._states
        out: dict[str, Any] = {}
        for record in self.records.values():
            state: dict[str, Any] = {"status": record.status, "version": sanitize.cut(record.version, 64)}
            if record.reason and record.status != "loaded":
                state["reason"] = sanitize.cut(record.reason)
            out[safe_key(record.name)] = state
        self._states_for, self._states = signature, out
        return out

    def shutdown_plugins(self, started: bool) -> None:
        """Call every started plugin's ``edgemon_shutdown``; stop the retry workers."""
        if started:
            plugins_mod.call_each(
                self.pm, "edgemon_shutdown", self.records, lambda _: {}, self.config.agent.startup_timeout
            )
        for retry in self._retries.values():
            retry.worker.stop()
