"""Storage on SQLite and PostgreSQL: exact rows, idempotence, dead letters, gaps, migrations."""

from __future__ import annotations

import json
import time

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from edgemon_protocol.flatten import flatten
from edgemon_server import chunks, migrations, partitions
from edgemon_server import queries as q
from edgemon_server.db import Base, Device, Payload, Reject, Sample, Series
from edgemon_server.store import Message, Store
from tests.fleet import SAMPLES_PER_PAYLOAD, payload

FUTURE = None  # the server clock (the fleet's timestamps are in the past)


def msg(device: str, seq: int, **changes) -> Message:
    p = payload(device, seq)
    p.update(changes)
    return Message(f"devices/{device}/monitoring", json.dumps(p).encode(), time.time())


def stored_values(engine, device: str) -> dict[tuple[str, int], float]:
    query = (
        select(Series.key, Sample.ts, Sample.value)
        .join(Sample, Sample.series_id == Series.id)
        .where(Series.device_id == device)
    )
    with engine.connect() as conn:
        return {(k, ts): v for k, ts, v in conn.execute(query)}


def test_migrations_and_models_agree(engine):
    with engine.connect() as conn:
        opts = {
            "compare_type": True,
            # PostgreSQL's day partitions are made at run time, its sample_chunks is not a model, and
            # neither is the byte-order index on series.key (an expression index on PostgreSQL)
            "include_name": lambda name, kind, _parent: (
                not (
                    (kind == "table" and (partitions.is_partition(name) or name == chunks.CHUNKS.name))
                    or (kind == "index" and name == q.KEY_INDEX)
                )
            ),
        }
        diff = compare_metadata(MigrationContext.configure(conn, opts=opts), Base.metadata)
    assert diff == []
    assert migrations.current(engine) == migrations.head()


def test_upgrade_from_the_first_revision_keeps_the_data(db_url):
    from edgemon_server.db import make_engine

    eng = make_engine(db_url)
    migrations.upgrade(eng, "0001")
    assert migrations.current(eng) == "0001"
    with eng.begin() as conn:  # rows as the 0001 code wrote them
        conn.execute(text("INSERT INTO devices VALUES ('d1', 1, 1, 1, 4, 10, '{}', 2, 0)"))
        conn.execute(text("INSERT INTO payloads VALUES ('d1', 0, 1, 1), ('d1', 4, 2, 1)"))
    migrations.upgrade(eng)
    assert migrations.current(eng) == migrations.head() != "0001"
    with eng.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Payload)) == 2
        assert conn.execute(text("SELECT COUNT(*) FROM collectors")).scalar() == 0
        span = conn.execute(text("SELECT first_seq, max_seq FROM devices WHERE id = 'd1'")).one()
    assert tuple(span) == (0, 4), "0003 fills the seq span of existing devices from payloads"
    Store(eng).write([msg("d1", 2)])  # and the code at head goes on from there
    eng.dispose()


def test_upgrade_is_idempotent(engine):
    migrations.upgrade(engine)
    assert migrations.current(engine) == migrations.head()


def test_rows_match_the_flattened_payload_exactly(engine, store):
    result = store.write([msg("d1", 0), msg("d1", 1)], now=FUTURE)
    assert (result.stored, result.duplicates, result.rejected) == (2, 0, 0)
    assert result.samples == 2 * SAMPLES_PER_PAYLOAD
    expected = {}
    for seq in (0, 1):
        p = payload("d1", seq)
        ts = store_ts(p)
        for key, value in flatten(p["metrics"]).items():
            if isinstance(value, int | float):  # bool included: stored as 0/1
                expected[(key, ts)] = float(value)
    assert stored_values(engine, "d1") == expected
    with engine.connect() as conn:
        device = conn.execute(select(Device).where(Device.id == "d1")).one()
    assert device.attributes == {"system-hostname": "host-d1", "system-agent_version": "0.1.0"}
    assert (device.received, device.duplicates, device.last_seq) == (2, 0, 1)
    assert device.last_ts == store_ts(payload("d1", 1))


def latest(engine, device: str) -> dict[str, tuple[int, float]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Series.key, Series.last_ts, Series.last_value).where(Series.device_id == device)
        ).all()
    return {k: (ts, v) for k, ts, v in rows}


def test_each_series_keeps_its_newest_sample_and_late_ones_never_move_it_back(engine, store):
    store.write([msg("d1", 5), msg("d1", 3)], now=FUTURE)  # one batch, newest first
    newest = {
        k: (store_ts(payload("d1", 5)), float(v))
        for k, v in flatten(payload("d1", 5)["metrics"]).items()
        if isinstance(v, int | float)
    }
    assert latest(engine, "d1") == newest
    store.write([msg("d1", 1)], now=FUTURE)  # a late payload, in a batch of its own
    assert latest(engine, "d1") == newest, "the late payload is stored but is not the latest"
    store.write([msg("d1", 9)], now=FUTURE)
    assert latest(engine, "d1")["cpu-percent"] == (
        store_ts(payload("d1", 9)),
        payload("d1", 9)["metrics"]["cpu"]["percent"],
    )
    assert len(stored_values(engine, "d1")) == 4 * SAMPLES_PER_PAYLOAD


def store_ts(p) -> int:
    import datetime as dt

    return round(dt.datetime.fromisoformat(p["ts"]).timestamp() * 1000)


def test_the_same_payload_twice_is_stored_once_and_counted(engine, store):
    store.write([msg("d1", 0), msg("d1", 0)], now=FUTURE)  # a repeat inside one batch
    result = store.write([msg("d1", 0), msg("d1", 1)], now=FUTURE)  # and in a later one
    assert (result.stored, result.duplicates) == (1, 1)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Payload)) == 2
        assert conn.scalar(select(func.count()).select_from(Sample)) == 2 * SAMPLES_PER_PAYLOAD
        device = conn.execute(select(Device).where(Device.id == "d1")).one()
    assert (device.received, device.duplicates) == (2, 2)


def test_a_fresh_store_on_the_same_database_is_still_idempotent(engine, store):
    store.write([msg("d1", 0)], now=FUTURE)
    again = Store(engine).write([msg("d1", 0)], now=FUTURE)  # a restarted collector: empty caches
    assert (again.stored, again.duplicates) == (0, 1)


def test_bad_messages_go_to_dead_letters_and_the_rest_is_stored(engine, store):
    batch = [
        msg("d1", 0),
        Message("devices/d1/monitoring", b"{oops", time.time()),
        msg("d2", 0, device_id="someone-else"),
        Message("devices/d3/monitoring", b"\xff" * 2000, time.time()),
        msg("d1", 1),
    ]
    result = store.write(batch, now=FUTURE)
    assert (result.stored, result.rejected) == (2, 3)
    with engine.connect() as conn:
        rejects = conn.execute(select(Reject).order_by(Reject.id)).all()
        assert conn.scalar(select(func.count()).select_from(Payload)) == 2
    assert [(r.device_id, r.topic) for r in rejects] == [
        ("d1", "devices/d1/monitoring"),
        ("d2", "devices/d2/monitoring"),
        ("d3", "devices/d3/monitoring"),
    ]
    assert "malformed JSON" in rejects[0].reason
    assert "does not match" in rejects[1].reason
    assert "not UTF-8" in rejects[2].reason
    assert rejects[0].payload == b"{oops"
    assert (len(rejects[2].payload), rejects[2].size) == (1024, 2000), "first KiB kept, size recorded"


def test_a_message_the_database_refuses_costs_only_itself(engine, store, monkeypatch):
    real = store._samples

    def samples(conn, payloads):
        if any(p.device_id == "poison" for p in payloads):
            raise IntegrityError("INSERT INTO samples", {}, Exception("simulated constraint failure"))
        return real(conn, payloads)

    monkeypatch.setattr(store, "_samples", samples)
    result = store.write([msg("d1", 0), msg("poison", 0), msg("d1", 1)])
    assert (result.stored, result.rejected) == (2, 1)
    with engine.connect() as conn:
        reasons = conn.execute(select(Reject.device_id, Reject.reason)).all()
        assert conn.scalar(select(func.count()).select_from(Payload)) == 2
    assert reasons == [("poison", "database refused it: Exception: simulated constraint failure")]


def test_a_nul_character_in_a_string_never_breaks_the_batch(engine, store):
    odd = payload("d1", 1)
    odd["metrics"]["system"]["hostname"] = "bad\u0000name"
    batch = [msg("d1", 0), Message("devices/d1/monitoring", json.dumps(odd).encode(), time.time()), msg("d2", 0)]
    result = store.write(batch)
    assert result.stored + result.rejected == 3
    assert result.stored >= 2, "the other messages are stored"


def test_new_devices_and_attributes_are_merged(engine, store):
    first = payload("d9", 0)
    second = payload("d9", 1)
    second["metrics"]["system"]["hostname"] = "renamed"
    second["metrics"]["system"]["kernel"] = "6.1"
    for p in (first, second):
        store.write([Message("devices/d9/monitoring", json.dumps(p).encode(), time.time())], now=FUTURE)
    with engine.connect() as conn:
        attrs = conn.scalar(select(Device.attributes).where(Device.id == "d9"))
    assert attrs == {"system-hostname": "renamed", "system-agent_version": "0.1.0", "system-kernel": "6.1"}


def test_gaps_are_found_filled_and_asked_for(engine, store):
    gaps = store.gaps
    assert gaps is not None
    store.write([msg("d1", 0), msg("d1", 1)], now=FUTURE)
    store.write([msg("d1", 5), msg("d1", 9)], now=FUTURE)
    assert [(g.first, g.last) for g in gaps.open_gaps("d1")] == [(2, 4), (6, 8)]
    store.write([msg("d1", 3)], now=FUTURE)  # a late payload splits the gap
    assert [(g.first, g.last) for g in gaps.open_gaps("d1")] == [(2, 2), (4, 4), (6, 8)]
    now = time.time()
    assert gaps.due(now) == [], "not before resend_after"
    due = gaps.due(now + 1.5)
    assert sorted((g.first, g.last) for g in due) == [(2, 2), (4, 4), (6, 8)]
    assert gaps.due(now + 2) == [], "asked again only after a doubled wait"


def test_a_restarted_tracker_finds_the_holes_in_the_database(engine, store):
    from edgemon_server.gaps import GapTracker

    store.write([msg("d1", 0), msg("d1", 4)], now=FUTURE)
    fresh = Store(engine, gaps=GapTracker(engine, resend_after=1.0))
    fresh.write([msg("d1", 5)], now=FUTURE)
    assert fresh.gaps is not None
    assert [(g.first, g.last) for g in fresh.gaps.open_gaps("d1")] == [(1, 3)]


def test_sqlite_runs_in_wal_mode(sqlite_url):
    from edgemon_server.db import make_engine

    eng = make_engine(sqlite_url)
    with eng.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    eng.dispose()


def test_missing_counter_equals_the_scan_of_payloads(engine, store):
    """devices.first_seq/max_seq/received give missing in O(1); it must equal the gaps in payloads."""
    import random

    from edgemon_server.db import Device

    ordered = select(Payload.seq.label("seq"), func.lag(Payload.seq).over(order_by=Payload.seq).label("prev")).where(
        Payload.device_id == "d1"
    )
    sub = ordered.subquery()
    scan = select(func.coalesce(func.sum(sub.c.seq - sub.c.prev - 1), 0)).where(sub.c.seq > sub.c.prev + 1)

    rng = random.Random(7)
    seqs = [s for s in range(60) if rng.random() > 0.2]
    order = seqs + rng.sample(seqs, 10)  # late duplicates too
    rng.shuffle(order)
    for start in range(0, len(order), 7):
        store.write([msg("d1", s) for s in order[start : start + 7]])
    with engine.connect() as conn:
        device = conn.execute(select(Device).where(Device.id == "d1")).one()
        scanned = conn.execute(scan).scalar()
    assert (device.first_seq, device.max_seq) == (min(seqs), max(seqs))
    assert device.received == len(seqs)
    assert device.max_seq - device.first_seq + 1 - device.received == scanned == (max(seqs) - min(seqs) + 1 - len(seqs))


def test_the_series_cache_is_bounded(engine, store):
    store.max_cached_series = 60
    store.write([msg("d1", 0), msg("d2", 0)])  # 2 x 51 series: over the bound after this batch
    assert len(store._series) == 102
    store.write([msg("d3", 0)])  # cleared, then refilled with what this batch needs
    assert len(store._series) == 51
    store.write([msg("d1", 1)])
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Sample)) == 4 * SAMPLES_PER_PAYLOAD
        assert conn.scalar(select(func.count()).select_from(Series)) == 3 * SAMPLES_PER_PAYLOAD


def poison_messages(device: str) -> list[Message]:
    """Messages that once killed the writer: an alert severity that is a list or an object, and an
    unpaired surrogate in a key next to a leaf error (the reason quoted the surrogate)."""
    alert_list = payload(device, 50)
    alert_list["alerts"] = [{"rule": "x", "severity": ["critical"], "message": "m"}]
    alert_obj = payload(device, 51)
    alert_obj["alerts"] = [{"rule": "x", "severity": {"a": 1}, "message": "m"}]
    surrogate = json.dumps(payload(device, 52)).replace('"metrics": {', '"metrics": {"k\\ud800": {"v": [1]}, ', 1)
    nul = json.dumps(payload(device, 53)).replace('"metrics": {', '"metrics": {"n\\u0000ul": "x\\u0000", ', 1)
    topic = f"devices/{device}/monitoring"
    return [
        Message(topic, json.dumps(alert_list).encode(), time.time()),
        Message(topic, json.dumps(alert_obj).encode(), time.time()),
        Message(topic, surrogate.encode(), time.time()),
        Message(topic, nul.encode(), time.time()),
    ]


def test_poison_messages_are_rejects_and_the_rest_of_the_batch_is_stored(store, engine):
    batch = [msg("dev-p", 1), *poison_messages("dev-p"), msg("dev-p", 2)]
    result = store.write(batch)
    assert (result.stored, result.rejected) == (2, 4)
    with engine.connect() as conn:
        reasons = conn.execute(select(Reject.reason).order_by(Reject.id)).scalars().all()
        seqs = conn.execute(select(Payload.seq).where(Payload.device_id == "dev-p")).scalars().all()
    assert sorted(seqs) == [1, 2]
    assert "severity" in reasons[0]
    assert "severity" in reasons[1]
    assert "\\ud800" in reasons[2], "the device's unpaired surrogate is escaped in the reason, not stored raw"
    assert all("\x00" not in r for r in reasons)
    assert store.write([msg("dev-p", 3)]).stored == 1, "the store goes on"


def test_a_validation_bug_costs_one_message_not_the_batch(store, engine, monkeypatch):
    from edgemon_server import store as store_mod

    real = store_mod.parse  # type: ignore[attr-defined]

    def buggy(topic, body, limits, now):
        if b'"seq": 7,' in body:
            raise TypeError("unhashable type: 'list'")
        return real(topic, body, limits, now)

    monkeypatch.setattr(store_mod, "parse", buggy)
    result = store.write([msg("dev-q", 6), msg("dev-q", 7), msg("dev-q", 8)])
    assert (result.stored, result.rejected) == (2, 1)
    with engine.connect() as conn:
        (reason,) = conn.execute(select(Reject.reason)).scalars().all()
    assert reason == "validation failed unexpectedly: TypeError: unhashable type: 'list'"


def test_dead_letters_are_capped_per_device_and_expire(store, engine):
    now = time.time()
    bad = [Message("devices/dev-spam/monitoring", b"{broken %d" % i, now) for i in range(30)]
    store.write(bad, now=now)
    store.write([Message("devices/dev-other/monitoring", b"{broken", now - 8 * 86400)], now=now)
    deleted = store.prune_rejects(now, keep_days=7, per_device=10)
    assert deleted == 21
    with engine.connect() as conn:
        rows = conn.execute(select(Reject.device_id, Reject.payload).order_by(Reject.id)).all()
    assert [d for d, _ in rows] == ["dev-spam"] * 10
    assert rows[-1][1] == b"{broken 29", "the newest are kept"
    assert rows[0][1] == b"{broken 20"


def test_reject_log_lines_are_rate_limited_per_device(store, caplog):
    import logging

    from edgemon_server import store as store_mod

    with caplog.at_level(logging.WARNING, logger="edgemon_server"):
        store.write([Message("devices/dev-loud/monitoring", b"{x", time.time()) for _ in range(100)])
        store.write([Message("devices/dev-quiet/monitoring", b"{x", time.time())])
    lines = [r for r in caplog.records if r.getMessage() == "payload rejected"]
    assert sum(r.device == "dev-loud" for r in lines) == store_mod.REJECT_LOGS
    assert sum(r.device == "dev-quiet" for r in lines) == 1, "one loud device does not silence the others"
