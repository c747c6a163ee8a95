"""Whatever a plugin does or returns, the agent keeps its interval and its other plugins' data."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from edgemon import hookimpl, payload, sanitize
from edgemon_protocol.ids import KEY_RE
from tests.conftest import AGENT_BIN, plugin_module, run_agent

# -- what a plugin may hand back ----------------------------------------------------------

KEYS = st.one_of(
    st.from_regex(r"[A-Za-z0-9_]{1,64}", fullmatch=True),
    st.text(max_size=70),
    st.sampled_from(["eth0-if", "a.b", "", "x" * 65, "\ud800", "naïve"]),
    st.integers(-3, 3),
)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**1100, -(2**2000), 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),
    st.sampled_from(["x" * 257, "nul\x00here", "lone \udc80 surrogate", "ok"]),
    st.lists(st.integers(), max_size=3),
    st.tuples(st.integers()),
    st.builds(object),
    st.builds(Decimal, st.sampled_from(["1.5", "NaN", "-Infinity", "1e400"])),
)
TREES = st.recursive(LEAVES, lambda children: st.dictionaries(KEYS, children, max_size=5), max_leaves=30)
ALERTS = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=5),
    st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {
                    "severity": st.sampled_from(["info", "warning", "critical", "high", 3, None]),
                    "message": st.one_of(st.text(max_size=1100), st.integers(), st.just("x" * 2000)),
                },
                optional={
                    "rule": st.sampled_from(["cpu.high", "Bad Rule", "", 7]),
                    "value": st.one_of(st.floats(allow_nan=True), st.integers(), st.text(max_size=3), st.none()),
                    "metric": st.one_of(st.text(max_size=300), st.integers()),
                    "extra": st.integers(),
                },
            ),
            TREES,
        ),
        max_size=4,
    ),
)


def count_items(value: Any, depth: int = 1) -> int:
    """What the checks must account for: each leaf, each bad key, each too-deep object counts once."""
    if not isinstance(value, Mapping):
        return 1
    total = 0
    for key, sub in value.items():
        if not isinstance(key, str) or not KEY_RE.fullmatch(key):
            total += 1
        elif isinstance(sub, Mapping):
            total += 1 if depth >= sanitize.MAX_DEPTH else count_items(sub, depth + 1)
        else:
            total += 1
    return total


def count_leaves(value: Any) -> int:
    if not isinstance(value, Mapping):
        return 1
    return sum(count_leaves(v) for v in value.values())


class Wild:
    """A plugin that returns whatever the test sets."""

    def __init__(self) -> None:
        self.trees: list[Any] = [None, None, None]
        self.alerts: Any = None

    @hookimpl
    def edgemon_register_collectors(self, register):
        register("good", lambda: {"good": {"value": 1.5, "name": "fine"}})
        for i in range(len(self.trees)):
            register(f"wild{i}", lambda i=i: self.trees[i])

    @hookimpl
    def edgemon_register_alert_rules(self, register):
        register("wild_rule", lambda metrics: self.alerts)


@pytest.mark.slow
def test_any_plugin_output_gives_a_valid_payload_and_the_drop_counters_add_up(make_agent):
    wild = Wild()
    agent = make_agent(("wild", wild), interval=10)
    before: dict[str, Any] = {k: dict.fromkeys(range(3), 0) for k in ("dropped", "errors", "clashes")}
    before["rule"] = 0

    @given(trees=st.lists(st.one_of(TREES, st.dictionaries(KEYS, TREES, max_size=4)), min_size=3, max_size=3),
           alerts=ALERTS)  # fmt: skip
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def check(trees, alerts):
        # wild0's tree is the whole sub-tree (its top-level keys are metrics keys); the others are namespaced.
        wild.trees[:] = [tree if i == 0 else {f"wild{i}": tree} for i, tree in enumerate(trees)]
        wild.alerts = alerts
        doc = agent.cycle()
        body = payload.dumps(doc)  # serialises: no NaN, no unknown type
        assert payload.validation_errors(json.loads(body)) == []
        assert doc["metrics"]["good"] == {"value": 1.5, "name": "fine"}, "one plugin's output never costs another's"
        stats = doc["metrics"]["agent"]["collectors"]
        for i, returned in enumerate(wild.trees):
            s = stats[f"wild{i}"]
            dropped, errors, clashes = (s[k] - before[k][i] for k in ("dropped", "errors", "clashes"))
            for k in ("dropped", "errors", "clashes"):
                before[k][i] = s[k]
            if not isinstance(returned, Mapping):
                assert errors == 1, f"a {type(returned).__name__} from a collector is an error"
                continue
            shared = {"good", "agent", "wild1", "wild2"} & {k for k in returned if isinstance(k, str)}
            if clashes or (i == 0 and shared):
                continue  # merged with another collector's keys: counted as clashes, not drops
            kept = sum(count_leaves(doc["metrics"][k]) for k in returned if isinstance(k, str) and k in doc["metrics"])
            assert kept + dropped == count_items(returned), (returned, doc["metrics"])
        rule_dropped = doc["metrics"]["agent"]["rules"]["wild_rule"]["dropped"] - before["rule"]
        before["rule"] = doc["metrics"]["agent"]["rules"]["wild_rule"]["dropped"]
        if isinstance(alerts, list):
            # One alert per (rule, key): conditions naming the same one are one alert, not a drop.
            assert len(doc["alerts"]) <= len(alerts)
            assert rule_dropped >= 0
        for alert in doc["alerts"]:
            assert alert["severity"] in sanitize.SEVERITIES
            assert "value" not in alert or alert["value"] is None or math.isfinite(alert["value"])

    check()


def test_bad_keys_drop_that_key_only_and_are_logged_once(make_agent, caplog):
    plugin = plugin_module(
        "net",
        """
        from edgemon import hookimpl
        @hookimpl
        def edgemon_register_collectors(register):
            register("net", lambda: {"net": {"eth0-if": {"rx": 1}, "lo": {"rx": 2, "mtu": float("inf")},
                                             "names": ["a", "b"], "banner": "x" * 300}})
        @hookimpl
        def edgemon_register_alert_rules(register):
            register("loud", lambda m: [{"severity": "high", "message": "?"},
                                        {"severity": "warning", "message": "nan", "value": float("nan")}])
        """,
    )
    agent = make_agent(("net", plugin))
    with caplog.at_level(logging.ERROR, logger="edgemon"):
        first = agent.cycle()
        second = agent.cycle()
    assert first["metrics"]["net"] == {"lo": {"rx": 2}}
    assert [(a["rule"], a["severity"], a["message"]) for a in first["alerts"]] == [("loud", "warning", "nan")]
    assert second["metrics"]["agent"]["collectors"]["net"]["dropped"] == 8
    assert second["metrics"]["agent"]["rules"]["loud"]["dropped"] == 4
    drops = [r for r in caplog.records if r.getMessage().startswith("value dropped")]
    assert {(r.plugin, r.path) for r in drops} == {
        ("net", "net.eth0-if"),
        ("net", "net.lo.mtu"),
        ("net", "net.names"),
        ("net", "net.banner"),
        ("net", "alert.severity"),
        ("net", "alert.value"),
    }
    assert len(drops) == 6, "each (plugin, key, reason) is logged once, not every cycle"


def test_an_oversized_payload_loses_its_largest_subtree_not_everything(make_agent, caplog):
    plugin = plugin_module(
        "big",
        """
        from edgemon import hookimpl
        @hookimpl
        def edgemon_register_collectors(register):
            register("huge", lambda: {"huge": {f"k{i}": "x" * 250 for i in range(700)}})
            register("small", lambda: {"small": {"v": 1}})
        """,
    )
    agent = make_agent(("big", plugin))
    with caplog.at_level(logging.ERROR, logger="edgemon"):
        doc, body = agent.cycle_body()
    assert len(body) <= payload.MAX_BYTES
    assert "huge" not in doc["metrics"]
    assert doc["metrics"]["small"] == {"v": 1}
    assert doc["metrics"]["agent"]["payload_drops"] == 1
    assert any(r.getMessage().startswith("payload too large") and r.path == "huge" for r in caplog.records)


@pytest.mark.parametrize(
    "body",
    ["raise SystemExit(3)", "raise KeyboardInterrupt", "import sys; sys.exit()", "raise GeneratorExit"],
)
def test_base_exceptions_in_a_collector_or_rule_are_the_plugins_failure(make_agent, body):
    plugin = plugin_module(
        "exits",
        f"""
        from edgemon import hookimpl
        def bad(*args):
            {body}
        @hookimpl
        def edgemon_register_collectors(register):
            register("exits", bad)
            register("fine", lambda: {{"fine": {{"v": 1}}}})
        @hookimpl
        def edgemon_register_alert_rules(register):
            register("exits_rule", bad)
        """,
    )
    agent = make_agent(("exits", plugin))
    doc = agent.cycle()
    doc = agent.cycle()
    assert doc["metrics"]["fine"] == {"v": 1}
    assert doc["metrics"]["agent"]["collectors"]["exits"]["errors"] == 2
    assert doc["metrics"]["agent"]["rules"]["exits_rule"]["errors"] == 2


def test_time_ms_is_each_collectors_own(make_agent):
    plugin = plugin_module(
        "timing",
        """
        import time
        from edgemon import hookimpl
        @hookimpl
        def edgemon_register_collectors(register):
            register("slow", lambda: time.sleep(0.2) or {"slow": {"v": 1}})
            register("fast", lambda: {"fast": {"v": 1}})
        """,
    )
    agent = make_agent(("timing", plugin), interval=5, timeout=1)
    stats = agent.cycle()["metrics"]["agent"]["collectors"]
    assert stats["slow"]["time_ms"] >= 190
    assert stats["fast"]["time_ms"] < 50, "a collector is not charged for the wait on the ones before it"


def test_rules_see_a_read_only_view(make_agent):
    plugin = plugin_module(
        "meddler",
        """
        from edgemon import hookimpl
        @hookimpl
        def edgemon_register_collectors(register):
            register("x", lambda: {"x": {"v": 1}})
        @hookimpl
        def edgemon_register_alert_rules(register):
            def meddle(m):
                m["x"]["v"] = 99
            register("meddle", meddle)
        """,
    )
    doc = make_agent(("meddler", plugin)).cycle()
    assert doc["metrics"]["x"] == {"v": 1}
    assert doc["metrics"]["agent"]["rules"]["meddle"]["errors"] == 1


def test_device_id_hook_that_raises_or_answers_garbage_is_ignored(make_agent):
    raising = plugin_module(
        "raising",
        """
        from edgemon import hookimpl
        @hookimpl
        def edgemon_device_id(default):
            raise RuntimeError("no serial number")
        """,
    )
    garbage = plugin_module(
        "garbage",
        """
        from edgemon import hookimpl
        @hookimpl
        def edgemon_device_id(default):
            return "has/slash"
        """,
    )
    agent = make_agent(("raising", raising), ("garbage", garbage))
    assert agent.device_id == "test-device"
    assert agent.records["raising"].status == "failed"
    assert "no serial number" in (agent.records["raising"].reason or "")
    assert agent.cycle()["device_id"] == "test-device"


def test_failed_startup_is_retried_with_back_off_and_then_collects(make_agent, monkeypatch):
    from edgemon import host

    monkeypatch.setattr(host, "RETRY_FIRST", 0.05)
    plugin = plugin_module(
        "flaky",
        """
        from edgemon import hookimpl
        attempts = []
        @hookimpl
        def edgemon_startup():
            attempts.append(1)
            if len(attempts) < 3:
                raise OSError("device not ready")
        @hookimpl
        def edgemon_register_collectors(register):
            register("flaky", lambda: {"flaky": {"v": len(attempts)}})
        """,
    )
    agent = make_agent(("flaky", plugin))
    assert agent.records["flaky"].status == "failed"
    assert "flaky" not in agent.cycle()["metrics"]
    deadline = time.monotonic() + 5
    while agent.records["flaky"].status != "loaded" and time.monotonic() < deadline:
        agent.retry_startups()
        time.sleep(0.05)
    assert agent.records["flaky"].status == "loaded"
    assert plugin.attempts == [1, 1, 1]
    assert agent.cycle()["metrics"]["flaky"] == {"v": 3}


# -- installed third-party plugins through the CLI ------------------------------------------

HOSTILE = {
    "edgemon_hangstart": """
        import time
        from edgemon import hookimpl
        @hookimpl
        def edgemon_startup():
            time.sleep(3600)
        @hookimpl
        def edgemon_register_collectors(register):
            register("hangstart", lambda: {"hangstart": {"v": 1}})
    """,
    "edgemon_badid": """
        from edgemon import hookimpl
        @hookimpl
        def edgemon_device_id(default):
            raise RuntimeError("EEPROM unreadable")
    """,
    "edgemon_exits": """
        import sys
        from edgemon import hookimpl
        @hookimpl
        def edgemon_register_collectors(register):
            register("exits", lambda: sys.exit(5))
    """,
    "edgemon_exitimport": """
        import sys
        sys.exit(3)
    """,
    "edgemon_chatty": """
        import os
        from edgemon import hookimpl
        @hookimpl
        def edgemon_register_collectors(register):
            def chatty():
                print("debug: reading sensors")
                os.write(1, b"native library noise\\n")
                return {"chatty": {"v": 7}}
            register("chatty", chatty)
    """,
    "edgemon_badkeys": """
        from edgemon import hookimpl
        @hookimpl
        def edgemon_register_collectors(register):
            register("badkeys", lambda: {"badkeys": {"eth0-if": 1, "ok": 2, "arr": [1], "inf": float("inf")}})
        @hookimpl
        def edgemon_register_alert_rules(register):
            register("badrule", lambda m: [{"rule": "x", "severity": "high", "message": "m"}])
    """,
}
HOSTILE_EPS = {name.removeprefix("edgemon_"): name for name in HOSTILE}


@pytest.fixture
def hostile(fake_install, agent_env):
    fake_install("edgemon-hostile", HOSTILE_EPS, HOSTILE)
    return {**agent_env, "EDGEMON_STARTUP_TIMEOUT": "1", "EDGEMON_LOAD_PLUGINS": ",".join([*HOSTILE_EPS, "cpu"])}


@pytest.mark.slow
def test_once_survives_hostile_plugins_and_keeps_the_others_data(hostile):
    t0 = time.monotonic()
    result = run_agent("once", env=hostile, timeout=30)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - t0 < 15, "a hanging startup costs its timeout, not the agent"
    doc = json.loads(result.stdout)  # nothing a plugin printed is in the payload stream
    metrics = doc["metrics"]
    assert metrics["cpu"]["percent"] >= 0
    assert "total" in metrics["memory"]
    assert metrics["chatty"] == {"v": 7}
    assert metrics["badkeys"] == {"ok": 2}
    assert doc["device_id"] == "cli-device"
    assert payload.validation_errors(doc) == []
    states = metrics["agent"]["plugin"]
    assert states["hangstart"]["status"] == "failed"
    assert "did not return within 1 s" in states["hangstart"]["reason"]
    assert states["badid"]["status"] == "failed"
    assert "EEPROM unreadable" in states["badid"]["reason"]
    assert states["exitimport"]["status"] == "failed"
    assert "SystemExit: 3" in states["exitimport"]["reason"]
    assert metrics["agent"]["collectors"]["exits"]["errors"] == 1
    assert metrics["agent"]["rules"]["badrule"]["dropped"] == 1
    assert "debug: reading sensors" in result.stderr
    assert "native library noise" in result.stderr
    assert "plugin=chatty" in result.stderr


@pytest.mark.slow
def test_run_keeps_its_interval_with_hostile_plugins(hostile):
    proc = subprocess.Popen(
        [str(AGENT_BIN), "run", "--output", "stdout", "--interval", "0.5"],
        env={**os.environ, **hostile},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(6)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    assert len(docs) >= 6, err
    assert [d["seq"] for d in docs] == list(range(docs[0]["seq"], docs[0]["seq"] + len(docs)))
    assert all(d["metrics"]["chatty"] == {"v": 7} for d in docs)
    stamps = [dt.datetime.fromisoformat(d["ts"].replace("Z", "+00:00")).timestamp() for d in docs]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert max(gaps) < 1.2, f"the interval holds: {gaps}"


@pytest.mark.slow  # a process of its own: end to end
def test_plugins_listing_never_hangs_and_names_the_reasons(hostile):
    result = run_agent("plugins", "--json", env=hostile, timeout=30)
    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert listed["hangstart"]["status"] == "failed"
    assert listed["exitimport"]["status"] == "failed"
    assert listed["chatty"]["status"] == "loaded"


def test_plugins_test_shows_the_plugins_traceback(fake_install, agent_env):
    fake_install(
        "edgemon-tb",
        {"tb": "edgemon_tb"},
        {
            "edgemon_tb": """
            from edgemon import hookimpl
            def read_bus():
                raise OSError(5, "bus error")
            @hookimpl
            def edgemon_register_collectors(register):
                register("tb", read_bus)
            """
        },
    )
    result = run_agent("plugins", "test", "tb", env=agent_env)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert 'edgemon_tb.py", line 4, in read_bus' in result.stderr
    assert "problem: collector tb raised OSError: [Errno 5] bus error (at edgemon_tb.py:4)" in result.stderr


@pytest.mark.slow  # a process of its own: end to end
def test_config_flag_before_or_after_the_subcommand(tmp_path, agent_env):
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[plugins.cpu]\npercpu = false\n")
    for args in (("-c", str(cfg), "plugins", "test", "cpu"), ("plugins", "-c", str(cfg), "test", "cpu"),
                 ("plugins", "test", "-c", str(cfg), "cpu")):  # fmt: skip
        result = run_agent(*args, env=agent_env)
        assert result.returncode == 0, (args, result.stderr)
        assert "core" not in json.loads(result.stdout)["cpu"], args


@pytest.mark.slow
def test_ctrl_c_during_once_is_clean(fake_install, agent_env):
    fake_install(
        "edgemon-slowstart",
        {"slowstart": "edgemon_slowstart"},
        {
            "edgemon_slowstart": """
            import time
            from edgemon import hookimpl
            @hookimpl
            def edgemon_startup():
                time.sleep(30)
            """
        },
    )
    proc = subprocess.Popen(
        [str(AGENT_BIN), "once"],
        env={**os.environ, **agent_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert "interrupted" in err
    assert "Traceback" not in err
