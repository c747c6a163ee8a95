"""The device's metric metadata document, assembled from what collectors declare.

Each collector's ``metrics={pattern: Metric}`` come first, in registration order, then its
``units={leaf: unit}`` shorthand (``<collector>-**-<leaf>``), then the agent's own. A bad entry
(a pattern that is not one, a unit outside the vocabulary) is left out and logged with the plugin's
name; the rest of the document goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from edgemon.registry import Collector
from edgemon_protocol.meta import MAX_ENTRIES, Metric, check_pattern

log = logging.getLogger(__name__)

OLD_UNITS = {"bytes": "B", "bytes/s": "B/s"}
"""Unit spellings of earlier plugins, mapped to the vocabulary."""

AGENT = {
    "agent-cycle_ms": Metric("ms", description="time the last cycle took to collect"),
    "agent-cycles": Metric("count", "counter", "cycles since the agent started"),
    "agent-transport-buffered": Metric("count", description="payloads waiting to be sent"),
    "agent-transport-buffered_bytes": Metric("B", description="bytes waiting to be sent"),
    "agent-transport-oldest_age_s": Metric("s", description="age of the oldest unsent payload"),
    "agent-transport-connected": Metric("bool", description="connected to the broker"),
    "agent-**-time_ms": Metric("ms", description="time the last run took"),
    "agent-**-runs": Metric("count", "counter"),
    "agent-**-errors": Metric("count", "counter"),
    "agent-**-timeouts": Metric("count", "counter"),
}
"""What the agent's own counters (``agent.*``) mean."""


def _metric(value: Any) -> Metric:
    if isinstance(value, Metric):
        return value
    if isinstance(value, Mapping):
        return Metric(**dict(value))
    if isinstance(value, str):
        return Metric(unit=OLD_UNITS.get(value, value))
    raise TypeError(f"expected a Metric, got {type(value).__name__}")


def document(collectors: Iterable[Collector]) -> dict[str, Metric]:
    """``{pattern: Metric}`` of every collector, in the order a lookup tries them."""
    out: dict[str, Metric] = {}
    for collector in collectors:
        declared: list[tuple[str, Any]] = list(collector.metrics.items())
        declared += [(f"{collector.name}-**-{leaf}", unit) for leaf, unit in collector.units.items() if unit]
        for pattern, value in declared:
            try:
                check_pattern(pattern)
                out.setdefault(pattern, _metric(value))
            except (TypeError, ValueError) as exc:
                log.error(
                    "metric metadata left out",
                    extra={
                        "plugin": collector.plugin,
                        "collector": collector.name,
                        "path": str(pattern)[:80],
                        "reason": str(exc),
                    },
                )
    for pattern, metric in AGENT.items():
        out.setdefault(pattern, metric)
    if len(out) > MAX_ENTRIES:
        log.error("metric metadata cut", extra={"reason": f"{len(out)} patterns > {MAX_ENTRIES}"})
        out = dict(list(out.items())[:MAX_ENTRIES])
    return out
