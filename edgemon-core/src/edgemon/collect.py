"""Running collectors with per-collector timeouts and failure isolation.

Each collector owns one worker thread. A run that exceeds its timeout is
*abandoned*: the cycle goes on without its sub-tree, and while that run is
still stuck the collector is skipped (counted as a timeout again) instead of
piling up threads. A collector that raises is logged once per distinct error
and counted; the next cycle tries it again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from edgemon.registry import Collector

log = logging.getLogger(__name__)


@dataclass
class CollectorStats:
    """Counters for one collector, published under ``agent.collectors.<name>``."""

    runs: int = 0
    errors: int = 0
    timeouts: int = 0
    clashes: int = 0
    time_ms: float = 0.0

    def to_tree(self) -> dict[str, Any]:
        """Return the counters as a metrics sub-tree."""
        return {
            "runs": self.runs,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "clashes": self.clashes,
            "time_ms": round(self.time_ms, 3),
        }


class _Worker:
    """One daemon thread running one collector's calls.

    Not a ``ThreadPoolExecutor``: its threads are joined at interpreter exit,
    so a collector stuck forever would keep the agent from exiting.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=f"edgemon-{name}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        self._jobs.put((fn, fut))
        return fut

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting cycle
                fut.set_exception(exc)

    def stop(self) -> None:
        self._jobs.put(None)


@dataclass
class _Slot:
    collector: Collector
    executor: _Worker
    stats: CollectorStats = field(default_factory=CollectorStats)
    pending: Future[Mapping[str, Any]] | None = None
    last_run: float | None = None
    seen_errors: set[str] = field(default_factory=set)


class CollectorRunner:
    """Runs the registered collectors that are due and returns their sub-trees."""

    def __init__(
        self,
        collectors: list[Collector],
        default_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create one worker thread per collector ."""
        self._clock = clock
        self._default_timeout = default_timeout
        self._slots = [_Slot(c, _Worker(c.name)) for c in collectors]

    @property
    def stats(self) -> dict[str, CollectorStats]:
        """Collector name -> its counters."""
        return {s.collector.name: s.stats for s in self._slots}

    def collect(self) -> list[tuple[Collector, Mapping[str, Any]]]:
        """Run every due collector concurrently; return ``(collector, sub-tree)`` for those that succeeded.

        The results come back in registration order so merging is deterministic.
        """
        now = self._clock()
        started: list[tuple[_Slot, Future[Mapping[str, Any]], float]] = []
        for slot in self._slots:
            c = slot.collector
            if c.interval is not None and slot.last_run is not None and now - slot.last_run < c.interval - 1e-3:
                continue
            if slot.pending is not None and not slot.pending.done():
                slot.stats.timeouts += 1
                self._log_once(slot, "still running", "collector is still stuck in an earlier run; skipped")
                continue
            slot.last_run = now
            slot.pending = slot.executor.submit(c.fn)
            started.append((slot, slot.pending, time.perf_counter()))

        results: list[tuple[Collector, Mapping[str, Any]]] = []
        for slot, fut, t0 in started:
            timeout = slot.collector.timeout or self._default_timeout
            remaining = max(0.0, timeout - (time.perf_counter() - t0))
            try:
                tree: object = fut.result(timeout=remaining)
            except FutureTimeout:
                slot.stats.timeouts += 1
                self._log_once(slot, "timeout", f"collector did not return within {timeout:g} s; abandoned")
                continue
            except Exception as exc:  # noqa: BLE001 - a collector's bug must not stop the cycle
                slot.stats.errors += 1
                self._log_once(slot, f"{type(exc).__name__}: {exc}", f"collector raised {type(exc).__name__}: {exc}")
                continue
            finally:
                slot.stats.time_ms = (time.perf_counter() - t0) * 1000
            slot.stats.runs += 1
            if not isinstance(tree, Mapping):
                slot.stats.errors += 1
                self._log_once(slot, "type", f"collector returned {type(tree).__name__}, not a dict")
                continue
            results.append((slot.collector, tree))
        return results

    def _log_once(self, slot: _Slot, key: str, reason: str) -> None:
        if key in slot.seen_errors:
            log.debug("collector error repeated", extra={"plugin": slot.collector.plugin, "reason": reason})
            return
        slot.seen_errors.add(key)
        log.error(
            "collector failed",
            extra={"plugin": slot.collector.plugin, "collector": slot.collector.name, "reason": reason},
        )

    def close(self) -> None:
        """Stop the worker threads without waiting for stuck collectors."""
        for slot in self._slots:
            slot.executor.stop()
