"""Running plugin code so that nothing it does can stop the agent.

Every call into a plugin (loading it, each hook, each collector, each rule)
runs in a thread of the agent's, never in the main thread, and comes back as
an :class:`Outcome`. Whatever the plugin does there, ``raise``,
``sys.exit()``, ``raise KeyboardInterrupt`` or never returning, stays there:
an exception is caught as a value (``BaseException``, because ``SystemExit``
and ``KeyboardInterrupt`` raised by plugin code are bugs of the plugin), and a
call that does not return within its timeout is abandoned. A real Ctrl-C is
delivered to the main thread, which is only waiting, so it still stops the
agent cleanly.

Threads are daemons: one stuck forever does not keep the process from exiting.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

PLUGIN_ATTR = "edgemon_plugin"
"""Attribute set on a thread running plugin code: the plugin's name (for the stdout redirect)."""


@dataclass(frozen=True)
class Outcome:
    """What one call into a plugin did.

    Attributes:
        value: what it returned (``None`` when it raised or timed out).
        error: the exception it raised, if any.
        timeout: the timeout it exceeded, if it did (the call is abandoned).
        elapsed: seconds the call itself ran (its own time, not the waiting of others).
    """

    value: Any = None
    error: BaseException | None = None
    timeout: float | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        """The call returned."""
        return self.error is None and self.timeout is None

    @property
    def reason(self) -> str:
        """One line for logs and status: ``SystemExit: 3 (at plugin.py:12)`` or ``did not return within 2 s``."""
        if self.timeout is not None:
            return f"did not return within {self.timeout:g} s"
        if self.error is None:
            return ""
        return describe(self.error)


def describe(exc: BaseException) -> str:
    """``Type: message (at file.py:line)``, the line being where the exception was raised."""
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {os.path.basename(last.filename)}:{last.lineno})"
    return text


def format_traceback(exc: BaseException) -> str:
    """The full traceback of ``exc``, for ``plugins test`` and debug logs."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _run(fn: Callable[[], Any]) -> Outcome:
    t0 = time.perf_counter()
    try:
        value = fn()
    except BaseException as exc:  # noqa: BLE001 - plugin code: even SystemExit/KeyboardInterrupt are its failure
        return Outcome(error=exc, elapsed=time.perf_counter() - t0)
    return Outcome(value=value, elapsed=time.perf_counter() - t0)


class Worker:
    """One daemon thread that runs one plugin's calls, one after another."""

    def __init__(self, name: str, plugin: str) -> None:
        """Start the thread ``edgemon-<name>``, marked as running ``plugin``'s code."""
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Outcome]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=f"edgemon-{name}", daemon=True)
        setattr(self._thread, PLUGIN_ATTR, plugin)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> Future[Outcome]:
        """Queue ``fn``; the future resolves to its :class:`Outcome` (it never raises)."""
        fut: Future[Outcome] = Future()
        self._jobs.put((fn, fut))
        return fut

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, fut = job
            if fut.set_running_or_notify_cancel():
                fut.set_result(_run(fn))

    def stop(self) -> None:
        """Let the thread end after its current call (a stuck one stays stuck, as a daemon)."""
        self._jobs.put(None)


def wait(fut: Future[Outcome], timeout: float) -> Outcome:
    """The outcome of ``fut``, or a timed-out outcome after ``timeout`` seconds."""
    try:
        return fut.result(timeout=max(0.0, timeout))
    except FutureTimeout:
        return Outcome(timeout=timeout, elapsed=timeout)


_idle: Worker | None = None
_idle_lock = threading.Lock()


def _as_plugin(plugin: str, fn: Callable[[], Any]) -> Any:
    setattr(threading.current_thread(), PLUGIN_ATTR, plugin)
    return fn()


def call(fn: Callable[[], Any], timeout: float, plugin: str) -> Outcome:
    """Run ``fn`` once in a thread of the agent's; give up waiting after ``timeout`` seconds.

    One-off calls (imports, lifecycle hooks) share a worker thread while they return in time
    (fewer threads started, fewer thread stacks kept by the C library); a call that times out
    keeps that thread, stuck, and the next call gets a new one.
    """
    global _idle
    with _idle_lock:
        worker, _idle = _idle, None
    if worker is None:
        worker = Worker("hooks", plugin)
    outcome = wait(worker.submit(functools.partial(_as_plugin, plugin, fn)), timeout)
    if outcome.timeout is not None:
        worker.stop()  # abandoned, stuck in the plugin's code
        return outcome
    with _idle_lock:
        keep = _idle is None
        if keep:
            _idle = worker
    if not keep:
        worker.stop()
    return outcome


def current_plugin() -> str | None:
    """The plugin whose code the calling thread runs, if any."""
    value = getattr(threading.current_thread(), PLUGIN_ATTR, None)
    return value if isinstance(value, str) else None
