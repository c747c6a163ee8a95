"""The trend rule alone, and through a real agent with the disk numbers of a filling filesystem."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import edgemon_disk_trend
from edgemon import config, hookimpl
from edgemon.agent import Agent
from edgemon.plugins import make_plugin_manager


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def usage(percent: float) -> dict:
    return {"disk": {"usage": {"sda1": {"percent": percent, "mount": "/"}}}}


def test_the_fit_and_the_horizon():
    assert edgemon_disk_trend.slope([(0, 10), (10, 20), (20, 30)]) == 1.0
    clock = Clock()
    rule = edgemon_disk_trend.DiskTrend(horizon_hours=1, window=10, clock=clock)
    verdicts = []
    for percent in (50, 51, 52, 53):  # +1 % a minute: 47 minutes to full
        verdicts.append(rule(usage(percent)))
        clock.t += 60
    assert verdicts[:2] == [[], []], "three samples before any forecast"
    (cond,) = verdicts[3]
    assert cond["key"] == "disk-usage-sda1-percent"
    assert 0.7 < cond["value"] < 0.8
    slow = edgemon_disk_trend.DiskTrend(horizon_hours=1, window=10, clock=clock)
    for percent in (50, 50.01, 50.02):  # days to full: nothing
        assert slow(usage(percent)) == []
        clock.t += 60


def test_through_an_agent_the_forecast_becomes_an_alert_after_for(tmp_path):
    clock = Clock()
    level = [50.0]

    class Disk:
        @hookimpl
        def edgemon_register_collectors(self, register):
            register("disk", lambda: usage(level[0]))

    pm = make_plugin_manager()
    pm.register(Disk(), name="disk")
    pm.register(edgemon_disk_trend, name="disk_trend")
    cfg = config.load(None, environ={}, overrides={"agent": {"state_dir": str(tmp_path), "client_id": "d"}})
    plugins = {"disk_trend": {"horizon_hours": 1.0, "for": 120.0}}
    edgemon_disk_trend_clock = clock  # the rule times its samples with the agent's clock in this test
    agent = Agent(config.Config(agent=cfg.agent, mqtt=cfg.mqtt, plugins=plugins, thresholds=()), pm=pm, clock=clock)
    agent.start()
    try:
        rule = next(r for r in agent.rules if r.name == "disk_trend")
        rule.fn.clock = edgemon_disk_trend_clock  # type: ignore[attr-defined]
        states = []
        for _ in range(7):
            states.append([a["state"] for a in agent.cycle()["alerts"]])
            level[0] += 1
            clock.t += 60
        level[0] = 10  # cleaned up: the forecast is gone, the alert resolves
        for _ in range(3):
            states.append([a["state"] for a in agent.cycle()["alerts"]])
            clock.t += 60
    finally:
        agent.close()
    assert states[:2] == [[], []]
    assert states[2:5] == [["pending"], ["pending"], ["firing"]], "for = 120 s of a steady forecast"
    assert states[-1] == []
