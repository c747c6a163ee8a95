"""A pytest plugin for plugin authors, shipped with edgemon-core (entry point ``pytest11``).

Two fixtures, available in any project that has edgemon-core and pytest installed::

    def test_my_collector(edgemon_plugin):
        plugin = edgemon_plugin(my_plugin, "mine", {"threshold": 5})
        tree = plugin.collect()  # its sub-tree, checked by the agent's own payload rules
        assert tree["mine"]["temp_c"] > 0
        payload = plugin.payload()  # a whole payload, validated against the protocol's schema
        units = plugin.metadata()  # key pattern -> Metric (unit, kind, headline)


    def test_my_rule_waits_for_its_dwell(edgemon_plugin, edgemon_clock):
        plugin = edgemon_plugin(my_plugin, "mine")
        hot = {"mine": {"temp_c": 99}}
        assert [a["state"] for a in plugin.alerts(hot)] == ["pending"]  # its for_s has not passed
        edgemon_clock.advance(60)
        assert [a["state"] for a in plugin.alerts(hot)] == ["firing"]

The plugin runs inside a real :class:`~edgemon.agent.Agent` (settings checked against its
``SettingsSpec``, collectors isolated with their timeouts, rules judged by the agent's alert
engine), with state in a temporary directory and nothing published.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edgemon import config
from edgemon.agent import Agent
from edgemon.plugin_check import run_collectors
from edgemon.plugins import make_plugin_manager
from edgemon_protocol import meta
from edgemon_protocol import payload as wire

START = 1_800_000_000.0
"""Where the fake clock starts (2027-01-15 08:00 UTC)."""


class FakeClock:
    """A wall clock that moves only when told: ``clock()`` reads it, ``advance(s)`` moves it."""

    def __init__(self, start: float = START) -> None:
        """Start at ``start`` (epoch seconds)."""
        self.now = start

    def __call__(self) -> float:
        """The current time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


class PluginHarness:
    """One plugin in a real agent (its built-ins too), started; :meth:`close` stops it."""

    def __init__(
        self,
        module: types.ModuleType | object,
        name: str,
        settings: Mapping[str, Any] | None,
        state_dir: Path,
        clock: FakeClock,
    ) -> None:
        """Register ``module`` as plugin ``name`` with ``settings`` (``[plugins.<name>]``) and start it."""
        self.name = name
        self.clock = clock
        state_dir.mkdir(parents=True, exist_ok=True)
        empty = state_dir / "agent.toml"
        empty.write_text("", encoding="utf-8")
        cfg = config.load(empty, environ={}, overrides={"agent": {"state_dir": str(state_dir)}})
        cfg = replace(cfg, plugins={name: dict(settings or {})})
        pm = make_plugin_manager()
        pm.register(module, name=name)
        self.agent = Agent(cfg, pm=pm, clock=clock, keep_alert_state=False)
        self.agent.start()
        record = self.agent.records.get(name)
        if record is None or record.status != "loaded":
            status = "missing" if record is None else f"{record.status}: {record.reason}"
            self.agent.close()
            raise AssertionError(f"plugin {name} did not load ({status})")

    def collect(self) -> dict[str, Any]:
        """Run the plugin's collectors once; its merged sub-tree. Fails on anything the agent would drop."""
        checked = run_collectors(self.agent, self.name, self.agent.config.agent.timeout)
        if checked.collectors == 0:
            raise AssertionError(f"plugin {self.name} registers no collector")
        if checked.problems:
            raise AssertionError("\n".join(checked.problems + checked.tracebacks))
        return checked.tree

    def payload(self) -> dict[str, Any]:
        """One whole cycle (every collector and rule); fails unless it validates against the schema."""
        doc = self.agent.cycle()
        errors = wire.validation_errors(doc)
        if errors:
            raise AssertionError("the payload breaks the protocol schema:\n" + "\n".join(errors))
        return doc

    def metadata(self) -> dict[str, meta.Metric]:
        """The metric metadata the agent would send: key pattern -> :class:`edgemon_protocol.meta.Metric`."""
        _device, entries = meta.parse(self.agent.describe())
        return entries

    def alerts(self, metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Judge ``metrics`` (a metrics tree) with every rule at the fake clock's time; the active alerts."""
        return self.agent.evaluate_rules(metrics, now=self.clock())

    def close(self) -> None:
        """Stop the agent (the plugin's ``edgemon_shutdown`` runs)."""
        self.agent.close()


@pytest.fixture
def edgemon_clock() -> FakeClock:
    """A fake wall clock for rules with ``for_s``/``clear_for_s``: ``edgemon_clock.advance(60)``."""
    return FakeClock()


@pytest.fixture
def edgemon_plugin(tmp_path: Path, edgemon_clock: FakeClock) -> Iterator[Callable[..., PluginHarness]]:
    """A factory: ``edgemon_plugin(module, name, settings=None)`` -> a started :class:`PluginHarness`."""
    made: list[PluginHarness] = []

    def make(module: types.ModuleType | object, name: str, settings: Mapping[str, Any] | None = None) -> PluginHarness:
        harness = PluginHarness(module, name, settings, tmp_path / f"edgemon-{name}-{len(made)}", edgemon_clock)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()
