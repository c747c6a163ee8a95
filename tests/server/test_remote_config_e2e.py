"""Remote configuration end to end over the real broker: a real collector, a real agent process.

One device goes through the life of its configuration: an interval pushed and applied without a
restart, a document it refuses (nothing changes), two pushes while it is off and the broker down
(it restarts offline on the version it had, then takes only the newest), an override that expires
while the device is offline (it reverts by itself), and a version that stops its payloads, rolled
back by the connectivity guard.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from edgemon_server import cli
from edgemon_server.db import DeviceConfig, make_engine
from tests.harness import wait

pytestmark = pytest.mark.slow


def test_a_device_through_pushes_rejects_an_outage_an_override_and_a_rollback(
    tmp_path, broker, sqlite_url, run_collector, collector_env, mqtt_env, run_agent_proc
):
    local = tmp_path / "agent.toml"
    local.write_text("[remote_config]\nconfirm_within = 30\n")
    server_cfg = tmp_path / "server.toml"
    server_cfg.write_text(f'[server]\ndatabase_url = "{sqlite_url}"\n')
    collector = run_collector(collector_env(sqlite_url))
    collector.wait_subscribed()
    env = mqtt_env("dev-rc", EDGEMON_CONFIG=str(local), EDGEMON_INTERVAL="1")
    agent = run_agent_proc(env)
    eng = make_engine(sqlite_url)

    def push(body: str, *args: str) -> int:
        doc = tmp_path / f"push-{time.monotonic_ns()}.toml"
        doc.write_text(body)
        return cli.main(["config", "push", *args, str(doc), "-c", str(server_cfg)])

    def device() -> DeviceConfig | None:
        with eng.connect() as conn:
            row = conn.execute(select(DeviceConfig).where(DeviceConfig.device_id == "dev-rc")).first()
            return row  # type: ignore[return-value]

    def interval() -> float:
        with eng.connect() as conn:
            return float(conn.exec_driver_sql("SELECT interval FROM devices WHERE id = 'dev-rc'").scalar() or 0)

    def config_version_in_payloads() -> float | None:
        with eng.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT s.value FROM samples s JOIN series k ON k.id = s.series_id "
                "WHERE k.device_id = 'dev-rc' AND k.key = 'agent-config-version' ORDER BY s.ts DESC LIMIT 1"
            ).scalar()

    assert wait(lambda: interval() == 1.0, 30), agent.log.read_text()
    pid = agent.proc.pid

    # 1. An interval change, applied live and reported.
    assert push("[agent]\ninterval = 0.5\n", "--device", "dev-rc") == 0
    first = wait(lambda: (d := device()) and d.applied_version and d, 20)
    assert first, agent.log.read_text()
    assert first.status == "applied"
    assert wait(lambda: interval() == 0.5, 15), "payloads now say the new interval"
    assert wait(lambda: config_version_in_payloads() == first.applied_version, 10), "and carry the version"
    assert agent.proc.pid == pid
    assert agent.proc.poll() is None, "no restart"

    # 2. A document the device refuses (no such plugin here): its reason comes back, nothing changes.
    assert push("[agent]\ninterval = 0.5\n\n[plugins.nope]\nenabled = true\n", "--device", "dev-rc") == 0
    refused = wait(lambda: (d := device()) and d.status == "rejected" and d, 20)
    assert refused, agent.log.read_text()
    assert "names no installed plugin" in (refused.error or "")
    assert refused.applied_version == first.applied_version
    assert refused.desired_version != refused.applied_version, "drift, visible"
    time.sleep(1.5)
    assert interval() == 0.5

    # 3. Off, and the broker down: it restarts offline on the version it had; two pushes meanwhile.
    agent.stop()
    broker.stop()
    offline = run_agent_proc(env)
    assert wait(lambda: '"agent started"' in offline.log.read_text(), 20)
    assert push("[agent]\ninterval = 0.7\n", "--device", "dev-rc") == 0
    assert push("[agent]\ninterval = 0.8\n", "--device", "dev-rc") == 0
    newest = device()
    assert newest is not None
    broker.start()
    assert wait(lambda: (d := device()) and d.applied_version == newest.desired_version, 30), offline.log.read_text()
    log = offline.log.read_text()
    applied = [line for line in log.splitlines() if "remote configuration applied" in line]
    assert len(applied) == 1, "only the newest version, never the one in between"
    assert f"v{newest.desired_version}" in applied[0]
    assert wait(lambda: interval() == 0.8, 15)

    # 4. An override that ends by itself: the device reverts on its own, offline, and the server follows.
    assert push("[agent]\ninterval = 0.3\n", "--device", "dev-rc", "--expires", "+6s") == 0
    assert wait(lambda: interval() == 0.3, 20), offline.log.read_text()
    broker.stop()
    assert wait(lambda: "override expired" in offline.log.read_text(), 20)
    broker.start()
    assert wait(lambda: interval() == 0.8, 15), "back to what it had"
    assert wait(lambda: (d := device()) and d.applied_version == d.desired_version and d.status == "applied", 20)

    eng.dispose()


SLOW_START = """
    import time
    from edgemon import SettingsSpec, hookimpl

    @hookimpl
    def edgemon_settings_spec():
        return SettingsSpec(defaults={"startup_delay": 0.0})

    @hookimpl
    def edgemon_startup(settings):
        time.sleep(settings["startup_delay"])

    @hookimpl
    def edgemon_register_collectors(register):
        register("slowstart", lambda: {"slowstart": {"up": 1}})
"""


def test_a_version_under_which_no_payload_is_acknowledged_is_rolled_back(
    tmp_path, broker, sqlite_url, run_collector, collector_env, mqtt_env, run_agent_proc, fake_install
):
    # The version makes a plugin's start take 5 s; the broker goes down as soon as the version is sent,
    # so no payload built under it is acknowledged within confirm_within (10 s): the device rolls back.
    fake_install("edgemon-slowstart", {"slowstart": "edgemon_slowstart"}, {"edgemon_slowstart": SLOW_START})
    local = tmp_path / "agent.toml"
    local.write_text("[remote_config]\nconfirm_within = 10\n")
    server_cfg = tmp_path / "server.toml"
    server_cfg.write_text(f'[server]\ndatabase_url = "{sqlite_url}"\n')
    collector = run_collector(collector_env(sqlite_url))
    collector.wait_subscribed()
    agent = run_agent_proc(mqtt_env("dev-guard", EDGEMON_CONFIG=str(local), EDGEMON_LOAD_PLUGINS="slowstart"))
    eng = make_engine(sqlite_url)

    def device() -> DeviceConfig | None:
        with eng.connect() as conn:
            return conn.execute(select(DeviceConfig).where(DeviceConfig.device_id == "dev-guard")).first()  # type: ignore[return-value]

    def received() -> int:
        with eng.connect() as conn:
            return int(conn.exec_driver_sql("SELECT received FROM devices WHERE id = 'dev-guard'").scalar() or 0)

    assert wait(lambda: received() >= 2, 30), agent.log.read_text()
    good = tmp_path / "good.toml"
    good.write_text("[agent]\ninterval = 0.5\n")
    assert cli.main(["config", "push", "--device", "dev-guard", str(good), "-c", str(server_cfg)]) == 0
    assert wait(lambda: (d := device()) and d.status == "applied" and d, 20), agent.log.read_text()
    assert wait(lambda: "remote configuration applied" in agent.log.read_text(), 5)
    time.sleep(2)  # payloads under it are acknowledged: it is the last good version
    bad = tmp_path / "bad.toml"
    bad.write_text("[agent]\ninterval = 0.5\n\n[plugins.slowstart]\nstartup_delay = 5.0\n")
    assert cli.main(["config", "push", "--device", "dev-guard", str(bad), "-c", str(server_cfg)]) == 0
    sent = wait(lambda: (d := device()) and d.sent_version == d.desired_version and d, 10, step=0.05)
    assert sent, "the collector sent it"
    broker.stop()
    assert wait(lambda: "remote configuration rolled back" in agent.log.read_text(), 30), agent.log.read_text()
    broker.start()
    rolled = wait(lambda: (d := device()) and d.status == "rolled_back" and d, 30)
    assert rolled, agent.log.read_text()
    assert rolled.reported_version == sent.desired_version
    assert "no payload acknowledged within 10 s" in (rolled.error or "")
    before = received()
    assert wait(lambda: received() > before + 2, 20), "payloads flow again under the last good version"
    assert agent.proc.poll() is None
    eng.dispose()
