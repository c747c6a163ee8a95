"""The example plugin through a real agent: its sub-tree, its metadata, its settings and its rule."""

from __future__ import annotations

import json
from pathlib import Path

import edgemon_example
from edgemon import config
from edgemon.agent import Agent
from edgemon.plugins import make_plugin_manager
from edgemon_protocol import meta

HERE = Path(__file__).resolve().parents[1]


def agent(tmp_path: Path, **plugin_settings: object) -> Agent:
    pm = make_plugin_manager()
    pm.register(edgemon_example, name="example")
    cfg = config.load(HERE / "agent.toml", environ={}, overrides={"agent": {"state_dir": str(tmp_path)}})
    plugins = {"example": {**cfg.plugins["example"], **plugin_settings}}
    a = Agent(config.Config(agent=cfg.agent, mqtt=cfg.mqtt, plugins=plugins), pm=pm)
    a.start()
    return a


def test_the_collector_reports_the_configured_answer(tmp_path):
    a = agent(tmp_path)
    try:
        payload = a.cycle()
    finally:
        a.close()
    assert payload["metrics"]["example"]["answer"] == 7
    assert payload["metrics"]["agent"]["plugin"]["example"]["status"] == "loaded"


def test_the_metadata_names_a_unit_and_a_headline(tmp_path):
    a = agent(tmp_path)
    try:
        _device, entries = meta.parse(a.describe())
    finally:
        a.close()
    assert entries["example-answer"] == meta.Metric("count", headline="Answer", description="the configured answer")
    assert entries["example-calls"].kind == "counter"


def test_the_rule_fires_past_its_limit(tmp_path):
    quiet, loud = agent(tmp_path / "a", alert_above=10**9), agent(tmp_path / "b", alert_above=0)
    try:
        assert quiet.cycle()["alerts"] == []
        alerts = loud.cycle()["alerts"]
    finally:
        quiet.close()
        loud.close()
    assert [a["rule"] for a in alerts] == ["example.calls"]
    assert json.loads(json.dumps(alerts))[0]["key"] == "example-calls"
