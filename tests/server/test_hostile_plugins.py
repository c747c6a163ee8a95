"""Hostile third-party plugins on a real agent: the server stores every other plugin's data and nothing is rejected."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from edgemon_server.db import Device, Payload, Reject, Sample, Series, make_engine
from tests.core.test_isolation import HOSTILE, HOSTILE_EPS

pytestmark = pytest.mark.slow


def test_hostile_plugins_cost_the_server_nothing_but_their_own_bad_values(
    fake_install, sqlite_url, mqtt_env, run_collector, collector_env, run_agent_proc
):
    fake_install("edgemon-hostile", HOSTILE_EPS, HOSTILE)
    collector = run_collector(collector_env(sqlite_url))
    collector.wait_subscribed()
    agent = run_agent_proc(
        mqtt_env(
            "dev-hostile",
            EDGEMON_LOAD_PLUGINS=",".join([*HOSTILE_EPS, "cpu"]),
            EDGEMON_STARTUP_TIMEOUT="1",
            EDGEMON_INTERVAL="0.5",
        )
    )
    eng = make_engine(sqlite_url)
    try:
        deadline = time.monotonic() + 40
        stored = 0
        while time.monotonic() < deadline and stored < 8:
            time.sleep(0.5)
            try:
                with eng.connect() as conn:
                    stored = conn.scalar(select(func.count()).select_from(Payload)) or 0
            except Exception:  # noqa: BLE001 - the collector may not have created the schema yet
                stored = 0
        assert stored >= 8, agent.log.read_text()[-3000:]
        assert agent.proc.poll() is None, "the agent is still running"
        with eng.connect() as conn:
            rejects = conn.execute(select(Reject.reason)).scalars().all()
            seqs = sorted(conn.execute(select(Payload.seq).where(Payload.device_id == "dev-hostile")).scalars())
            keys = set(
                conn.execute(
                    select(Series.key)
                    .join(Sample, Sample.series_id == Series.id)
                    .where(Series.device_id == "dev-hostile")
                ).scalars()
            )
            attrs = conn.execute(select(Device.attributes).where(Device.id == "dev-hostile")).scalar_one()
    finally:
        eng.dispose()
    assert rejects == [], "no payload rejected: the agent left out only what breaks the rules"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "every payload stored, none lost"
    assert {"cpu-percent", "memory-total", "chatty-v", "badkeys-ok"} <= keys
    assert not any(k.startswith("badkeys-eth0") for k in keys)
    assert attrs["agent-plugin-hangstart-status"] == "failed"
    assert "did not return within 1 s" in attrs["agent-plugin-hangstart-reason"]
    assert attrs["agent-plugin-exitimport-status"] == "failed"
    assert attrs["agent-plugin-chatty-status"] == "loaded"
