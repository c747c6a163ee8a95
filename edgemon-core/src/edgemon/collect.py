"""Running collectors and alert rules with per-call timeouts and failure isolation.

Each collector and each rule owns one worker thread (:class:`edgemon.isolate.Worker`).
A run that exceeds its timeout is *abandoned*: the cycle goes on without it,
and while that run is still stuck the task is skipped (counted as a timeout
again) instead of piling up threads. A task that raises anything, even
``SystemExit``, is logged once per distinct error (with its traceback at debug
level) and counted; the next cycle tries it again. ``time_ms`` is the task's
own run time, measured in its thread.
"""

from __future__ import annotations

import functools
import logging
import time
import types
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from edgemon import isolate
from edgemon.registry import Collector, Rule

log = logging.getLogger(__name__)

LOG_ONCE_MAX = 1000
"""Distinct errors remembered per task for log-once (beyond it, repeats go to debug)."""


@dataclass
class TaskStats:
    """Counters for one collector or rule, published under ``agent.collectors.<name>`` / ``agent.rules.<name>``."""

    runs: int = 0
    errors: int = 0
    timeouts: int = 0
    clashes: int = 0
    dropped: int = 0
    time_ms: float = 0.0

    def to_tree(self) -> dict[str, Any]:
        """Return the counters as a metrics sub-tree."""
        return {
            "runs": self.runs,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "clashes": self.clashes,
            "dropped": self.dropped,
            "time_ms": round(self.time_ms, 3),
        }


@dataclass
class _Slot:
    name: str
    plugin: str
    timeout: float
    interval: float | None
    worker: isolate.Worker
    stats: TaskStats = field(default_factory=TaskStats)
    pending: Future[isolate.Outcome] | None = None
    last_run: float | None = None
    seen_errors: set[str] = field(default_factory=set)


class _Runner:
    """Runs named tasks concurrently, each in its own thread, with a timeout each."""

    kind = "task"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._slots: dict[str, _Slot] = {}

    def _add(self, name: str, plugin: str, timeout: float, interval: float | None = None) -> None:
        self._slots[name] = _Slot(name, plugin, timeout, interval, isolate.Worker(f"{self.kind}-{name}", plugin))

    @property
    def stats(self) -> dict[str, TaskStats]:
        """Task name -> its counters."""
        return {name: slot.stats for name, slot in self._slots.items()}

    def _run(self, calls: Mapping[str, Callable[[], Any]]) -> list[tuple[_Slot, Any]]:
        """Start every due call at once; return ``(slot, value)`` for those that returned in time."""
        now = self._clock()
        started: list[tuple[_Slot, Future[isolate.Outcome], float]] = []
        for name, fn in calls.items():
            slot = self._slots[name]
            if slot.interval is not None and slot.last_run is not None and now - slot.last_run < slot.interval - 1e-3:
                continue
            if slot.pending is not None and not slot.pending.done():
                slot.stats.timeouts += 1
                self._log_once(slot, "still running", f"{self.kind} is still stuck in an earlier run; skipped")
                continue
            slot.last_run = now
            slot.pending = slot.worker.submit(fn)
            started.append((slot, slot.pending, time.perf_counter()))

        results: list[tuple[_Slot, Any]] = []
        for slot, fut, t0 in started:
            outcome = isolate.wait(fut, slot.timeout - (time.perf_counter() - t0))
            if outcome.timeout is not None:
                slot.stats.timeouts += 1
                slot.stats.time_ms = slot.timeout * 1000
                self._log_once(slot, "timeout", f"{self.kind} did not return within {slot.timeout:g} s; abandoned")
                continue
            slot.stats.time_ms = outcome.elapsed * 1000
            slot.stats.runs += 1
            if outcome.error is not None:
                slot.stats.errors += 1
                self._log_once(slot, outcome.reason, f"{self.kind} raised {outcome.reason}", exc=outcome.error)
                continue
            results.append((slot, outcome.value))
        return results

    def _log_once(self, slot: _Slot, key: str, reason: str, exc: BaseException | None = None) -> None:
        fields = {"plugin": slot.plugin, self.kind: slot.name, "reason": reason}
        if exc is not None and log.isEnabledFor(logging.DEBUG):
            log.debug("%s traceback:\n%s", self.kind, isolate.format_traceback(exc), extra=fields)
        if key in slot.seen_errors or len(slot.seen_errors) >= LOG_ONCE_MAX:
            log.debug(f"{self.kind} error repeated", extra=fields)
            return
        slot.seen_errors.add(key)
        log.error(f"{self.kind} failed", extra=fields)

    def failed(self, name: str, reason: str) -> None:
        """Count and log a failure found after the call returned (a value of the wrong type)."""
        slot = self._slots[name]
        slot.stats.errors += 1
        self._log_once(slot, reason, f"{self.kind} {reason}")

    def close(self) -> None:
        """Stop the worker threads without waiting for stuck calls."""
        for slot in self._slots.values():
            slot.worker.stop()


class CollectorRunner(_Runner):
    """Runs the registered collectors that are due and returns their sub-trees."""

    kind = "collector"

    def __init__(
        self,
        collectors: list[Collector],
        default_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create one worker thread per collector."""
        super().__init__(clock)
        self._default_timeout = default_timeout
        self._collectors: list[Collector] = []
        for collector in collectors:
            self.add(collector)

    def add(self, collector: Collector) -> None:
        """Add a collector (also after start-up: a plugin whose startup succeeded on a retry)."""
        self._collectors.append(collector)
        timeout = collector.timeout or self._default_timeout
        self._add(collector.name, collector.plugin, timeout, collector.interval)

    def collect(self) -> list[tuple[Collector, Mapping[str, Any]]]:
        """Run every due collector concurrently; return ``(collector, sub-tree)`` for those that succeeded.

        The results come back in registration order so merging is deterministic.
        """
        by_name = {c.name: c for c in self._collectors}
        results: list[tuple[Collector, Mapping[str, Any]]] = []
        for slot, tree in self._run({c.name: c.fn for c in self._collectors}):
            if not isinstance(tree, Mapping):
                self.failed(slot.name, f"returned {type(tree).__name__}, not a dict")
                continue
            results.append((by_name[slot.name], tree))
        return results


def frozen(tree: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only deep view of a metrics tree, so that no rule can change what others see or what is sent."""
    return types.MappingProxyType({k: frozen(v) if isinstance(v, Mapping) else v for k, v in tree.items()})


class RuleRunner(_Runner):
    """Runs the local alert rules on a cycle's metrics, each in its own thread with a timeout."""

    kind = "rule"

    def __init__(self, rules: list[Rule], timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Create one worker thread per rule."""
        super().__init__(clock)
        self._timeout = timeout
        self._rules: list[Rule] = []
        for rule in rules:
            self.add(rule)

    def add(self, rule: Rule) -> None:
        """Add a rule."""
        self._rules.append(rule)
        self._add(rule.name, rule.plugin, self._timeout)

    def evaluate(self, metrics: Mapping[str, Any]) -> list[tuple[Rule, list[Any]]]:
        """Run every rule on a read-only view of ``metrics``; return ``(rule, alerts)`` for those that returned."""
        if not self._rules:
            return []
        view = frozen(metrics)
        by_name = {r.name: r for r in self._rules}
        results: list[tuple[Rule, list[Any]]] = []
        for slot, produced in self._run({r.name: functools.partial(r.fn, view) for r in self._rules}):
            if produced is None:
                produced = []
            if not isinstance(produced, (list, tuple)):
                self.failed(slot.name, f"returned {type(produced).__name__}, not a list of alerts")
                continue
            results.append((by_name[slot.name], list(produced)))
        return results
