"""The collector against a real mosquitto with mutual TLS: exact rows, dead letters, and no loss
through collector kills, broker restarts and shared-subscription members dying."""

from __future__ import annotations

import json
import math
import signal
import time

import pytest
from sqlalchemy import func, select

from edgemon_protocol.flatten import flatten
from edgemon_server.db import Device, MetricMeta, Payload, Reject, Sample, Series, make_engine
from tests.fleet import SAMPLES_PER_PAYLOAD, Fleet, payload

pytestmark = pytest.mark.slow


def counts(url: str) -> tuple[int, int]:
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            return (
                conn.scalar(select(func.count()).select_from(Payload)) or 0,
                conn.scalar(select(func.count()).select_from(Sample)) or 0,
            )
    except Exception:  # noqa: BLE001 - the collector may not have created the schema yet
        return 0, 0
    finally:
        eng.dispose()


def wait_rows(url: str, payloads: int, timeout: float) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    got = counts(url)
    while time.monotonic() < deadline and got[0] < payloads:
        time.sleep(0.2)
        got = counts(url)
    return got


def assert_exactly_once(url: str, fleet: Fleet, per_device: int) -> None:
    eng = make_engine(url)
    with eng.connect() as conn:
        rows = conn.execute(select(Payload.device_id, Payload.seq)).all()
        samples = conn.scalar(select(func.count()).select_from(Sample))
    eng.dispose()
    expected = {(d.name, s) for d in fleet.devices for s in range(per_device)}
    assert len(rows) == len(set(rows)), "no payload stored twice"
    missing = expected - set(rows)
    assert not missing, f"{len(missing)} payloads missing, e.g. {sorted(missing)[:5]}"
    assert set(rows) == expected
    assert samples == len(expected) * SAMPLES_PER_PAYLOAD, "every sample exactly once"


def test_agent_payloads_become_exactly_the_flattened_rows(
    db_url, broker, pki, mqtt_env, run_collector, collector_env, subscriber, run_agent_proc
):
    collector = run_collector(collector_env(db_url))
    collector.wait_subscribed()
    run_agent_proc(mqtt_env("dev-real", EDGEMON_LOAD_PLUGINS="cpu,disk", EDGEMON_INTERVAL="0.5"))
    assert subscriber.wait_count(3, 30)
    wait_rows(db_url, 3, 30)
    sent = {p["seq"]: p for p in subscriber.payloads()}
    eng = make_engine(db_url)
    with eng.connect() as conn:
        stored = conn.execute(select(Payload.seq, Payload.ts)).all()
        values = conn.execute(
            select(Sample.ts, Series.key, Sample.value).join(Series, Sample.series_id == Series.id)
        ).all()
        device = conn.execute(select(Device).where(Device.id == "dev-real")).one()
    eng.dispose()
    assert len(stored) >= 3
    by_ts: dict[int, dict[str, float]] = {}
    for ts, key, value in values:
        by_ts.setdefault(ts, {})[key] = value
    for seq, ts in stored:
        flat = flatten(sent[seq]["metrics"])
        numeric = {k: float(v) for k, v in flat.items() if isinstance(v, int | float)}
        assert by_ts[ts].keys() == numeric.keys()
        for key, value in numeric.items():
            assert math.isclose(by_ts[ts][key], value, rel_tol=1e-12), key
    strings = {k: v for k, v in flatten(sent[stored[-1][0]]["metrics"]).items() if isinstance(v, str)}
    assert strings.items() <= device.attributes.items()
    # The agent described its metrics once, on connecting (devices/dev-real/meta); the collector kept it.
    eng = make_engine(db_url)
    deadline = time.monotonic() + 10
    described = None
    while described is None and time.monotonic() < deadline:
        with eng.connect() as conn:
            described = conn.execute(select(MetricMeta.entries).where(MetricMeta.device_id == "dev-real")).scalar()
        time.sleep(0.1)
    eng.dispose()
    assert described is not None, "the metadata document arrived"
    entries = dict((pattern, fields) for pattern, fields in described)
    assert entries["cpu-percent"]["unit"] == "%"
    assert entries["cpu-percent"]["headline"] == "CPU"
    assert entries["disk-usage-*-percent"]["headline"] == "Disk"


def test_each_kind_of_bad_input_is_dead_lettered_and_the_rest_stored(
    broker, pki, sqlite_url, run_collector, collector_env
):
    collector = run_collector(collector_env(sqlite_url))
    collector.wait_subscribed()
    fleet = Fleet(broker, pki, 1, prefix="bad")
    name = fleet.devices[0].name
    good = [json.dumps(payload(name, seq)).encode() for seq in range(3)]
    nan = json.dumps(payload(name, 10)).replace('"percent": 10.5', '"percent": NaN', 1).encode()
    deep: dict[str, object] = {"x": 1}
    for _ in range(12):
        deep = {"k": deep}
    bad = {
        "malformed JSON": b'{"schema": 1,',
        "seq": json.dumps({**payload(name, 11), "seq": "eleven"}).encode(),
        "NaN": nan,
        "deeper than": json.dumps({**payload(name, 12), "metrics": deep}).encode(),
        # "too large" never reaches the collector: the broker refuses packets over 256 KB
        # (test_broker_rules); the server's own size check is a unit test (test_validate).
        "key collision": json.dumps({**payload(name, 14), "metrics": {"a-b": 1, "a": {"b": 2}}}).encode(),
        "does not match the topic": json.dumps({**payload(name, 15), "device_id": "someone-else"}).encode(),
        "not UTF-8": b"\xc3\x28" + good[0][2:],
    }
    fleet.raw(0, good[0])
    for body in bad.values():
        fleet.raw(0, body)
    fleet.raw(0, good[1])
    fleet.raw(0, good[2])
    wait_rows(sqlite_url, 3, 20)
    deadline = time.monotonic() + 20
    eng = make_engine(sqlite_url)
    while time.monotonic() < deadline:
        with eng.connect() as conn:
            rejects = conn.execute(select(Reject.reason, Reject.device_id)).all()
        if len(rejects) >= len(bad):
            break
        time.sleep(0.2)
    eng.dispose()
    fleet.stop()
    assert counts(sqlite_url) == (3, 3 * SAMPLES_PER_PAYLOAD)
    assert len(rejects) == len(bad)
    for reason in bad:
        assert any(reason in r for r, _ in rejects), f"no reject says {reason!r}: {rejects}"
    assert {d for _, d in rejects} == {name}
    deadline = time.monotonic() + 10  # the collector logs a reject after its batch commits: a moment later
    logged = [r for r in collector.records() if r.get("msg") == "payload rejected"]
    while len(logged) < len(bad) and time.monotonic() < deadline:
        time.sleep(0.2)
        logged = [r for r in collector.records() if r.get("msg") == "payload rejected"]
    assert len(logged) == len(bad)
    assert all(r["device"] == name and r["reason"] for r in logged), "structured: device and reason fields"


def test_collector_killed_while_20_devices_publish_loses_and_duplicates_nothing(
    broker, pki, sqlite_url, run_collector, collector_env
):
    env = collector_env(sqlite_url)
    collector = run_collector(env)
    collector.wait_subscribed()
    fleet = Fleet(broker, pki, 20, prefix="kill", window=4, pace=0.05)
    fleet.publish(40)
    time.sleep(1.0)
    assert collector.stop(signal.SIGKILL) == -signal.SIGKILL
    time.sleep(1.0)  # the broker keeps the session and what arrives meanwhile
    run_collector(env).wait_subscribed()
    assert fleet.wait(60)
    wait_rows(sqlite_url, 800, 60)
    fleet.stop()
    assert_exactly_once(sqlite_url, fleet, 40)


@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "sigkill"])
def test_broker_restart_while_publishing_ends_exactly_once(kill, broker, pki, sqlite_url, run_collector, collector_env):
    collector = run_collector(collector_env(sqlite_url))
    collector.wait_subscribed()
    fleet = Fleet(broker, pki, 5, prefix="brk", window=4, pace=0.03)
    fleet.publish(60)
    time.sleep(0.7)
    broker.stop(kill=kill)
    time.sleep(0.5)
    broker.start()
    assert fleet.wait(60)
    got = wait_rows(sqlite_url, 300, 60)
    fleet.stop()
    assert got[0] == 300, f"{got[0]} of 300 payloads; resends asked: {fleet.devices[0].resends}"
    assert_exactly_once(sqlite_url, fleet, 60)


def test_two_shared_collectors_one_killed_lose_nothing(broker, pki, sqlite_url, run_collector, collector_env):
    first = run_collector(collector_env(sqlite_url, "collector-2", EDGEMON_SHARED_GROUP="ingest"))
    second = run_collector(collector_env(sqlite_url, "collector-3", EDGEMON_SHARED_GROUP="ingest"))
    first.wait_subscribed()
    second.wait_subscribed()
    fleet = Fleet(broker, pki, 6, prefix="shr", window=4, pace=0.03)
    fleet.publish(50)
    time.sleep(0.8)
    first.stop(signal.SIGKILL)
    assert fleet.wait(60)
    got = wait_rows(sqlite_url, 300, 60)
    fleet.stop()
    assert got[0] == 300
    assert_exactly_once(sqlite_url, fleet, 50)
    first_stored = [r for r in first.records() if r.get("msg") == "subscribed"]
    assert first_stored, "the killed member had joined the group"
    assert "$share/ingest/devices/+/monitoring" in json.dumps(second.records())


def test_poison_messages_never_stop_ingest_even_after_a_restart(broker, pki, sqlite_url, run_collector, collector_env):
    from tests.server.test_store import poison_messages

    env = collector_env(sqlite_url)
    collector = run_collector(env)
    collector.wait_subscribed()
    fleet = Fleet(broker, pki, 1, prefix="pois")
    name = fleet.devices[0].name
    fleet.raw(0, json.dumps(payload(name, 0)).encode())
    for poison in poison_messages(name):
        fleet.raw(0, poison.body)
    fleet.raw(0, json.dumps(payload(name, 1)).encode())
    assert wait_rows(sqlite_url, 2, 20)[0] == 2
    assert collector.proc.poll() is None, "the collector is alive"
    collector.stop()
    again = run_collector(env)  # a restart: nothing poisonous is redelivered, ingest goes on
    again.wait_subscribed()
    fleet.raw(0, json.dumps(payload(name, 2)).encode())
    assert wait_rows(sqlite_url, 3, 20)[0] == 3
    assert again.proc.poll() is None
    eng = make_engine(sqlite_url)
    with eng.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Reject)) == 4
    eng.dispose()
    fleet.stop()


def test_a_gap_bomb_beside_an_honest_fleet(broker, pki, sqlite_url, run_collector, collector_env):
    """One device jumps its seq to 10^12 and then sends every second seq; honest devices keep a lag
    under a second and the resend requests stay bounded."""
    collector = run_collector(collector_env(sqlite_url))
    collector.wait_subscribed()
    honest = Fleet(broker, pki, 5, prefix="hon", pace=0.2)
    bomb = Fleet(broker, pki, 1, prefix="bomb", window=64)
    name = bomb.devices[0].name
    honest.publish(40)
    bodies = []
    for i in range(2000):
        doc = payload(name, i % 1000)
        doc["seq"] = 10**12 + 2 * i if i else 1
        bodies.append(json.dumps(doc).encode())
    for body in bodies:
        bomb.raw(0, body)
    assert honest.wait(60)
    assert wait_rows(sqlite_url, 5 * 40 + 2000, 60)[0] == 5 * 40 + 2000
    time.sleep(3)  # sweeps after the bomb
    eng = make_engine(sqlite_url)
    with eng.connect() as conn:
        received = {(d, s): r for d, s, r in conn.execute(select(Payload.device_id, Payload.seq, Payload.received))}
    eng.dispose()
    lags = sorted(received[(d.name, s)] / 1000 - t for d in honest.devices for s, t in d.published_at.items())
    assert lags[int(len(lags) * 0.99) - 1] < 1.0, f"honest lag p99 {lags[int(len(lags) * 0.99) - 1]:.2f} s"
    asks = [r for r in collector.records() if r.get("msg") == "asked a device for missing payloads"]
    assert len(asks) <= 40, f"{len(asks)} resend requests"
    given_up = [r for r in collector.records() if r.get("msg") == "payloads missing; not asked for again"]
    assert len(given_up) <= 2, "give-ups are logged once a minute per device"
    assert collector.proc.poll() is None
    honest.stop()
    bomb.stop()
