"""HTTP API benchmark: p50/p95 over HTTP against the bare SQL, same run, same database.

Builds a SQLite database (through the migrations) of 1,000 devices x 50
metrics x 200 samples (10,000,000 samples, 10 s apart) plus one device with
a full day at 10 s (50 x 8,640 samples) for the downsampled series; serves it
with ``edgemon-server api`` (waitress); then times, over HTTP from this
process, ``latest`` of random devices, a 24 h ``series`` downsampled to 500
points, and the ``devices`` page (100 devices with headline values), and the
same queries run directly on a SQLAlchemy connection. The HTTP client keeps
its connection open (HTTP/1.1 keep-alive, as a browser does).

Run: ``.venv/bin/python benchmarks/api.py [--devices 1000] [--requests 300]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select

from edgemon_server import migrations
from edgemon_server import queries as q
from edgemon_server.db import make_engine
from tests.harness import free_port

SERVER_BIN = Path(sys.executable).parent / "edgemon-server"
KEYS = (
    ["cpu-percent", "memory-percent", "disk-usage-sda-percent", "disk-usage-sdb-percent"]
    + [f"cpu-core-{i}-percent" for i in range(16)]
    + [f"net-eth{i % 4}-m{i}" for i in range(30)]
)
NOW_MS = int(time.time() * 1000)
DAY_MS = 86_400_000


def build(path: Path, devices: int, per_series: int) -> int:
    migrations.upgrade(make_engine(f"sqlite:///{path}"))
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    names = [f"dev-{i:05d}" for i in range(devices)] + ["dense"]
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO devices (id, first_seen, last_seen, last_ts, last_seq, interval, attributes, received,"
        ' duplicates, first_seq, max_seq) VALUES (?, ?, ?, ?, ?, 10, \'{"system-hostname": "h"}\', ?, 0, 1, ?)',
        [(n, NOW_MS - DAY_MS, NOW_MS, NOW_MS, per_series, per_series, per_series) for n in names],
    )
    db.executemany("INSERT INTO series (device_id, key) VALUES (?, ?)", [(n, k) for n in names for k in KEYS])
    db.execute("COMMIT")
    ids = {(d, k): i for i, d, k in db.execute("SELECT id, device_id, key FROM series")}
    total = 0
    rng = random.Random(1)
    for name in names:
        count = DAY_MS // 10_000 if name == "dense" else per_series
        rows = [
            (ids[(name, key)], NOW_MS - (count - j) * 10_000, rng.random() * 100) for key in KEYS for j in range(count)
        ]
        db.execute("BEGIN")
        db.executemany("INSERT INTO samples VALUES (?, ?, ?)", rows)
        db.execute("COMMIT")
        total += len(rows)
    db.execute("ANALYZE")
    db.close()
    return total


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return sorted(out)


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--per-series", type=int, default=200)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "api.db"
        start = time.perf_counter()
        total = build(path, args.devices, args.per_series)
        print(f"database: {total:,} samples, {args.devices + 1} devices, built in {time.perf_counter() - start:.0f} s")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEMON_")}
        env.update(
            {
                "EDGEMON_DATABASE_URL": f"sqlite:///{path}",
                "EDGEMON_HTTP_BIND": f"127.0.0.1:{port}",
                "EDGEMON_RATE_LIMIT": "",
                "EDGEMON_LOG_LEVEL": "warning",
            }
        )
        server = subprocess.Popen([str(SERVER_BIN), "api"], env=env, stdout=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        rng = random.Random(2)
        names = [f"dev-{i:05d}" for i in range(args.devices)]
        frm, to = (NOW_MS - DAY_MS) / 1000, NOW_MS / 1000

        client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # keep-alive, as a browser does

        def get(url: str) -> Any:
            client.request("GET", url.replace("{d}", rng.choice(names)))
            response = client.getresponse()
            body = response.read()
            assert response.status == 200, body[:200]
            return json.loads(body)

        def over_http(url: str) -> Callable[[], Any]:
            return lambda: get(url)

        engine = make_engine(f"sqlite:///{path}")
        conn = engine.connect()

        def bare_latest() -> Any:  # what the endpoint runs: the device row, then every series' newest value
            name = rng.choice(names)
            conn.execute(select(q.DEVICES).where(q.DEVICES.c.id == name)).first()
            return conn.execute(q.metrics_query(name, "")).all()

        def bare_series() -> Any:
            sid = q.series_ids(conn, "dense", ["cpu-percent"])["cpu-percent"]
            start, end = int(frm * 1000), int(to * 1000)
            conn.execute(q.count_query(sid, start, end)).scalar()
            return conn.execute(q.buckets_query(sid, start, end, (end - start + 499) // 500)).all()

        def bare_devices() -> Any:
            rows = conn.execute(q.devices_page("", "id", False, None, 100)).all()
            ids = [r.id for r in rows]
            return q.metric_counts(conn, ids), q.headlines(conn, ids, q.metadata(conn, ids))

        series_url = f"/api/v1/devices/dense/series?metric=cpu-percent&from={frm}&to={to}&points=500"
        cases = [
            ("latest", over_http("/api/v1/devices/{d}/latest"), bare_latest, 10),
            ("series 24 h -> 500 points", over_http(series_url), bare_series, 20),
            ("devices (page of 100)", over_http("/api/v1/devices?limit=100"), bare_devices, 50),
        ]
        got = json.load(urllib.request.urlopen(base + series_url))
        assert got["series"][0]["downsampled"], got["series"][0]["count"]
        assert len(got["series"][0]["points"]) == 500
        print(
            f"{'endpoint':28} {'HTTP p50':>9} {'HTTP p95':>9} {'SQL p50':>8} {'SQL p95':>8} {'ratio p50':>9}  goal p95"
        )
        for name, request, bare, goal in cases:
            timed(request, 20)
            h = timed(request, args.requests)
            b = timed(bare, args.requests)
            print(
                f"{name:28} {statistics.median(h):8.2f}  {pct(h, 0.95):8.2f}  {statistics.median(b):7.2f}  "
                f"{pct(b, 0.95):7.2f}  {statistics.median(h) / statistics.median(b):8.2f}x  < {goal} ms"
                f" {'met' if pct(h, 0.95) < goal else 'MISSED'}"
            )
        conn.close()
        engine.dispose()
        server.send_signal(signal.SIGTERM)
        server.wait(20)


if __name__ == "__main__":
    main()
