"""Where payloads go: the interface the agent writes to, and the stdout sink.

The agent reads what it needs from its sink (:class:`Sink`), so nothing outside wires state between
them: the highest ``seq`` the sink already holds (the counter starts above it), whether the sink
stores each ``seq`` with its payload (then no separate seq file is fsynced each cycle), the sink's
own counters (published under ``agent.transport``), and a place for the metric metadata
(:mod:`edgemon_protocol.meta`). The MQTT sink is :class:`edgemon.transport.MqttSink`.
"""

from __future__ import annotations

from typing import Any, Protocol, TextIO

from edgemon_protocol.alerting import Transition


class Sink(Protocol):
    """What the agent hands payloads to."""

    keeps_seq: bool
    """The sink stores each payload's ``seq`` durably with it (the agent then keeps no seq file)."""

    def __call__(self, payload: dict[str, Any], body: bytes) -> None:
        """Take one payload (``body`` is its serialised form)."""

    def last_seq(self) -> int:
        """The highest ``seq`` this sink holds from earlier runs (0: none)."""

    def metrics(self) -> dict[str, Any] | None:
        """The sink's counters, published under ``agent.transport`` (``None``: nothing to say)."""

    def describe(self, body: bytes) -> None:
        """The device's metric metadata document changed (it is also given once at start)."""

    def alert(self, transition: Transition) -> None:
        """An alert changed state (the payloads carry the active set too; this is the exact event)."""


class StdoutSink:
    """One JSON line per payload on a text stream (the ``stdout`` output); metadata is not printed."""

    keeps_seq = False

    def __init__(self, out: TextIO) -> None:
        """Write to ``out``."""
        self.out = out

    def __call__(self, payload: dict[str, Any], body: bytes) -> None:
        """Write ``body`` as one line and flush (a pipe reader sees each payload at once)."""
        self.out.write(body.decode() + "\n")
        self.out.flush()

    def last_seq(self) -> int:
        """Nothing is kept."""
        return 0

    def metrics(self) -> dict[str, Any] | None:
        """No counters of its own."""
        return None

    def describe(self, body: bytes) -> None:
        """Metadata is for the server; a line reader wants payloads only."""

    def alert(self, transition: Transition) -> None:
        """Transitions are logged by the agent; the payloads' ``alerts`` carry the state."""


class FunctionSink(StdoutSink):
    """A plain function ``fn(payload, body)`` as a sink (tests, embedding)."""

    def __init__(self, fn: Any) -> None:
        """Call ``fn`` for each payload."""
        self.fn = fn

    def __call__(self, payload: dict[str, Any], body: bytes) -> None:
        """Hand the payload to the function."""
        self.fn(payload, body)
