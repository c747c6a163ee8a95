"""The agent: run collectors and rules each cycle, build and hand off payloads (plugins: :mod:`edgemon.host`).

Nothing a plugin does reaches the loop: every call into plugin code goes
through :mod:`edgemon.isolate` (own thread, timeout, any exception caught),
and everything a plugin returns goes through :mod:`edgemon.sanitize` before it
is merged, so a payload is always one the server accepts.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pluggy
import schedule

from edgemon import metadata, sanitize
from edgemon import payload as payload_mod
from edgemon.alerts import Alerts
from edgemon.collect import CollectorRunner, RuleRunner
from edgemon.config import Config
from edgemon.host import PluginHost
from edgemon.registry import (
    Collector,
    Rule,
)
from edgemon.scheduler import GridJob, every, run_forever
from edgemon.sink import FunctionSink, Sink
from edgemon.state import SeqCounter
from edgemon_protocol import meta as meta_mod

log = logging.getLogger(__name__)

AGENT_KEY = "agent"
"""The agent's own namespace in ``metrics``; a collector writing it is a clash."""

AGENT_LEAVES = 1024
"""Leaves of the payload kept for the agent's own ``agent`` tree; plugins share the rest."""

CLOCK_STEP = 1.0
"""A change of more than this many seconds between the wall and monotonic clocks is a step."""

LOG_ONCE_MAX = 1000
"""Distinct dropped values and clashes logged at error level; repeats and the rest go to debug."""


class Agent(PluginHost):
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
        monotonic: Callable[[], float] = time.monotonic,
        keep_alert_state: bool = True,
    ) -> None:
        """Prepare an agent; nothing is loaded until :meth:`start`.

        Args:
            config: the effective configuration.
            pm: a plugin manager whose plugins are already registered (tests);
                ``None`` discovers built-ins and entry points.
            allowed: entry-point names to load (``EDGEMON_LOAD_PLUGINS``).
            clock: wall clock, for payload timestamps only.
            monotonic: the clock the schedule and the timeouts run on (a step of the wall
                clock must not stop or burst the schedule).
            keep_alert_state: keep the alert state on disk (``run``); a one-shot command does not.
        """
        super().__init__(config, pm=pm, allowed=allowed, monotonic=monotonic)
        self.clock = clock
        self.clash_count: dict[str, int] = {}
        self.runner: CollectorRunner | None = None
        self.rule_runner: RuleRunner | None = None
        self.seq: SeqCounter | None = None
        self.cycles = 0
        self.last_cycle_ms = 0.0
        self.job: GridJob | None = None
        self.sink: Sink | None = None
        self.alerts: Alerts | None = None
        self.keep_alert_state = keep_alert_state
        self._described: bytes = b""
        self._seen_clashes: set[str] = set()
        self._seen_drops: set[tuple[str, str, str]] = set()
        self._clock_offset: float | None = None
        self.clock_steps = 0
        self.last_clock_step = 0.0
        self.payload_drops = 0
        self._started = False
        self._closed = False

    def start(self) -> None:
        """Load plugins, start them (see :meth:`PluginHost.start_plugins`), and prepare the runners."""
        self.start_plugins()
        self.runner = CollectorRunner(self.collectors, self.config.agent.timeout, self.monotonic)
        self.rule_runner = RuleRunner(self.rules, self.config.agent.timeout, self.monotonic)
        state_dir = self.config.agent.state_dir if self.keep_alert_state else None
        self.alerts = Alerts(self.config.thresholds, self.config.agent.interval, state_dir)
        self._started = True
        log.info(
            "agent started",
            extra={"device": self.device_id, "reason": f"collectors={[c.name for c in self.collectors]}"},
        )

    def retry_startups(self) -> tuple[list[Collector], list[Rule]]:
        """Try the failed startups that are due again; what a late plugin registers joins the running agent."""
        collectors, rules = super().retry_startups()
        assert self.runner is not None
        assert self.rule_runner is not None
        for collector in collectors:
            self.runner.add(collector)
        for rule in rules:
            self.rule_runner.add(rule)
        if collectors and self.sink is not None:
            self.describe()
        return collectors, rules

    def _buffered_seq(self) -> int:
        """The highest seq an earlier run in MQTT mode stored in the send buffer (its seq lives there)."""
        path = Path(self.config.agent.state_dir) / "buffer.db"
        if not path.exists():
            return 0
        from edgemon.buffer import inspect  # noqa: PLC0415 - sqlite3 only when there is a buffer

        try:
            return int(inspect(path)["last_seq"])
        except Exception as exc:  # noqa: BLE001 - an unreadable buffer is the transport's to report
            log.warning("cannot read the last seq from the send buffer", extra={"reason": repr(exc)})
            return 0

    # -- one cycle ----------------------------------------------------------------

    def _dropped(self, plugin: str, who: str, drops: list[sanitize.Drop]) -> None:
        """Log each distinct (plugin, path, reason) once; repeats at debug."""
        for drop in drops:
            key = (plugin, drop.path, drop.reason)
            fields = {"plugin": plugin, "collector": who, "path": drop.path, "reason": drop.reason}
            if key in self._seen_drops or len(self._seen_drops) >= LOG_ONCE_MAX:
                log.debug("value dropped", extra=fields)
                continue
            self._seen_drops.add(key)
            log.error("value dropped: it breaks the payload rules", extra=fields)

    def collect_metrics(self, runner: CollectorRunner | None = None) -> dict[str, Any]:
        """Run the due collectors of ``runner`` (default: the agent's), check and merge their sub-trees.

        Each sub-tree is checked against the payload rules (:mod:`edgemon.sanitize`) before the
        merge: what breaks one is left out and counted under ``agent.collectors.<name>.dropped``.
        """
        runner = runner or self.runner
        assert runner is not None, "call start() first"
        budget = sanitize.Budget(sanitize.MAX_LEAVES - AGENT_LEAVES)
        parts: list[tuple[str, dict[str, Any]]] = []
        reserved: list[payload_mod.Clash] = []
        for collector, tree in runner.collect():
            if AGENT_KEY in tree:
                reserved.append(payload_mod.Clash(AGENT_KEY, "agent", collector.name))
                tree = {k: v for k, v in tree.items() if k != AGENT_KEY}
            clean, drops = sanitize.clean_tree(tree, budget)
            if drops:
                runner.stats[collector.name].dropped += len(drops)
                self._dropped(collector.plugin, collector.name, drops)
            parts.append((collector.name, clean))
        merged, clashes = payload_mod.merge(parts, copy=False)
        clashes = reserved + clashes
        for clash in clashes:
            self.clash_count[clash.dropped] = self.clash_count.get(clash.dropped, 0) + 1
            if clash.path not in self._seen_clashes and len(self._seen_clashes) < LOG_ONCE_MAX:
                self._seen_clashes.add(clash.path)
                log.error(
                    "metric name clash",
                    extra={
                        "collector": clash.dropped,
                        "reason": f"{clash.path} already written by {clash.kept}; {clash.dropped}'s value left out",
                    },
                )
        return merged

    def evaluate_rules(self, metrics: Mapping[str, Any], now: float | None = None) -> list[dict[str, Any]]:
        """Judge the cycle's metrics: threshold rules and plugin rules (isolated, their answers checked).

        Returns the active set the payload carries (:meth:`edgemon.alerts.Alerts.active`); the
        transitions are logged, saved and handed to the sink by :class:`~edgemon.alerts.Alerts`.
        """
        if self.alerts is None or self.rule_runner is None:
            return []
        results: list[tuple[Rule, list[dict[str, Any]]]] = []
        for rule, produced in self.rule_runner.evaluate(metrics):
            drops: list[sanitize.Drop] = []
            conditions: list[dict[str, Any]] = []
            for item in produced:
                condition, item_drops = sanitize.clean_alert(item, rule.name)
                drops.extend(item_drops)
                if condition is not None:
                    conditions.append(condition)
            if drops:
                self.rule_runner.stats[rule.name].dropped += len(drops)
                self._dropped(rule.plugin, rule.name, drops)
            results.append((rule, conditions))
        self.alerts.evaluate(self.clock() if now is None else now, metrics, results)
        active = self.alerts.active()
        if len(active) > sanitize.MAX_ALERTS:
            self._dropped("agent", "alerts", [sanitize.Drop("alerts", f"over {sanitize.MAX_ALERTS} active alerts")])
            active = active[: sanitize.MAX_ALERTS]
        return active

    def self_metrics(self) -> dict[str, Any]:
        """The agent's own counters, published under ``metrics.agent``."""
        assert self.runner is not None
        assert self.rule_runner is not None
        collectors = {}
        for name, stats in self.runner.stats.items():
            stats.clashes = self.clash_count.get(name, 0)
            collectors[name] = stats.to_tree()
        statuses = [r.status for r in self.records.values()]
        transport = self.sink.metrics() if self.sink is not None else None
        tree: dict[str, Any] = {
            **({"transport": transport} if transport else {}),
            "cycles": self.cycles,
            "cycle_ms": round(self.last_cycle_ms, 3),
            "skipped_cycles": self.job.skipped if self.job else 0,
            "clock_steps": self.clock_steps,
            "last_clock_step_s": round(self.last_clock_step, 3),
            "payload_drops": self.payload_drops,
            "collectors": collectors,
            "rules": {name: stats.to_tree() for name, stats in self.rule_runner.stats.items()},
            "plugins": {s: statuses.count(s) for s in ("loaded", "unavailable", "failed", "disabled")},
            "plugin": self.plugin_states(),
            "config": {"version": self.config.remote_version},
        }
        if self.alerts is not None:
            tree["alerts"] = self.alerts.stats()
        if self.seq is not None:
            tree["state"] = self.seq.health()
        return {AGENT_KEY: tree}

    def _watch_clock(self, wall: float) -> None:
        """Notice a step of the wall clock (NTP correcting an RTC): log it and count it."""
        offset = wall - self.monotonic()
        if self._clock_offset is not None and abs(offset - self._clock_offset) > CLOCK_STEP:
            self.clock_steps += 1
            self.last_clock_step = offset - self._clock_offset
            log.warning(
                "wall clock stepped; the schedule runs on the monotonic clock and goes on",
                extra={"reason": f"by {self.last_clock_step:+.3f} s; payload times follow the wall clock"},
            )
        self._clock_offset = offset

    def cycle(self) -> dict[str, Any]:
        """Collect once and return a complete payload (the ``seq`` is consumed)."""
        payload, _body = self.cycle_body()
        return payload

    def cycle_body(self) -> tuple[dict[str, Any], bytes]:
        """Collect once; return the payload and its serialised body (at most ``payload.MAX_BYTES``)."""
        assert self._started, "call start() first"
        if self.seq is None:
            # A sink that stores each seq with its payload (MQTT's buffer) needs no seq file fsynced each
            # cycle; the counter still starts above what an older seq file or buffer holds.
            keeps = self.sink is not None and self.sink.keeps_seq
            floor = max(self.sink.last_seq() if self.sink is not None else 0, self._buffered_seq())
            self.seq = SeqCounter(self.config.agent.state_dir, floor=floor, persist=not keeps)
        epoch = self.clock()
        self._watch_clock(epoch)
        t0 = time.perf_counter()
        metrics = self.collect_metrics()
        alerts = self.evaluate_rules(metrics, epoch)
        self.cycles += 1
        self.last_cycle_ms = (time.perf_counter() - t0) * 1000
        own, drops = sanitize.clean_tree(self.self_metrics(), sanitize.Budget(AGENT_LEAVES))
        self._dropped("agent", "agent", drops)  # e.g. a path with undecodable bytes in an error text
        metrics[AGENT_KEY] = own[AGENT_KEY]
        payload = payload_mod.build(self.device_id, self.seq.next(), epoch, self.config.agent.interval, metrics, alerts)
        return payload, self._fit(payload)

    def _fit(self, payload: dict[str, Any]) -> bytes:
        """Serialise; while over the size limit, leave out the largest plugin sub-tree (logged and counted)."""
        body = payload_mod.dumps(payload).encode()
        metrics = payload["metrics"]
        while len(body) > payload_mod.MAX_BYTES:
            sizes = [(name, size) for name, size in payload_mod.subtree_sizes(payload) if name != AGENT_KEY]
            if not sizes:
                payload["alerts"] = []
                body = payload_mod.dumps(payload).encode()
                break
            name, size = sizes[0]
            del metrics[name]
            self.payload_drops += 1
            owners = [c for c in self.collectors if c.name == name]
            own = metrics.get(AGENT_KEY, {})
            own["payload_drops"] = self.payload_drops  # this payload already says what it lacks
            if self.runner is not None:
                for collector in owners:
                    self.runner.stats[collector.name].dropped += 1
                    own.get("collectors", {}).get(collector.name, {})["dropped"] = self.runner.stats[
                        collector.name
                    ].dropped
            log.error(
                "payload too large: the largest sub-tree is left out",
                extra={
                    "plugin": owners[0].plugin if owners else "?",
                    "path": name,
                    "reason": f"{len(body)} B > {payload_mod.MAX_BYTES} B; {name} is {size} B",
                },
            )
            body = payload_mod.dumps(payload).encode()
        return body

    # -- the loop -------------------------------------------------------------------

    def describe(self) -> bytes:
        """The metric metadata document of the current collectors; handed to the sink when it changed."""
        entries = metadata.document(self.collectors)
        tags = self.config.agent.tags
        body = meta_mod.encode(self.device_id, payload_mod.utc_timestamp(self.clock()), entries, tags)
        fingerprint = meta_mod.encode(self.device_id, "", entries, tags)
        if self.sink is not None and fingerprint != self._described:
            self._described = fingerprint
            try:
                self.sink.describe(body)
            except Exception as exc:  # noqa: BLE001 - metadata is an aid; payloads go on without it
                log.error("could not hand off metric metadata", extra={"reason": repr(exc)})
        return body

    def run(self, sink: Sink | Callable[[dict[str, Any], bytes], None], stop: threading.Event) -> None:
        """Emit a payload to ``sink`` every interval until ``stop`` is set.

        The schedule runs on the monotonic clock: a step of the wall clock, either way, never
        delays or bursts it; payloads are stamped with the wall clock.
        """
        if not self._started:
            self.start()
        attached: Sink = sink if hasattr(sink, "keeps_seq") else FunctionSink(sink)  # type: ignore[assignment]
        self.sink = attached
        if self.alerts is not None:
            self.alerts.on_transition = attached.alert
        self.describe()

        def job() -> None:
            self.retry_startups()
            payload, body = self.cycle_body()
            try:
                self.sink(payload, body)  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001 - a failing sink is logged; the loop goes on
                log.error("could not hand off payload", extra={"seq": payload["seq"], "reason": repr(exc)})

        # Everything alive now (modules, plugins, settings) lives as long as the process: move it out
        # of the garbage collector's sight, so that its full collections walk only what cycles create.
        gc.collect()
        gc.freeze()
        scheduler = schedule.Scheduler()
        self.job = every(self.config.agent.interval, scheduler, job, self.monotonic)
        run_forever(scheduler, stop, self.monotonic)

    def close(self) -> None:
        """Call every started plugin's ``edgemon_shutdown`` and stop the worker threads (once)."""
        if self._closed:
            return
        self._closed = True
        if self.alerts is not None:
            self.alerts.close()
        self.shutdown_plugins(self._started)
        if self.runner is not None:
            self.runner.close()
        if self.rule_runner is not None:
            self.rule_runner.close()
        if self.seq is not None:
            self.seq.close()
        self._started = False
