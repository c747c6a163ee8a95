"""Alerts end to end over the real broker: a rule on a third-party plugin's metric, fired and resolved
on the device while the broker is down, reaches the server after the reconnect, in order, with the
device's times; and the server reports a device that went silent."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from edgemon_server.api import ApiSettings, create_app
from edgemon_server.db import AlertEvent, make_engine
from tests.harness import wait

pytestmark = pytest.mark.slow

SWITCH = """
    import os
    from edgemon import Metric, hookimpl

    def read():
        with open(os.environ["SWITCH_FILE"]) as fh:
            return {"switch": {"level": float(fh.read())}}

    @hookimpl
    def edgemon_register_collectors(register):
        register("switch", read, metrics={"switch-level": Metric("%")})
"""


def test_a_fire_and_resolve_during_an_outage_arrive_after_it_in_order(
    tmp_path, broker, pki, sqlite_url, run_collector, collector_env, mqtt_env, run_agent_proc, fake_install
):
    fake_install("edgemon-switch", {"switch": "edgemon_switch"}, {"edgemon_switch": SWITCH})
    level = tmp_path / "level"
    level.write_text("10")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        '[alerts]\ndefaults = false\n\n[[alerts.threshold]]\nname = "switch_high"\n'
        'metric = "switch-level"\nabove = 50\nclear_below = 40\n'
    )
    collector = run_collector(collector_env(sqlite_url))
    collector.wait_subscribed()
    agent = run_agent_proc(
        mqtt_env(
            "dev-alert",
            EDGEMON_LOAD_PLUGINS="switch",
            EDGEMON_CONFIG=str(cfg),
            EDGEMON_INTERVAL="0.5",
            SWITCH_FILE=str(level),
        )
    )
    eng = make_engine(sqlite_url)

    def history():
        with eng.connect() as conn:
            query = select(AlertEvent.state, AlertEvent.at, AlertEvent.rule).where(AlertEvent.device_id == "dev-alert")
            return conn.execute(query.order_by(AlertEvent.at)).all()

    def device_seen():
        with eng.connect() as conn:
            return conn.exec_driver_sql("SELECT received FROM devices WHERE id = 'dev-alert'").scalar()

    assert wait(lambda: (device_seen() or 0) >= 3, 30), agent.log.read_text()
    broker.stop()
    down = time.time()
    level.write_text("90")  # fires on the device (for = 0s)...
    assert wait(lambda: '"alert firing"' in agent.log.read_text(), 10)
    level.write_text("10")  # ...and resolves, all while the broker is down
    assert wait(lambda: '"alert resolved"' in agent.log.read_text(), 10)
    up = time.time()
    assert history() == [], "nothing could reach the server yet"
    broker.start()
    events = wait(lambda: len(history()) >= 2 and history(), 60)
    assert [(e.state, e.rule) for e in events] == [("firing", "switch_high"), ("resolved", "switch_high")]
    fired, resolved = (e.at / 1000 for e in events)
    assert down - 1 <= fired <= resolved <= up + 1, "the device's own times, from inside the outage"
    client = create_app(eng, ApiSettings(rate_limit="")).test_client()
    body = client.get("/api/v1/devices/dev-alert/alerts").get_json()
    assert [e["state"] for e in body["history"]] == ["resolved", "firing"]
    assert body["current"] == []
    assert client.get("/api/v1/alerts?state=resolved&device=dev-alert").get_json()["alerts"][0]["rule"] == "switch_high"
    eng.dispose()


def test_the_server_reports_a_device_that_went_silent(
    broker, pki, sqlite_url, run_collector, collector_env, mqtt_env, run_agent_proc
):
    collector = run_collector(collector_env(sqlite_url, EDGEMON_SILENT_FACTOR="1"))
    collector.wait_subscribed()
    agent = run_agent_proc(mqtt_env("dev-quiet", EDGEMON_INTERVAL="1"))
    eng = make_engine(sqlite_url)
    client = create_app(eng, ApiSettings(rate_limit="")).test_client()

    def silent():
        alerts = client.get("/api/v1/alerts?device=dev-quiet").get_json()["alerts"]
        return [a for a in alerts if a["rule"] == "device_silent"]

    assert wait(lambda: client.get("/api/v1/devices/dev-quiet").status_code == 200, 30), agent.log.read_text()
    agent.stop()
    found = wait(silent, 60, step=1.0)  # silent after 30 s (the floor), seen by a sweep every 5 s
    assert found, collector.log.read_text()[-2000:]
    assert found[0]["severity"] == "critical"
    assert found[0]["source"] == "server"
    assert '"device silent"' in collector.log.read_text()
    eng.dispose()
