"""One test per hook, named ``test_hook_<hook>`` (datasette's convention; test_meta.py checks it).

Each registers a plugin that implements the hook and checks what the agent did with it.
"""

from __future__ import annotations

import pytest

from edgemon import Metric, PluginUnavailable, SettingsSpec, hookimpl
from edgemon.config import ConfigError


def test_hook_edgemon_settings_spec(make_agent):
    class Plugin:
        @hookimpl
        def edgemon_settings_spec(self):
            return SettingsSpec({"port": 9100}, validate=self.check)

        @staticmethod
        def check(settings):
            if not 0 < settings["port"] < 65536:
                raise ValueError("port must be 1-65535")

    agent = make_agent(("spec", Plugin()), plugins={"spec": {"port": 9200}})
    assert agent.settings["spec"]["port"] == 9200
    with pytest.raises(ConfigError, match=r"plugins\.spec2: port must be 1-65535"):
        make_agent(("spec2", Plugin()), plugins={"spec2": {"port": 0}})


def test_hook_edgemon_startup(make_agent):
    seen = []

    class Ready:
        @hookimpl
        def edgemon_startup(self, settings):
            seen.append(dict(settings))

    class Absent:
        @hookimpl
        def edgemon_startup(self):
            raise PluginUnavailable("no sensor on this board")

    agent = make_agent(("ready", Ready()), ("absent", Absent()))
    assert seen[0]["enabled"] is True
    assert agent.records["ready"].status == "loaded"
    assert (agent.records["absent"].status, agent.records["absent"].reason) == (
        "unavailable",
        "no sensor on this board",
    )


def test_hook_edgemon_register_collectors(make_agent):
    class Plugin:
        @hookimpl
        def edgemon_register_collectors(self, register):
            register("answer", lambda: {"answer": {"value": 42}}, metrics={"answer-value": Metric("count")})

    agent = make_agent(("answer", Plugin()))
    assert agent.cycle()["metrics"]["answer"] == {"value": 42}
    assert [c.name for c in agent.collectors if c.plugin == "answer"] == ["answer"]


def test_hook_edgemon_register_alert_rules(make_agent):
    class Plugin:
        @hookimpl
        def edgemon_register_alert_rules(self, register):
            register("always", lambda metrics: [{"rule": "always", "severity": "info", "message": "hello"}])

    agent = make_agent(("rules", Plugin()))
    (alert,) = agent.cycle()["alerts"]
    assert (alert["rule"], alert["severity"], alert["message"], alert["state"]) == ("always", "info", "hello", "firing")


def test_hook_edgemon_device_id(make_agent):
    class Plugin:
        @hookimpl
        def edgemon_device_id(self, default):
            return f"serial-{len(default)}"

    agent = make_agent(("ids", Plugin()), client_id="cfg-id")
    assert agent.device_id == "serial-6"
    assert agent.cycle()["device_id"] == "serial-6"


def test_hook_edgemon_shutdown(make_agent):
    calls = []

    class Plugin:
        @hookimpl
        def edgemon_shutdown(self):
            calls.append("down")

    agent = make_agent(("bye", Plugin()))
    agent.close()
    assert calls == ["down"]
