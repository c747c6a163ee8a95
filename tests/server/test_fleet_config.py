"""Remote configuration on the server: layers, versions, devices' requests and reports, canary rollouts."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select

from edgemon_protocol import remote
from edgemon_protocol.config import ConfigError, Where
from edgemon_server import cli, fleet_config
from edgemon_server.db import ConfigRollout, DeviceConfig
from edgemon_server.store import Message, Store
from tests.fleet import payload

NOW = 1_800_000_000_000
FLEET = [f"sim-{i:02d}" for i in range(10)]


def fleet(store: Store) -> None:
    store.write([Message(f"devices/{d}/monitoring", json.dumps(payload(d, 1)).encode(), time.time()) for d in FLEET])


def say(store: Store, device: str, **message) -> None:
    store.write([Message(f"devices/{device}/config", json.dumps(message).encode(), time.time())])


def desired(engine) -> dict[str, int | None]:
    with engine.connect() as conn:
        return dict(conn.execute(select(DeviceConfig.device_id, DeviceConfig.desired_version)).all())


def push(engine, doc, scope="fleet", name="", now=NOW, **kw):
    return fleet_config.push(engine, scope, name, doc, where=Where("push.toml", ""), now_ms=now, **kw)


def test_layers_merge_fleet_group_device_and_only_changes_make_versions(store, engine):
    fleet(store)
    push(engine, {"agent": {"interval": 10}, "alerts": {"defaults": True}})
    push(engine, {"agent": {"interval": 5}}, "group", "fast", match="sim-0[0-4]")
    push(engine, {"plugins": {"disk": {"interval": 60}}}, "device", "sim-00")
    with engine.connect() as conn:
        versions = {
            d: conn.execute(
                select(fleet_config.VERSIONS.c.document)
                .where(fleet_config.VERSIONS.c.device_id == d)
                .order_by(fleet_config.VERSIONS.c.version.desc())
            )
            .scalars()
            .first()
            for d in ("sim-00", "sim-03", "sim-09")
        }
    assert versions["sim-00"] == {
        "agent": {"interval": 5},
        "alerts": {"defaults": True},
        "plugins": {"disk": {"interval": 60}},
    }
    assert versions["sim-03"] == {"agent": {"interval": 5}, "alerts": {"defaults": True}}
    assert versions["sim-09"] == {"agent": {"interval": 10}, "alerts": {"defaults": True}}
    before = desired(engine)
    push(engine, {"agent": {"interval": 10}, "alerts": {"defaults": True}})  # the same again
    assert desired(engine) == before, "an unchanged document is no new version"
    assert len(set(before.values())) == 10, "one version per device, numbers never reused"


def test_a_device_asks_on_connect_and_gets_only_what_is_newer(store, engine):
    fleet(store)
    push(engine, {"agent": {"interval": 10}})
    with engine.connect() as conn:
        due = {r["device_id"]: r["version"] for r in fleet_config.due(conn)}
    assert set(due) == set(FLEET)
    with engine.begin() as conn:
        for device, version in due.items():
            fleet_config.mark_sent(conn, device, version)
        assert fleet_config.due(conn) == []
    say(store, "sim-03", type="get", have=0, rejected=0)  # it reconnects without having applied it
    with engine.connect() as conn:
        assert [r["device_id"] for r in fleet_config.due(conn)] == ["sim-03"]
    say(store, "sim-03", type="get", have=due["sim-03"], rejected=0)
    with engine.connect() as conn:
        assert fleet_config.due(conn) == [], "it has the newest"
    say(store, "new-device", type="get", have=0, rejected=0)  # never seen: the fleet's layers
    with engine.connect() as conn:
        assert [r["device_id"] for r in fleet_config.due(conn)] == ["new-device"]


def test_a_canary_rollout_to_ten_devices_aborts_when_the_canary_rejects(store, engine):
    fleet(store)
    push(engine, {"agent": {"interval": 10}})
    before = desired(engine)
    rollout = push(engine, {"agent": {"interval": 1}}, canary_percent=10, wait_s=900, abort_on_rejects=1)
    assert rollout["state"] == "canary"
    (canary,) = rollout["canary"]
    after = desired(engine)
    assert [d for d in FLEET if after[d] != before[d]] == [canary], "only the canary got it"
    assert fleet_config.advance(engine, NOW + 1000) == [], "nothing to decide yet"
    say(store, canary, type="report", version=after[canary], hash="x", status="rejected", error="plugins.x: no")
    (change,) = fleet_config.advance(engine, NOW + 2000)
    assert change["state"] == "aborted"
    assert "plugins.x: no" in change["reason"]
    final = desired(engine)
    assert all(final[d] == before[d] for d in FLEET if d != canary), "the rest never got it"
    with engine.connect() as conn:
        doc = conn.execute(
            select(fleet_config.VERSIONS.c.document).where(fleet_config.VERSIONS.c.version == final[canary])
        ).scalar_one()
    assert doc == {"agent": {"interval": 10}}, "the canary is sent the old document again, as a new version"
    assert (final[canary] or 0) > (after[canary] or 0)


def test_a_canary_rollout_completes_after_its_wait_once_the_canary_applied(store, engine):
    fleet(store)
    rollout = push(engine, {"agent": {"interval": 2}}, canary_percent=20, wait_s=60)
    canary = rollout["canary"]
    assert len(canary) == 2
    versions = desired(engine)
    for device in canary:
        say(store, device, type="report", version=versions[device], hash="x", status="applied", error="")
    assert fleet_config.advance(engine, NOW + 30_000) == [], "the wait is not over"
    (change,) = fleet_config.advance(engine, NOW + 61_000)
    assert change["state"] == "complete"
    assert all(desired(engine)[d] for d in FLEET), "every device has it now"
    with engine.connect() as conn:
        assert conn.execute(select(ConfigRollout.state)).scalar_one() == "complete"


def test_a_canary_that_never_applies_aborts_after_twice_the_wait(store, engine):
    fleet(store)
    push(engine, {"agent": {"interval": 2}}, canary_percent=10, wait_s=60)
    assert fleet_config.advance(engine, NOW + 61_000) == []
    (change,) = fleet_config.advance(engine, NOW + 121_000)
    assert change["state"] == "aborted"
    assert "did not apply" in change["reason"]


def test_status_shows_drift_and_rejects_say_why(store, engine):
    fleet(store)
    push(engine, {"agent": {"interval": 2}}, "device", "sim-01")
    version = desired(engine)["sim-01"]
    assert version is not None
    say(store, "sim-01", type="report", version=version, hash="x", status="rejected", error="bad: reason")
    with engine.connect() as conn:
        (row,) = fleet_config.status(conn, ["sim-01"])
    assert row["drift"] is True
    assert (row["status"], row["error"], row["applied_version"]) == ("rejected", "bad: reason", None)
    say(store, "sim-01", type="get", have=0, rejected=version)
    with engine.connect() as conn:
        assert fleet_config.due(conn) == [], "not sent again what it refused"


def test_bad_config_messages_are_rejects_with_their_reason(store, engine):
    result = store.write([Message("devices/sim-01/config", b'{"type": "dance"}', time.time())])
    assert result.rejected == 1
    with engine.connect() as conn:
        reason = conn.exec_driver_sql("SELECT reason FROM rejects").scalar()
    assert "get" in reason


def test_the_cli_pushes_refuses_with_file_and_line_and_shows_status(tmp_path, sqlite_url, capsys):
    cfg = tmp_path / "server.toml"
    cfg.write_text(f'[server]\ndatabase_url = "{sqlite_url}"\n')
    good = tmp_path / "fleet.toml"
    good.write_text('[[alerts.threshold]]\nname = "disk_full"\nmetric = "disk-usage-*-percent"\nabove = 80\n')
    assert cli.main(["config", "push", "--all", str(good), "-c", str(cfg)]) == 0
    assert cli.main(["config", "push", "--device", "d1", str(good), "-c", str(cfg)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[agent]\ninterval = 5\nstate_dir = "/tmp"\n')
    assert cli.main(["config", "push", "--all", str(bad), "-c", str(cfg)]) == 2
    assert f"{bad}:3: agent.state_dir cannot be changed remotely" in capsys.readouterr().err
    assert cli.main(["config", "push", "--group", "new", str(good), "-c", str(cfg)]) == 2
    assert "--match" in capsys.readouterr().err
    assert cli.main(["config", "status", "-c", str(cfg)]) == 1, "d1 has not applied it: drift"
    assert "DRIFT" in capsys.readouterr().out
    assert cli.main(["config", "rollouts", "-c", str(cfg)]) == 0
    assert "device d1" in capsys.readouterr().out


def test_documents_are_refused_before_they_are_stored(engine):
    with pytest.raises(ConfigError, match="mqtt"):
        push(engine, {"mqtt": {"endpoint": "elsewhere"}})
    assert remote.digest({"a": 1, "b": 2}) == remote.digest({"b": 2, "a": 1}), "the hash ignores key order"


def test_the_api_shows_each_devices_config_drift_and_the_rollouts(store, engine):
    from edgemon_server.api import ApiSettings, create_app

    fleet(store)
    push(engine, {"agent": {"interval": 2}}, "device", "sim-01")
    version = desired(engine)["sim-01"]
    client = create_app(engine, ApiSettings(rate_limit="")).test_client()
    one = client.get("/api/v1/devices/sim-01").get_json()["config"]
    assert one == {
        "desired_version": version,
        "applied_version": None,
        "status": None,
        "error": None,
        "reported_at": None,
        "drift": True,
    }
    assert client.get("/api/v1/devices/sim-02").get_json()["config"]["drift"] is False, "no remote config: no drift"
    listed = {d["id"]: d["config_drift"] for d in client.get("/api/v1/devices").get_json()["devices"]}
    assert [d for d, drifting in listed.items() if drifting] == ["sim-01"]
    say(store, "sim-01", type="report", version=version, hash="x", status="applied", error="")
    assert client.get("/api/v1/devices/sim-01").get_json()["config"]["drift"] is False
    (rollout,) = client.get("/api/v1/config/rollouts").get_json()["rollouts"]
    assert (rollout["scope"], rollout["name"], rollout["state"]) == ("device", "sim-01", "complete")
    assert client.get("/api/v1/config/rollouts?limit=0").status_code == 400
