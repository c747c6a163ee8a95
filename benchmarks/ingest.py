"""Ingest benchmark: a simulated fleet -> mosquitto (mTLS) -> edgemon-server collect -> database.

Prints, in one run:

- the limit: raw ``sqlite3`` executemany rows/s into the same ``samples`` table
  (same pragmas: WAL, synchronous=FULL), 5,000 rows per transaction;
- end to end on SQLite: sustained rows/s from the first publish to the last
  stored payload, and the lag from publish to the writer's batch
  (``payloads.received``) at p50/p99;
- the same end to end on PostgreSQL (``--pg-url``, default the local server).

Run: ``.venv/bin/python benchmarks/ingest.py [--devices 100 --payloads 200]``
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select

from edgemon_server import migrations
from edgemon_server.db import Payload, make_engine
from tests.fleet import SAMPLES_PER_PAYLOAD, START, Fleet
from tests.harness import COLLECTOR_CN, Mosquitto, Pki, collector_process_env, temporary_pg_database

SERVER_BIN = Path(sys.executable).parent / "edgemon-server"


def raw_sqlite_limit(workdir: Path, rows: int = 1_000_000) -> float:
    url = f"sqlite:///{workdir}/limit.db"
    migrations.upgrade(make_engine(url))
    db = sqlite3.connect(workdir / "limit.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executemany(
        "INSERT INTO devices (id, first_seen, last_seen, last_ts, last_seq, interval, attributes, received, duplicates)"
        " VALUES (?, 0, 0, 0, 0, 1, '{}', 0, 0)",
        [("d",)],
    )
    db.executemany("INSERT INTO series (device_id, key) VALUES ('d', ?)", [(f"k{i}",) for i in range(50)])
    data = [(1 + i % 50, i // 50, float(i)) for i in range(rows)]
    start = time.perf_counter()
    for chunk in range(0, rows, 5000):
        db.execute("BEGIN")
        db.executemany("INSERT INTO samples (series_id, ts, value) VALUES (?, ?, ?)", data[chunk : chunk + 5000])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return rows / elapsed


def end_to_end(url: str, broker: Mosquitto, pki: Pki, devices: int, payloads: int, tag: str) -> dict[str, float]:
    migrations.upgrade(make_engine(url))
    ident = pki.issue(COLLECTOR_CN)
    env = collector_process_env(broker, ident, url, EDGEMON_CLIENT_ID=f"bench-{tag}", EDGEMON_LOG_LEVEL="warning")
    collector = subprocess.Popen([str(SERVER_BIN), "collect"], env=env)
    time.sleep(2.0)
    fleet = Fleet(broker, pki, devices, prefix=f"b{tag}", window=32)
    total = devices * payloads
    engine = make_engine(url)
    start = time.time()
    fleet.publish(payloads)
    stored = 0
    while stored < total and time.time() - start < 600:
        time.sleep(0.25)
        with engine.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(Payload)) or 0
    elapsed = time.time() - start
    with engine.connect() as conn:
        received = dict(
            ((d, s), r) for d, s, r in conn.execute(select(Payload.device_id, Payload.seq, Payload.received))
        )
        last = conn.scalar(select(func.max(Payload.received))) or 0
    lags = sorted(
        received[(d.name, s)] / 1000 - t
        for d in fleet.devices
        for s, t in d.published_at.items()
        if (d.name, s) in received
    )
    fleet.stop()
    collector.send_signal(signal.SIGTERM)
    collector.wait(30)
    engine.dispose()
    busy = last / 1000 - start
    return {
        "payloads": stored,
        "rows_per_s": stored * SAMPLES_PER_PAYLOAD / busy,
        "payloads_per_s": stored / busy,
        "elapsed_s": elapsed,
        "lag_p50_ms": statistics.median(lags) * 1000,
        "lag_p99_ms": lags[int(len(lags) * 0.99) - 1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--payloads", type=int, default=200, help="per device")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    assert time.time() > START
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pki = Pki(work / "pki")
        broker = Mosquitto(work / "broker", pki)
        broker.start()
        try:
            limit = raw_sqlite_limit(work)
            print(f"limit: raw sqlite3 executemany into samples: {limit:,.0f} rows/s")
            lite = end_to_end(f"sqlite:///{work}/e2e.db", broker, pki, args.devices, args.payloads, "lite")
            print(
                f"end to end, SQLite: {lite['rows_per_s']:,.0f} rows/s ({lite['payloads_per_s']:,.0f} payloads/s of "
                f"{SAMPLES_PER_PAYLOAD} samples), {lite['rows_per_s'] / limit:.2f}x the limit; "
                f"lag p50 {lite['lag_p50_ms']:.0f} ms, p99 {lite['lag_p99_ms']:.0f} ms "
                f"({lite['payloads']:,} payloads from {args.devices} devices)"
            )
            with temporary_pg_database(args.pg_url, "edgemon_bench") as pg_url:
                pg = end_to_end(pg_url, broker, pki, args.devices, args.payloads, "pg")
            print(
                f"end to end, PostgreSQL: {pg['rows_per_s']:,.0f} rows/s ({pg['payloads_per_s']:,.0f} payloads/s); "
                f"lag p50 {pg['lag_p50_ms']:.0f} ms, p99 {pg['lag_p99_ms']:.0f} ms"
            )
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
