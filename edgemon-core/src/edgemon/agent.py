"""The agent: load plugins, run collectors each cycle, build and hand off payloads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pluggy
import schedule

from edgemon import payload as payload_mod
from edgemon import plugins as plugins_mod
from edgemon.builtin import system
from edgemon.collect import CollectorRunner
from edgemon.config import Config, ConfigError, plugin_settings
from edgemon.registry import NAME_RE, CollectFn, Collector, Rule, RuleFn, SettingsSpec
from edgemon.scheduler import GridJob, every, run_forever
from edgemon.state import SeqCounter

log = logging.getLogger(__name__)

AGENT_KEY = "agent"
"""The agent's own namespace in ``metrics``; a collector writing it is a clash."""

Sink = Callable[[dict[str, Any]], None]


class Agent:
    """One agent process: plugins, collectors, rules, the sequence counter.

    Typical use::

        agent = Agent(config)
        agent.start()
        try:
            payload = agent.cycle()
        finally:
            agent.close()
    """

    def __init__(
        self,
        config: Config,
        *,
        pm: pluggy.PluginManager | None = None,
        allowed: set[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Prepare an agent; nothing is loaded until :meth:`start`.

        Args:
            config: the effective configuration.
            pm: a plugin manager whose plugins are already registered (tests);
                ``None`` discovers built-ins and entry points.
            allowed: entry-point names to load (``EDGEMON_LOAD_PLUGINS``).
            clock: wall clock for payload timestamps and the schedule.
        """
        self.config = config
        self.clock = clock
        self._given_pm = pm
        self.pm = pm or plugins_mod.make_plugin_manager()
        self.allowed = allowed
        self.records: dict[str, plugins_mod.PluginRecord] = {}
        self.settings: dict[str, dict[str, Any]] = {}
        self.collectors: list[Collector] = []
        self.rules: list[Rule] = []
        self.rule_errors: dict[str, int] = {}
        self.clash_count: dict[str, int] = {}
        self.runner: CollectorRunner | None = None
        self.seq: SeqCounter | None = None
        self.device_id = config.device_id
        self.cycles = 0
        self.last_cycle_ms = 0.0
        self.job: GridJob | None = None
        self.extra_metrics: dict[str, Callable[[], dict[str, Any]]] = {}
        """name -> callable whose tree is added under ``agent.<name>`` (the transport's counters)."""
        self._seen_clashes: set[str] = set()
        self._started = False

    # -- start-up ---------------------------------------------------------------

    def load(self) -> list[plugins_mod.PluginRecord]:
        """Discover plugins and validate every loaded plugin's settings.

        Raises:
            ConfigError: a ``[plugins.<name>]`` section names no plugin or holds a bad key.
        """
        if self._given_pm is None:
            disabled = [n for n, s in self.config.plugins.items() if s.get("enabled") is False]
            records = plugins_mod.load_plugins(self.pm, self.allowed, disabled)
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
        specs = plugins_mod.call_each(self.pm, "edgemon_settings_spec", self.records, lambda _: {})
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

    def start(self) -> None:
        """Load plugins, start them, and gather their collectors and rules."""
        if not self.records:
            self.load()
        plugins_mod.call_each(self.pm, "edgemon_startup", self.records, lambda n: {"settings": self._settings(n)})
        plugins_mod.call_each(
            self.pm,
            "edgemon_register_collectors",
            self.records,
            lambda n: {"register": self._collector_registrar(n), "settings": self._settings(n)},
        )
        plugins_mod.call_each(
            self.pm,
            "edgemon_register_alert_rules",
            self.records,
            lambda n: {"register": self._rule_registrar(n), "settings": self._settings(n)},
        )
        # A plugin dropped while registering must not leave collectors behind.
        live = {n for n, r in self.records.items() if r.status == "loaded"}
        self.collectors = [c for c in self.collectors if c.plugin in live]
        self.rules = [r for r in self.rules if r.plugin in live]
        chosen = self.pm.hook.edgemon_device_id(default=self.device_id)
        if isinstance(chosen, str) and chosen:
            self.device_id = chosen
        system.set_plugins({r.name: r.version for r in self.records.values() if r.status == "loaded"})
        self.runner = CollectorRunner(self.collectors, self.config.agent.timeout)
        self.seq = SeqCounter(self.config.agent.state_dir)
        self._started = True
        log.info(
            "agent started",
            extra={"device": self.device_id, "reason": f"collectors={[c.name for c in self.collectors]}"},
        )

    def _settings(self, name: str) -> dict[str, Any]:
        return self.settings.get(name, {})

    def _collector_registrar(self, plugin: str) -> Callable[..., None]:
        def register(
            name: str,
            fn: CollectFn,
            *,
            interval: float | None = None,
            timeout: float | None = None,
            units: Mapping[str, str] | None = None,
        ) -> None:
            if not NAME_RE.match(name):
                raise ValueError(f"collector name {name!r} must match {NAME_RE.pattern}")
            if any(c.name == name for c in self.collectors):
                raise ValueError(f"collector name {name!r} is already registered")
            settings = self._settings(plugin)
            agent = self.config.agent
            eff_interval = settings.get("interval") or interval
            eff_timeout = settings.get("timeout") or timeout or agent.timeout
            eff_timeout = min(eff_timeout, agent.interval * 0.9)
            self.collectors.append(Collector(name, plugin, fn, eff_interval, eff_timeout, dict(units or {})))

        return register

    def _rule_registrar(self, plugin: str) -> Callable[[str, RuleFn], None]:
        def register(name: str, fn: RuleFn) -> None:
            if not NAME_RE.match(name):
                raise ValueError(f"rule name {name!r} must match {NAME_RE.pattern}")
            self.rules.append(Rule(name, plugin, fn))

        return register

    # -- one cycle ----------------------------------------------------------------

    def collect_metrics(self, runner: CollectorRunner | None = None) -> dict[str, Any]:
        """Run the due collectors of ``runner`` (default: the agent's) and merge their sub-trees."""
        runner = runner or self.runner
        assert runner is not None, "call start() first"
        results = runner.collect()
        reserved = [payload_mod.Clash(AGENT_KEY, "agent", c.name) for c, tree in results if AGENT_KEY in tree]
        merged, clashes = payload_mod.merge(
            (c.name, payload_mod.scrub({k: v for k, v in tree.items() if k != AGENT_KEY})) for c, tree in results
        )
        clashes = reserved + clashes
        for clash in clashes:
            self.clash_count[clash.dropped] = self.clash_count.get(clash.dropped, 0) + 1
            if clash.path not in self._seen_clashes:
                self._seen_clashes.add(clash.path)
                log.error(
                    "metric name clash",
                    extra={
                        "collector": clash.dropped,
                        "reason": f"{clash.path} already written by {clash.kept}; {clash.dropped}'s value left out",
                    },
                )
        return merged

    def evaluate_rules(self, metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run every local alert rule on the cycle's metrics; isolate failures."""
        alerts: list[dict[str, Any]] = []
        for rule in self.rules:
            try:
                produced = rule.fn(metrics)
                alerts.extend(dict(a) for a in produced or [])
            except Exception as exc:  # noqa: BLE001 - a rule's bug must not stop the cycle
                self.rule_errors[rule.name] = self.rule_errors.get(rule.name, 0) + 1
                log.error(
                    "alert rule failed",
                    extra={"plugin": rule.plugin, "reason": f"{rule.name}: {type(exc).__name__}: {exc}"},
                )
        return alerts

    def self_metrics(self) -> dict[str, Any]:
        """The agent's own counters, published under ``metrics.agent``."""
        assert self.runner is not None
        collectors = {}
        for name, stats in self.runner.stats.items():
            stats.clashes = self.clash_count.get(name, 0)
            collectors[name] = stats.to_tree()
        statuses = [r.status for r in self.records.values()]
        extra = {name: fn() for name, fn in self.extra_metrics.items()}
        return {
            AGENT_KEY: {
                **extra,
                "cycles": self.cycles,
                "cycle_ms": round(self.last_cycle_ms, 3),
                "skipped_cycles": self.job.skipped if self.job else 0,
                "collectors": collectors,
                "rules": {r.name: {"errors": self.rule_errors.get(r.name, 0)} for r in self.rules},
                "plugins": {s: statuses.count(s) for s in ("loaded", "unavailable", "failed", "disabled")},
            }
        }

    def cycle(self) -> dict[str, Any]:
        """Collect once and return a complete payload (the ``seq`` is consumed)."""
        assert self.seq is not None, "call start() first"
        epoch = self.clock()
        t0 = time.perf_counter()
        metrics = self.collect_metrics()
        alerts = self.evaluate_rules(metrics)
        self.cycles += 1
        self.last_cycle_ms = (time.perf_counter() - t0) * 1000
        tree = {**self.self_metrics(), **metrics}
        return payload_mod.build(self.device_id, self.seq.next(), epoch, self.config.agent.interval, tree, alerts)

    # -- the loop -------------------------------------------------------------------

    def run(self, sink: Sink, stop: threading.Event) -> None:
        """Emit a payload to ``sink`` every interval until ``stop`` is set."""
        if not self._started:
            self.start()

        def job() -> None:
            payload = self.cycle()
            try:
                sink(payload)
            except Exception as exc:  # noqa: BLE001 - a failing sink is logged; the loop goes on
                log.error("could not hand off payload", extra={"seq": payload["seq"], "reason": repr(exc)})

        scheduler = schedule.Scheduler()
        self.job = every(self.config.agent.interval, scheduler, job, self.clock)
        run_forever(scheduler, stop, self.clock)

    def close(self) -> None:
        """Call every plugin's ``edgemon_shutdown`` and stop the collector threads."""
        if self._started:
            plugins_mod.call_each(self.pm, "edgemon_shutdown", self.records, lambda _: {})
        if self.runner is not None:
            self.runner.close()
        self._started = False
