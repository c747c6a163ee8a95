"""Alerts at the edge through a real agent: thresholds from TOML, plugin rules, restarts, config errors."""

from __future__ import annotations

import json

import pytest

from edgemon import config as config_mod
from edgemon.agent import Agent
from edgemon.config import ConfigError
from edgemon_protocol import thresholds as rules
from edgemon_protocol.alerting import Threshold
from tests.conftest import plugin_module

GAUGE = """
    from edgemon import hookimpl
    level = [50.0]
    @hookimpl
    def edgemon_register_collectors(register):
        register("tank", lambda: {"tank": {"level": level[0]}})
"""


CPU = '[[alerts.threshold]]\nmetric = "cpu-percent"\n'


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def agent_with(pm, make_config, tmp_path, thresholds, clock, plugins=()):
    for name, plugin in plugins:
        pm.register(plugin, name=name)
    cfg = make_config(state_dir=str(tmp_path / "state"))
    cfg = config_mod.Config(agent=cfg.agent, mqtt=cfg.mqtt, thresholds=tuple(thresholds))
    agent = Agent(cfg, pm=pm, clock=clock, monotonic=clock)
    agent.start()
    return agent


def test_a_threshold_fires_after_its_for_and_resolves_below_its_clear_value(pm, make_config, tmp_path):
    clock = Clock()
    tank = plugin_module("tank", GAUGE)
    rule = Threshold("tank_full", "tank-level", above=90, clear=80, for_s=30)
    agent = agent_with(pm, make_config, tmp_path, [rule], clock, [("tank", tank)])
    try:
        assert agent.cycle()["alerts"] == []
        tank.level[0] = 95
        clock.t += 10
        (pending,) = agent.cycle()["alerts"]
        assert (pending["state"], pending["key"], pending["value"]) == ("pending", "tank-level", 95)
        clock.t += 30
        (firing,) = agent.cycle()["alerts"]
        assert firing["state"] == "firing"
        assert firing["since"] == pending["since"], "since is when the condition first held"
        tank.level[0] = 85  # between clear (80) and threshold (90): still firing
        clock.t += 10
        assert agent.cycle()["alerts"][0]["state"] == "firing"
        tank.level[0] = 70
        clock.t += 10
        payload = agent.cycle()
        assert payload["alerts"] == []
        assert payload["metrics"]["agent"]["alerts"]["transitions"] == 3  # pending, firing, resolved
    finally:
        agent.close()


def test_a_firing_alert_and_its_since_survive_a_restart(pm, make_config, tmp_path):
    clock = Clock()
    tank = plugin_module("tank", GAUGE)
    tank.level[0] = 99
    rule = Threshold("tank_full", "tank-level", above=90, for_s=0)
    first = agent_with(pm, make_config, tmp_path, [rule], clock, [("tank", tank)])
    (before,) = first.cycle()["alerts"]
    first.close()
    state = json.loads((tmp_path / "state" / "alerts.json").read_text())
    assert state["thresholds"]["machines"][0]["state"] == "firing"
    pm.unregister(name="tank")
    clock.t += 3600
    second = agent_with(pm, make_config, tmp_path, [rule], clock, [("tank", tank)])
    try:
        (after,) = second.cycle()["alerts"]
        assert (after["state"], after["since"], after["fingerprint"]) == (
            "firing",
            before["since"],
            before["fingerprint"],
        )
        assert second.alerts is not None
        assert second.alerts.transitions == 0, "no second 'firing' after a restart"
    finally:
        second.close()


def test_plugin_rules_get_the_same_dwell(pm, make_config, tmp_path):
    clock = Clock()
    rule = plugin_module(
        "trend",
        """
        from edgemon import hookimpl
        on = [True]
        @hookimpl
        def edgemon_register_alert_rules(register):
            register("trend", lambda m: [{"severity": "warning", "message": "filling", "key": "disk-sda"}]
                     if on[0] else [], for_s=20)
        """,
    )
    agent = agent_with(pm, make_config, tmp_path, [], clock, [("trend", rule)])
    try:
        states = []
        for _ in range(4):
            states.append([a["state"] for a in agent.cycle()["alerts"]])
            clock.t += 10
        rule.on[0] = False
        states.append([a["state"] for a in agent.cycle()["alerts"]])
    finally:
        agent.close()
    assert states == [["pending"], ["pending"], ["firing"], ["firing"], []]


def test_the_shipped_rules_apply_unless_turned_off(tmp_path):
    assert {r.name for r in config_mod.load(None, environ={}).thresholds} == {
        "cpu_high",
        "memory_high",
        "disk_full",
        "gpu_hot",
    }
    cfg = tmp_path / "agent.toml"
    table = '[[alerts.threshold]]\nname = "disk_full"\nmetric = "disk-*"\nabove = 50\n'
    cfg.write_text("[alerts]\ndefaults = false\n\n" + table)
    mine = config_mod.load(cfg, environ={}).thresholds
    assert [(r.name, r.above) for r in mine] == [("disk_full", 50.0)]
    cfg.write_text(table)
    replaced = {r.name: r for r in config_mod.load(cfg, environ={}).thresholds}
    assert replaced["disk_full"].above == 50.0, "a table of a shipped rule's name replaces it"
    assert "cpu_high" in replaced


@pytest.mark.parametrize(
    ("body", "where", "reason"),
    [
        (
            CPU + 'above = 90\nfor = "soon"\n',
            ":4:",
            "for: 'soon' is not a duration",
        ),
        (
            CPU + "above = 90\nclear_above = 95\n",
            ":4:",
            "does not go with above",
        ),
        (
            CPU + "below = 10\nabove = 90\n",
            ":1:",
            "exactly one of above or below",
        ),
        (CPU + 'above = 90\nseverity = "panic"\n', ":1:", "severity"),
        ("[[alerts.threshold]]\nabove = 90\n", ":1:", "metric"),
        (
            CPU + "above = 90\ncolour = 1\n",
            ":4:",
            "unknown key alerts.threshold.colour",
        ),
        (
            '[[alerts.threshold]]\nname = "a"\nmetric = "x"\nabove = 1\n\n'
            '[[alerts.threshold]]\nname = "a"\nmetric = "y"\nabove = 1\n',
            ":7:",
            "used twice",
        ),
        ("[alerts]\nloud = true\n", ":2:", "unknown key alerts.loud"),
    ],
)
def test_a_bad_threshold_names_the_file_line_and_key(tmp_path, body, where, reason):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(body)
    with pytest.raises(ConfigError) as err:
        config_mod.load(cfg, environ={})
    assert f"agent.toml{where}" in str(err.value)
    assert reason in str(err.value)


def test_default_rule_names_come_from_the_metric():
    assert rules.default_name("disk-usage-*-percent", "above") == "disk_usage_percent_above"
    assert rules.default_name("9x", "below") == "m_9x_below"


def test_rules_cli_lists_rules_and_tests_one_live_cycle(tmp_path, agent_env, state_dir):
    from tests.conftest import run_agent

    cfg = tmp_path / "agent.toml"
    cfg.write_text('[[alerts.threshold]]\nname = "answer_big"\nmetric = "example-answer"\nabove = 10\n')
    env = {**agent_env, "EDGEMON_LOAD_PLUGINS": "example"}
    listed = run_agent("-c", str(cfg), "rules", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    names = {r["rule"]: r for r in json.loads(listed.stdout)["rules"]}
    assert {"cpu_high", "disk_full", "answer_big", "example_calls"} <= set(names)
    assert names["example_calls"]["kind"] == "plugin example"
    tested = run_agent("-c", str(cfg), "rules", "test", env=env)
    assert tested.returncode == 0, tested.stderr
    line = next(x for x in tested.stdout.splitlines() if "answer_big" in x)
    assert line.startswith("FIRES")
    assert "example-answer" in line
    once = run_agent("-c", str(cfg), "once", env=env)
    assert once.returncode == 0, once.stderr
    assert [a["rule"] for a in json.loads(once.stdout)["alerts"]] == ["answer_big"]
    assert not (state_dir / "alerts.json").exists(), "a one-shot command keeps no alert state"
