"""Discovery through real entry points, isolation of broken installs, the plugins CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from edgemon import plugins
from edgemon.agent import Agent
from edgemon.config import load
from tests.conftest import AGENT_BIN, run_agent

BROKEN = {
    "edgemon_importfails": """
        import edgemon_this_dependency_is_not_installed
    """,
    "edgemon_raises": """
        from edgemon import hookimpl
        @hookimpl
        def edgemon_register_collectors(register):
            def boom():
                raise OSError(5, "I/O error reading sensor")
            register("raises", boom)
    """,
    "edgemon_hangs": """
        import time
        from edgemon import hookimpl
        @hookimpl
        def edgemon_register_collectors(register):
            def stuck():
                time.sleep(3600)
            register("hangs", stuck, timeout=0.3)
    """,
    "edgemon_badstart": """
        from edgemon import hookimpl
        @hookimpl
        def edgemon_startup():
            raise RuntimeError("cannot open /dev/thing")
        @hookimpl
        def edgemon_register_collectors(register):
            register("badstart", lambda: {"badstart": {"x": 1}})
    """,
}
BROKEN_EPS = {
    "importfails": "edgemon_importfails",
    "raises": "edgemon_raises",
    "hangs": "edgemon_hangs",
    "badstart": "edgemon_badstart",
}


@pytest.fixture
def broken(fake_install):
    return fake_install("edgemon-broken", BROKEN_EPS, BROKEN)


@pytest.mark.slow  # a process of its own: end to end
def test_third_party_plugin_is_discovered_through_its_entry_point(agent_env):
    result = run_agent("plugins", "--json", env=agent_env)
    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert listed["example"]["dist"] == "edgemon-example"
    assert listed["example"]["version"] == "1.2.3"
    assert listed["example"]["status"] == "loaded"
    assert set(listed["example"]["hooks"]) == {
        "edgemon_register_alert_rules",
        "edgemon_register_collectors",
        "edgemon_settings_spec",
    }
    assert {"memory", "system", "cpu", "disk", "gpu-nvml"} <= set(listed)
    assert listed["memory"]["builtin"]
    assert listed["memory"]["dist"] == "edgemon-core"
    assert listed["gpu-nvml"]["status"] == "unavailable"
    assert "NVML" in listed["gpu-nvml"]["reason"]

    result = run_agent("once", env=agent_env)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["metrics"]["example"] == {"answer": 42, "calls": 1, "label": "hello"}
    states = doc["metrics"]["agent"]["plugin"]
    assert states["example"] == {"status": "loaded", "version": "1.2.3"}
    assert states["gpu_nvml"]["status"] == "unavailable"
    assert "NVML" in states["gpu_nvml"]["reason"]


def test_plugin_settings_reach_the_plugin(tmp_path, agent_env):
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[plugins.example]\nanswer = 7\nalert_above = 0\n")
    doc = json.loads(run_agent("once", "--config", str(cfg), env=agent_env).stdout)
    assert doc["metrics"]["example"]["answer"] == 7
    (alert,) = doc["alerts"]
    assert {k: alert[k] for k in ("rule", "severity", "message", "key", "value", "state")} == {
        "rule": "example.calls",
        "severity": "warning",
        "message": "1 calls > 0",
        "key": "example-calls",
        "value": 1,
        "state": "firing",
    }


@pytest.mark.slow  # a process of its own: end to end
def test_broken_installs_are_reported_and_the_rest_loads(broken, agent_env):
    pm = plugins.make_plugin_manager()
    records = {r.name: r for r in plugins.load_plugins(pm)}
    assert records["importfails"].status == "failed"
    assert "ModuleNotFoundError" in (records["importfails"].reason or "")
    for name in ("raises", "hangs", "badstart", "cpu", "disk", "example", "memory"):
        assert records[name].status == "loaded", name

    result = run_agent("plugins", "--json", env=agent_env)
    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert listed["importfails"]["status"] == "failed"
    assert listed["importfails"]["dist"] == "edgemon-broken"
    assert listed["badstart"]["status"] == "failed"
    assert "RuntimeError: cannot open /dev/thing" in listed["badstart"]["reason"]

    t0 = time.monotonic()
    result = run_agent("once", env=agent_env)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - t0 < 15
    metrics = json.loads(result.stdout)["metrics"]
    assert {"cpu", "memory", "disk", "system", "example"} <= set(metrics)
    assert not {"raises", "hangs", "badstart"} & set(metrics)
    assert metrics["agent"]["collectors"]["raises"]["errors"] == 1
    assert metrics["agent"]["collectors"]["hangs"]["timeouts"] == 1
    assert metrics["agent"]["plugins"]["failed"] == 2
    assert "I/O error reading sensor" in result.stderr


@pytest.mark.slow
def test_run_keeps_going_with_broken_plugins_and_stops_on_sigterm(broken, agent_env):
    proc = subprocess.Popen(
        [str(AGENT_BIN), "run", "--interval", "0.5", "--timeout", "0.3", "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, **agent_env},
    )
    try:
        lines = [proc.stdout.readline() for _ in range(4)]  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    docs = [json.loads(line) for line in lines]
    assert [d["seq"] for d in docs] == [1, 2, 3, 4]
    assert docs[-1]["metrics"]["agent"]["collectors"]["hangs"]["timeouts"] == 4
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    raises = [r for r in logs if r.get("collector") == "raises"]
    assert len(raises) == 1, "logged once per distinct error"
    assert raises[0]["plugin"] == "raises"
    assert raises[0]["device"] == "cli-device"
    assert any(r["msg"] == "stopping" and r["reason"] == "SIGTERM" for r in logs)


def test_load_plugins_env_restricts(broken, monkeypatch):
    assert plugins.allowed_from_env({}) is None
    assert plugins.allowed_from_env({"EDGEMON_LOAD_PLUGINS": ""}) == set()
    assert plugins.allowed_from_env({"EDGEMON_LOAD_PLUGINS": "cpu, disk"}) == {"cpu", "disk"}
    pm = plugins.make_plugin_manager()
    records = {r.name: r for r in plugins.load_plugins(pm, allowed={"cpu"})}
    assert records["cpu"].status == "loaded"
    assert records["memory"].status == "loaded"  # built-ins always
    assert records["importfails"].status == "disabled"  # never imported
    assert records["disk"].status == "disabled"
    assert pm.is_blocked("disk")


def test_load_plugins_env_empty_means_builtins_only(agent_env):
    result = run_agent("once", env={**agent_env, "EDGEMON_LOAD_PLUGINS": ""})
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["metrics"]) == {"agent", "memory", "net", "system"}


def test_enabled_false_disables_a_plugin(tmp_path, agent_env):
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[plugins.disk]\nenabled = false\n")
    agent = Agent(load(cfg, environ=agent_env))
    records = {r.name: r for r in agent.load()}
    assert records["disk"].status == "disabled"
    assert "enabled = false" in (records["disk"].reason or "")


def test_plugins_test_prints_exactly_the_subtree(agent_env):
    result = run_agent("plugins", "test", "example", env=agent_env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"example": {"answer": 42, "calls": 1, "label": "hello"}}

    result = run_agent("plugins", "test", "nope", env=agent_env)
    assert result.returncode == 2
    assert "no plugin named 'nope'" in result.stderr


def test_plugins_test_reports_what_breaks_the_payload_rules(fake_install, agent_env):
    fake_install(
        "edgemon-sloppy",
        {"sloppy": "edgemon_sloppy"},
        {
            "edgemon_sloppy": """
            from edgemon import hookimpl
            @hookimpl
            def edgemon_register_collectors(register):
                register("sloppy", lambda: {"sloppy": {"bad-key": 1, "values": [1, 2]}})
            """
        },
    )
    result = run_agent("plugins", "test", "sloppy", env=agent_env)
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"sloppy": {}}, "what breaks a rule is not in the tree"
    assert "problem: collector sloppy: sloppy.bad-key: key holds '-'" in result.stderr
    assert "problem: collector sloppy: sloppy.values: arrays are not allowed" in result.stderr


def test_plugins_human_listing(broken, agent_env):
    result = run_agent("plugins", env=agent_env)
    assert result.returncode == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if not line.startswith(" ")}
    assert "failed" in lines["importfails"]
    assert "edgemon-broken 0.1" in lines["importfails"]
    assert "unavailable" in lines["gpu-nvml"]


def test_check_pending_catches_misspelt_hooks(pm):
    from tests.conftest import plugin_module

    typo = plugin_module(
        "t",
        """
        from edgemon import hookimpl
        @hookimpl
        def edgemon_register_colectors(register):
            pass
        """,
    )
    pm.register(typo, name="typo")
    from pluggy import PluginValidationError

    with pytest.raises(PluginValidationError, match="unknown hook"):
        pm.check_pending()


def test_typo_hook_in_an_installed_plugin_fails_only_that_plugin(fake_install):
    fake_install(
        "edgemon-typo",
        {"typo": "edgemon_typo"},
        {
            "edgemon_typo": """
            from edgemon import hookimpl
            @hookimpl
            def edgemon_register_colectors(register):
                pass
            """
        },
    )
    pm = plugins.make_plugin_manager()
    records = {r.name: r for r in plugins.load_plugins(pm)}
    assert records["typo"].status == "failed"
    assert "edgemon_register_colectors" in (records["typo"].reason or "")
    assert records["cpu"].status == "loaded"


def test_device_id_hook_first_result_wins(make_agent):
    from tests.conftest import plugin_module

    naming = plugin_module(
        "n",
        """
        from edgemon import hookimpl
        @hookimpl
        def edgemon_device_id(default):
            return "serial-" + default
        """,
    )
    agent = make_agent(("naming", naming))
    assert agent.cycle()["device_id"] == "serial-test-device"


def test_shutdown_is_called_for_started_plugins_only(make_agent):
    from tests.conftest import plugin_module

    ok = plugin_module(
        "ok",
        """
        from edgemon import hookimpl
        events = []
        @hookimpl
        def edgemon_startup(settings):
            events.append("start")
        @hookimpl
        def edgemon_shutdown():
            events.append("stop")
        """,
    )
    gone = plugin_module(
        "gone",
        """
        from edgemon import hookimpl, PluginUnavailable
        events = []
        @hookimpl
        def edgemon_startup():
            raise PluginUnavailable("no such device")
        @hookimpl
        def edgemon_shutdown():
            events.append("stop")
        """,
    )
    agent = make_agent(("ok", ok), ("gone", gone))
    assert agent.records["gone"].status == "unavailable"
    assert agent.records["gone"].reason == "no such device"
    agent.close()
    assert ok.events == ["start", "stop"]
    assert gone.events == []
