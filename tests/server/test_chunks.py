"""PostgreSQL packs raw samples older than two hours into per-(series, hour) chunks; reads do not change."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select, text

from edgemon_server import chunks, partitions, queries, rollups
from edgemon_server.api import ApiSettings, create_app
from edgemon_server.config import Retention
from edgemon_server.store import Message, Store
from tests.fleet import SAMPLES_PER_PAYLOAD, payload
from tests.server.test_store import store_ts

HOUR = 3600
FOREVER = Retention(0, 0, 0)
pytestmark = [
    pytest.mark.parametrize("engine", ["postgresql"], indirect=True),  # SQLite keeps 20-byte rows
    pytest.mark.slow,  # hours of samples through the store; `make test` runs it
]


def write(store: Store, device: str, seqs, start: float, interval: float = 60.0) -> None:
    msgs = []
    for seq in seqs:
        doc = payload(device, seq, interval=interval, start=start)
        doc["metrics"]["net"]["eth0"]["rx_bytes"] = (seq % 50) * 1000  # a counter with resets
        msgs.append(Message(f"devices/{device}/monitoring", json.dumps(doc).encode(), time.time()))
    for i in range(0, len(msgs), 100):
        store.write(msgs[i : i + 100])
    describe = {"net-*-rx_bytes": {"unit": "B", "kind": "counter"}}
    doc = {"schema": 1, "device_id": device, "ts": payload(device, 0, start=start)["ts"], "metrics": describe}
    store.write([Message(f"devices/{device}/meta", json.dumps(doc).encode(), time.time())])


def rows_and_chunks(engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM samples")).scalar()
        packed = conn.execute(text("SELECT count(*), coalesce(sum(cardinality(ts)), 0) FROM sample_chunks")).one()
    return int(rows or 0), int(packed[0]), int(packed[1])


def reads(client, now: float) -> dict[str, object]:
    """What the API answers over the packed hours: raw points, buckets, a counter's rate, a fleet window."""
    base = "/api/v1/devices/pack-0/series?metric="
    out = {}
    for name, url in {
        "raw 1 h": f"{base}cpu-percent&from={now - 5 * HOUR}&to={now - 4 * HOUR}",
        "buckets 6 h": f"{base}cpu-percent&from={now - 6 * HOUR}&to={now}&points=50",
        "rate": f"{base}net-eth0-rx_bytes&fn=rate&from={now - 5 * HOUR}&to={now - 3 * HOUR}",
        "fleet window": f"/api/v1/query?metric=cpu-percent&agg=avg&from={now - 6 * HOUR}&to={now}",
    }.items():
        response = client.get(url)
        assert response.status_code == 200, (url, response.get_data(as_text=True))
        body = response.get_json()
        out[name] = body["results"] if "results" in body else body["series"]
    return out


def test_packing_moves_old_hours_into_chunks_and_every_read_is_unchanged(engine, store):
    now = time.time()
    start = now - 6 * HOUR
    for device in ("pack-0", "pack-1"):
        write(store, device, range(0, 6 * 60), start)  # six hours at 1 minute
    rollups.maintain(engine, FOREVER, round(now * 1000))  # rolls up, then packs what is rolled and 2 h old
    client = create_app(engine, ApiSettings(rate_limit="")).test_client()
    rows_before, _, _ = rows_and_chunks(engine)
    # the first round rolled everything up and packed; compare with an unpacked copy of the same data
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO samples SELECT c.series_id, u.ts, u.value FROM sample_chunks c, "
                "unnest(c.ts, c.value) AS u(ts, value)"
            )
        )
        conn.execute(text("DELETE FROM sample_chunks"))
        conn.execute(text("DELETE FROM rollup_state WHERE tier = :t"), {"t": chunks.TIER})
    unpacked = reads(client, now)
    total, _, _ = rows_and_chunks(engine)
    assert total > rows_before, "the copy has every sample as a row"
    report = rollups.maintain(engine, FOREVER, round(now * 1000))
    assert report["packed_hours"] >= 3
    rows, packed, inside = rows_and_chunks(engine)
    assert rows + inside == total, "nothing lost, nothing doubled"
    assert packed > 0
    assert rows < total / 2, "most of the six hours is packed"
    with engine.connect() as conn:
        upto = chunks.cursor(conn)
        assert upto is not None
        assert upto <= round(now * 1000) - chunks.COMPACT_AFTER_MS
        left = conn.execute(text("SELECT count(*) FROM samples WHERE ts < :u"), {"u": upto}).scalar()
    assert left == 0, "no row below the cursor"
    assert reads(client, now) == unpacked


def test_late_rows_join_their_chunk_and_the_rollups(engine, store):
    now = time.time()
    start = now - 6 * HOUR
    write(store, "pack-0", range(0, 6 * 60, 2), start)  # every other minute
    rollups.maintain(engine, FOREVER, round(now * 1000))
    rollups.maintain(engine, FOREVER, round(now * 1000))
    rows, packed, inside = rows_and_chunks(engine)
    late_seq = 61  # 1 h after start: a packed hour
    write(store, "pack-0", [late_seq], start)
    assert rows_and_chunks(engine)[0] == rows + SAMPLES_PER_PAYLOAD, "the late payload arrives as rows"
    rollups.maintain(engine, FOREVER, round(now * 1000))
    after_rows, after_packed, after_inside = rows_and_chunks(engine)
    assert after_packed == packed, "merged into the existing chunks, no new ones"
    assert after_inside > inside, "the late samples are packed with them"
    assert after_rows == rows
    client = create_app(engine, ApiSettings(rate_limit="")).test_client()
    when = start + late_seq * 60
    body = client.get(f"/api/v1/devices/pack-0/series?metric=cpu-percent&from={when - 1}&to={when + 1}").get_json()
    late_ms = store_ts(payload("pack-0", late_seq, interval=60.0, start=start))
    assert body["series"][0]["points"] == [[late_ms, (late_seq % 100) + 0.5]]


def test_retention_trims_chunks_to_the_horizon(engine, store):
    now = time.time()
    start = now - 6 * HOUR
    write(store, "pack-0", range(0, 6 * 60), start)
    rollups.maintain(engine, FOREVER, round(now * 1000))
    horizon_ms = round((start + 90 * 60) * 1000)  # mid-hour: 1 h 30 min after the start
    with engine.connect() as conn:
        series = rollups._all_series(conn)
    chunks.expire(engine, horizon_ms, series)
    with engine.connect() as conn:
        oldest = conn.execute(
            text("SELECT min(u.ts) FROM sample_chunks c, unnest(c.ts, c.value) AS u(ts, value)")
        ).scalar()
    assert oldest is not None
    assert oldest >= horizon_ms, "nothing older than the horizon is left in the chunks"


def test_a_day_packed_whole_loses_its_partition_and_keeps_its_samples(engine, store):
    now = time.time()
    day = partitions.day_of(round((now - 3 * 86400) * 1000))
    name = partitions.name_for(day)
    with engine.begin() as conn:
        if name not in {p.name for p in partitions.partitions(conn)}:
            partitions.create_day(conn, day)
    write(store, "pack-0", range(0, 120), day / 1000 + 3600)  # two hours inside that day
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {name}")).scalar() == 120 * SAMPLES_PER_PAYLOAD
    for _ in range(3):  # rollups, then packing, within each round's time budget
        rollups.maintain(engine, FOREVER, round(now * 1000))
    with engine.connect() as conn:
        assert name not in {p.name for p in partitions.partitions(conn)}, "an emptied day partition is dropped"
        ids = [r[0] for r in conn.execute(text("SELECT id FROM series WHERE device_id = 'pack-0'"))]
        raw = queries.raw_rows(ids, day, day + partitions.DAY_MS, conn.dialect.name)
        kept = conn.execute(select(func.count()).select_from(raw)).scalar()
    assert kept == 120 * SAMPLES_PER_PAYLOAD, "every sample is in the chunks"
