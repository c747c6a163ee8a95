"""What plugins hand to the core: collectors, alert rules and settings specs."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgemon_protocol.ids import safe_key
from edgemon_protocol.meta import KINDS, UNITS, Metric

__all__ = ["KINDS", "UNITS", "Metric", "safe_key"]

Tree = dict[str, Any]
"""A metrics sub-tree: nested dicts whose leaves are numbers, booleans, strings or None."""

CollectFn = Callable[[], Mapping[str, Any]]
RuleFn = Callable[[Mapping[str, Any]], list[dict[str, Any]]]

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
"""Collector and rule names: they become metric keys, so no ``-`` (the flattening separator)."""


@dataclass(frozen=True)
class Collector:
    """One registered collector.

    Attributes:
        name: unique collector name (``cpu``), used in self-metrics and logs.
        plugin: the plugin that registered it.
        fn: returns the namespaced sub-tree.
        interval: seconds between runs; ``None`` runs it every cycle.
        timeout: seconds after which a run is abandoned; ``None`` uses the agent's.
        metrics: what the values mean: ``{flat key or pattern: Metric(...)}``, e.g.
            ``{"disk-usage-*-percent": Metric("%", headline="Disk")}``; ``*`` matches one level of the
            key, ``**`` any number. Sent to the server, which formats and charts by unit.
        units: shorthand for ``metrics``: ``{"percent": "%"}`` gives every leaf named ``percent``
            under the collector's key that unit (``<name>-**-percent``).
    """

    name: str
    plugin: str
    fn: CollectFn
    interval: float | None = None
    timeout: float | None = None
    units: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, Metric] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """One registered local alert rule.

    Attributes:
        name: unique rule name.
        plugin: the plugin that registered it.
        fn: ``fn(metrics) -> list[condition]``: the conditions active this cycle, each
            ``{"severity", "message", "key"?, "value"?, "rule"?}``; one alert per (rule, key).
        for_s: a condition must hold this long before its alert fires.
        clear_for_s: ...and be gone this long before it resolves.
    """

    name: str
    plugin: str
    fn: RuleFn
    for_s: float = 0.0
    clear_for_s: float = 0.0


@dataclass(frozen=True)
class SettingsSpec:
    """A plugin's configuration section: every allowed key with its default.

    ``validate`` receives the merged settings and raises ``ValueError`` with a
    message naming the key when something is wrong.
    """

    defaults: Mapping[str, Any]
    validate: Callable[[Mapping[str, Any]], None] | None = None


class RegisterCollector(Protocol):
    """Signature of the ``register`` callback given to ``edgemon_register_collectors``."""

    def __call__(
        self,
        name: str,
        fn: CollectFn,
        *,
        interval: float | None = None,
        timeout: float | None = None,
        units: Mapping[str, str] | None = None,
        metrics: Mapping[str, Metric] | None = None,
    ) -> None:
        """Register ``fn`` as collector ``name`` (lower-case, digits, ``_``); see :class:`Collector`."""


class RegisterRule(Protocol):
    """Signature of the ``register`` callback given to ``edgemon_register_alert_rules``."""

    def __call__(self, name: str, fn: RuleFn, *, for_s: float = 0.0, clear_for_s: float = 0.0) -> None:
        """Register ``fn`` as alert rule ``name``; see :class:`Rule`."""
