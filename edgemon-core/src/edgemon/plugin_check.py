"""Run one plugin's collectors once and check what they return against the payload rules.

Shared by ``edgemon-agent plugins test NAME`` and the pytest plugin (:mod:`edgemon.testing`): both
need exactly the agent's own judgement (``edgemon.sanitize``), nothing looser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgemon import isolate, sanitize
from edgemon import payload as payload_mod
from edgemon.host import PluginHost


@dataclass
class Checked:
    """A plugin's merged sub-tree, what was wrong with it, and the tracebacks of raising collectors."""

    tree: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    collectors: int = 0


def run_collectors(host: PluginHost, name: str, default_timeout: float) -> Checked:
    """Call each collector of plugin ``name`` once (isolated, with its timeout); merge and check."""
    out = Checked()
    budget = sanitize.Budget()
    for collector in (c for c in host.collectors if c.plugin == name):
        out.collectors += 1
        outcome = isolate.call(collector.fn, collector.timeout or default_timeout, name)
        if outcome.error is not None:
            out.problems.append(f"collector {collector.name} raised {outcome.reason}")
            out.tracebacks.append(isolate.format_traceback(outcome.error))
            continue
        if not outcome.ok:
            out.problems.append(f"collector {collector.name} {outcome.reason}")
            continue
        if not isinstance(outcome.value, Mapping):
            out.problems.append(f"collector {collector.name} returned {type(outcome.value).__name__}, not a dict")
            continue
        clean, drops = sanitize.clean_tree(outcome.value, budget)
        out.problems += [f"collector {collector.name}: {d.path}: {d.reason} (dropped)" for d in drops]
        merged, clashes = payload_mod.merge([(collector.name, out.tree), (collector.name, clean)])
        out.problems += [f"collector {collector.name}: {c.path}: written twice (clash)" for c in clashes]
        out.tree = merged
    return out
