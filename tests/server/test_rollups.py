"""Rollups right with late data, and retention that deletes exactly what is past its horizon."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select, text

from edgemon_server import queries as q
from edgemon_server import rollups
from edgemon_server.config import Retention
from edgemon_server.store import Message, Store
from tests.fleet import payload

DAY = 86_400
FOREVER = Retention(0, 0, 0)


def write(store: Store, device: str, seqs: Any, start: float, now: float | None = None) -> None:
    """Payloads ``seqs`` of ``device`` (at ``start + seq`` s): each as it happened (``now`` None), or all at ``now``."""
    docs = [payload(device, seq, start=start) for seq in seqs]
    if now is None:  # as they happened: a batch per 4 minutes, each arriving a second after its last
        batches: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        for seq, doc in zip(seqs, docs, strict=True):
            batches.setdefault(int(seq // 240), []).append((seq, doc))
        for batch in batches.values():
            arrived = start + batch[-1][0] + 1
            store.write(
                [Message(f"devices/{device}/monitoring", json.dumps(d).encode(), arrived) for _, d in batch],
                now=arrived,
            )
        return
    store.write([Message(f"devices/{device}/monitoring", json.dumps(d).encode(), now) for d in docs], now=now)


def expected(engine, width: int, key: str) -> dict[int, tuple[int, float, float, float, float]]:
    """The tier as computed here from raw: bucket -> (count, sum, min, max, last)."""
    out: dict[int, list[tuple[int, float]]] = {}
    with engine.connect() as conn:  # every raw sample: rows, and on PostgreSQL the packed hours too
        ids = [r[0] for r in conn.execute(text("SELECT id FROM series WHERE key = :key"), {"key": key})]
        raw = q.raw_rows(ids, 0, 2**62, conn.dialect.name)
        rows = conn.execute(select(raw.c.ts, raw.c.value)).all() if ids else []
    for ts, value in rows:
        out.setdefault(ts - ts % width, []).append((ts, value))
    return {
        b: (len(v), sum(x for _, x in v), min(x for _, x in v), max(x for _, x in v), max(v)[1]) for b, v in out.items()
    }


def raw_count(engine, lo: int, hi: int, device: str | None = None) -> int:
    """Raw samples in [lo, hi] of ``device`` (of every device: None), rows and packed chunks alike."""
    with engine.connect() as conn:
        query = select(q.SERIES.c.id)
        if device is not None:
            query = query.where(q.SERIES.c.device_id == device)
        ids = [r[0] for r in conn.execute(query)]
        if not ids:
            return 0
        return int(
            conn.execute(select(func.count()).select_from(q.raw_rows(ids, lo, hi, conn.dialect.name))).scalar() or 0
        )


def tier(engine, name: str, key: str) -> dict[int, tuple[int, float, float, float, float]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT r.bucket, r.count, r.sum, r.min, r.max, r.last FROM {name} r "
                "JOIN series k ON k.id = r.series_id WHERE k.key = :key"
            ),
            {"key": key},
        ).all()
    return {b: (c, s, lo, hi, last) for b, c, s, lo, hi, last in rows}


def test_samples_three_days_late_change_the_rolled_up_buckets_to_the_right_values(store, engine):
    now = time.time()
    t0 = now - 3 * DAY
    t0 -= t0 % 3600  # an hour's start: 12 five-minute buckets, one hourly
    write(store, "late", range(0, 3600, 20), t0)  # live, three days ago: every 20 s
    assert rollups.maintain(engine, FOREVER, round(now * 1000))["rolled"] > 0
    key = "cpu-percent"
    before = tier(engine, "rollups_5m", key)
    assert before == expected(engine, 300_000, key)
    assert len(before) == 12
    write(store, "late", range(10, 3600, 20), t0, now=now)  # the backlog: the samples in between, now
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rollups.DIRTY)).scalar() == 12, "each bucket marked"
    assert tier(engine, "rollups_5m", key) == before, "not yet recomputed"
    report = rollups.maintain(engine, FOREVER, round(now * 1000))
    assert report["dirty"] == 12
    for name, width in (("rollups_5m", 300_000), ("rollups_1h", 3_600_000)):
        assert tier(engine, name, key) == expected(engine, width, key), name
    assert tier(engine, "rollups_1h", key)[round(t0 * 1000)][0] == 360, "all 360 samples of the hour"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rollups.DIRTY)).scalar() == 0


def test_live_payloads_mark_nothing_and_recent_buckets_wait(store, engine):
    now = time.time()
    write(store, "live", range(0, 60), now - 60, now=now)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rollups.DIRTY)).scalar() == 0
    rollups.maintain(engine, FOREVER, round(now * 1000))
    assert tier(engine, "rollups_5m", "cpu-percent") == {}, "a bucket is rolled up once it ended 10 min ago"


@pytest.mark.slow  # heavy on PostgreSQL; `make test` runs it
def test_retention_deletes_exactly_what_is_past_the_horizon_while_the_collector_writes(store, engine):
    now = time.time()
    old = now - 20 * DAY
    write(store, "kept", range(0, 600, 10), old)
    write(store, "kept", range(0, 600, 10), now - 2 * DAY)
    rollups.maintain(engine, FOREVER, round(now * 1000))  # roll everything up first
    horizon = round((now - 14 * DAY) * 1000)
    before_new = raw_count(engine, horizon, 2**62, "kept")
    latencies: list[float] = []
    stop = threading.Event()

    def collector() -> None:  # live payloads keep arriving during the deletes
        seq = 10_000
        while not stop.is_set():
            started = time.monotonic()
            write(store, "live", [seq], time.time() - seq, now=time.time())  # ts = now
            latencies.append(time.monotonic() - started)
            seq += 1

    thread = threading.Thread(target=collector)
    thread.start()
    try:
        deleted = rollups.apply_retention(engine, Retention(14 * DAY, 0, 0), round(now * 1000))
    finally:
        stop.set()
        thread.join()
    if engine.dialect.name == "postgresql":
        dropped = deleted["partitions_dropped"] + deleted["chunks"]
        assert dropped >= 1, "the old day went whole: a partition, or the chunks its hours were packed in"
    else:
        assert deleted["samples"] > 0
    older = raw_count(engine, 0, horizon - 1)
    newer = raw_count(engine, horizon, 2**62, "kept")
    with engine.connect() as conn:
        live = conn.execute(text("SELECT received FROM devices WHERE id = 'live'")).scalar()
    assert older == 0, "nothing older than the horizon is left"
    assert newer == before_new, "nothing newer was touched"
    assert live == len(latencies), "every payload written meanwhile is there"
    assert max(latencies) < 1.0, "the writer was never held up for long"
    assert tier(engine, "rollups_1h", "cpu-percent"), "the rollups outlive the raw samples"


@pytest.mark.slow  # heavy on PostgreSQL; `make test` runs it
def test_raw_samples_wait_for_their_late_buckets(store, engine):
    now = time.time()
    t0 = now - 30 * DAY
    write(store, "slow", range(0, 300, 10), t0)
    rollups.roll_forward(engine, round(now * 1000), budget_s=30)
    write(store, "slow", range(5, 300, 10), t0, now=now)  # late data 30 days old, not yet rolled up
    rollups.apply_retention(engine, Retention(14 * DAY, 0, 0), round(now * 1000))
    with engine.connect() as conn:
        kept = conn.execute(select(func.count()).select_from(rollups.PAYLOADS)).scalar()
        samples = conn.execute(select(func.count()).select_from(rollups.SAMPLES)).scalar()
    assert kept == 60, "kept until the late bucket is rolled up"
    assert samples == 60 * 51, "every sample of the 60 payloads"
    rollups.maintain(engine, Retention(14 * DAY, 0, 0), round(now * 1000))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rollups.SAMPLES)).scalar() == 0
    assert sum(c for c, *_ in tier(engine, "rollups_5m", "cpu-percent").values()) == 60


def test_the_cli_maintains_once_and_reads_retention(tmp_path, sqlite_url, capsys):
    from edgemon_server import cli

    cfg = tmp_path / "server.toml"
    cfg.write_text(f'[server]\ndatabase_url = "{sqlite_url}"\n\n[retention]\nraw = "30d"\n')
    assert cli.main(["maintain", "-c", str(cfg)]) == 0
    assert "rolled=" in capsys.readouterr().out
    cfg.write_text(f'[server]\ndatabase_url = "{sqlite_url}"\n\n[retention]\nraw = "10m"\n')
    assert cli.main(["maintain", "-c", str(cfg)]) == 2
    assert "server.toml:5: retention.raw: at least 1h" in capsys.readouterr().err


@pytest.mark.slow
def test_long_ranges_read_the_rollups_and_agree_with_raw_and_outlive_it(store, engine):
    from edgemon_server import queries as q
    from edgemon_server.api import ApiSettings, create_app

    now = time.time()
    start = now - 3 * DAY
    write(store, "long", range(0, 3 * DAY - 1200, 120), start)  # every 2 min for 3 days
    rollups.maintain(engine, FOREVER, round(now * 1000))
    client = create_app(engine, ApiSettings(rate_limit="")).test_client()
    frm, to = round(start * 1000), round(now * 1000)
    url = f"/api/v1/devices/long/series?metric=cpu-percent&from={frm / 1000}&to={to / 1000}&points=100"
    (tiered,) = client.get(url).get_json()["series"]
    assert tiered["downsampled"] is True
    width = tiered["bucket_ms"]
    assert width % 300_000 == 0, "on the tier's grid: each rollup bucket falls in exactly one of them"
    base = frm - frm % 300_000
    assert tiered["points"][0][0] == base
    with engine.connect() as conn:
        sid = q.series_ids(conn, "long", ["cpu-percent"])["cpu-percent"]
        raw = [
            [base + int(b) * width, lo, hi, avg]
            for b, lo, hi, avg in conn.execute(q.buckets_query(sid, base, to, width, conn.dialect.name))
        ]
    assert len(tiered["points"]) == len(raw)
    for got, want in zip(tiered["points"], raw, strict=True):
        assert got[:3] == want[:3]
        assert abs(got[3] - want[3]) < 1e-9
    assert tiered["count"] == 3 * DAY // 120 - 10
    rollups.apply_retention(engine, Retention(DAY, 0, 0), round(now * 1000))  # raw older than a day goes
    (after,) = client.get(url).get_json()["series"]
    assert after["points"][0][0] == tiered["points"][0][0], "the first days still chart, from the rollups"
    assert len(after["points"]) == len(tiered["points"])
