"""Failure isolation: raising, hanging and misbehaving collectors never stop a cycle."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from edgemon import hookimpl
from tests.conftest import plugin_module


class Collectors:
    """A plugin whose collectors misbehave on demand."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.fail_with: Exception | None = RuntimeError("sensor bus error")

    @hookimpl
    def edgemon_register_collectors(self, register):
        register("good", lambda: {"good": {"value": 1}})
        register("bad", self.bad)
        register("hang", self.hang, timeout=0.2)

    def bad(self):
        if self.fail_with is not None:
            raise self.fail_with
        return {"bad": {"value": 2}}

    def hang(self):
        self.release.wait(30)
        return {"hang": {"value": 3}}


@pytest.fixture
def collectors():
    plugin = Collectors()
    yield plugin
    plugin.release.set()


def test_raising_collector_is_left_out_and_counted(make_agent, collectors, caplog):
    agent = make_agent(("misbehaving", collectors), interval=5, timeout=1)
    with caplog.at_level(logging.ERROR, logger="edgemon"):
        first = agent.cycle()
        second = agent.cycle()
    for payload in (first, second):
        assert payload["metrics"]["good"] == {"value": 1}
        assert "bad" not in payload["metrics"]
    assert second["metrics"]["agent"]["collectors"]["bad"]["errors"] == 2
    failures = [r for r in caplog.records if getattr(r, "collector", None) == "bad"]
    assert len(failures) == 1, "the same error is logged once, not every cycle"
    assert "RuntimeError: sensor bus error" in failures[0].reason

    collectors.fail_with = ValueError("another")
    with caplog.at_level(logging.ERROR, logger="edgemon"):
        agent.cycle()
    assert len([r for r in caplog.records if getattr(r, "collector", None) == "bad"]) == 2

    collectors.fail_with = None
    assert agent.cycle()["metrics"]["bad"] == {"value": 2}, "a collector that recovers is back next cycle"


def test_hanging_collector_is_abandoned_and_the_cycle_goes_on(make_agent, collectors):
    agent = make_agent(("misbehaving", collectors), interval=5, timeout=1)
    t0 = time.monotonic()
    payload = agent.cycle()
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0, f"cycle waited {elapsed:.2f}s for a collector with a 0.2s timeout"
    assert payload["metrics"]["good"] == {"value": 1}
    assert "hang" not in payload["metrics"]
    assert payload["metrics"]["agent"]["collectors"]["hang"]["timeouts"] == 1

    # Still stuck: skipped without waiting again, counted again, no new thread.
    threads = threading.active_count()
    t0 = time.monotonic()
    payload = agent.cycle()
    assert time.monotonic() - t0 < 0.15
    assert payload["metrics"]["agent"]["collectors"]["hang"]["timeouts"] == 2
    assert threading.active_count() == threads

    collectors.release.set()
    time.sleep(0.05)
    assert agent.cycle()["metrics"]["hang"] == {"value": 3}


def test_collector_returning_a_non_dict_is_an_error(make_agent):
    plugin = plugin_module(
        "p",
        """
        from edgemon import hookimpl
        @hookimpl
        def edgemon_register_collectors(register):
            register("odd", lambda: [1, 2, 3])
        """,
    )
    agent = make_agent(("odd", plugin))
    payload = agent.cycle()
    assert "odd" not in payload["metrics"]
    assert payload["metrics"]["agent"]["collectors"]["odd"]["errors"] == 1


def test_per_plugin_interval_runs_collector_less_often(make_agent):
    plugin = plugin_module(
        "p",
        """
        from edgemon import hookimpl
        calls = []
        @hookimpl
        def edgemon_register_collectors(register):
            def slow():
                calls.append(1)
                return {"slow": {"n": len(calls)}}
            register("slow", slow)
        """,
    )
    calls = plugin.calls
    agent = make_agent(("slowplugin", plugin), plugins={"slowplugin": {"interval": 3600}})
    assert agent.cycle()["metrics"]["slow"] == {"n": 1}
    assert "slow" not in agent.cycle()["metrics"]
    assert len(calls) == 1


def test_raising_alert_rule_is_isolated(make_agent):
    plugin = plugin_module(
        "p",
        """
        from edgemon import hookimpl
        @hookimpl
        def edgemon_register_collectors(register):
            register("x", lambda: {"x": {"v": 95}})
        @hookimpl
        def edgemon_register_alert_rules(register):
            register("broken", lambda m: 1 / 0)
            register("high_x", lambda m: [{"rule": "x.high", "severity": "critical",
                                           "message": "x above 90", "value": m["x"]["v"]}]
                                          if m["x"]["v"] > 90 else [])
        """,
    )
    agent = make_agent(("rules", plugin))
    payload = agent.cycle()
    (alert,) = payload["alerts"]
    assert {k: alert[k] for k in ("rule", "severity", "message", "value", "state")} == {
        "rule": "x.high",
        "severity": "critical",
        "message": "x above 90",
        "value": 95,
        "state": "firing",
    }
    assert payload["metrics"]["agent"]["rules"]["broken"]["errors"] == 1
    assert payload["metrics"]["agent"]["rules"]["high_x"]["runs"] == 1
