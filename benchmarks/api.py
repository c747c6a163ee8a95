"""HTTP API benchmark: p50/p95 over HTTP against the bare SQL, same run, same database.

Builds a SQLite database (through the migrations) of 1,000 devices x 50
metrics x 200 samples (10,000,000 samples, 10 s apart) plus one device with
a full day at 10 s (50 x 8,640 samples) for the downsampled series, and one
device with a year of CPU as the default retention leaves it (raw 10 s
samples for 14 days, 5-minute rollups for 180 days, hourly ones for the
year); serves it with ``edgemon-server api`` (waitress); then times, over
HTTP from this process, ``latest`` of random devices, a 24 h ``series``
downsampled to 500 points, a 1-year series (500 points, from the rollups),
the ``devices`` page (100 devices with headline values) and the fleet query
(the fullest disk of every device, top 20), and the same work run directly on
a SQLAlchemy connection. The HTTP client keeps its connection open
(HTTP/1.1 keep-alive, as a browser does).

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

from edgemon_server import migrations, rollups
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
    total += year(db)
    db.execute("UPDATE series SET last_ts = (SELECT max(ts) FROM samples WHERE series_id = series.id)")
    db.execute(  # what the writer keeps for the latest values
        "UPDATE series SET last_value = (SELECT value FROM samples WHERE series_id = series.id AND ts = last_ts)"
    )
    db.execute("ANALYZE")
    db.close()
    return total


def year(db: sqlite3.Connection) -> int:
    """The "year" device's CPU: raw for 14 days, 5-minute rollups for 180, hourly for 365, rolled up to now."""
    db.execute("BEGIN")
    db.execute(
        "INSERT INTO devices (id, first_seen, last_seen, last_ts, last_seq, interval, attributes, received,"
        " duplicates, first_seq, max_seq) VALUES ('year', ?, ?, ?, 1, 10, '{}', 1, 0, 1, 1)",
        (NOW_MS - 365 * DAY_MS, NOW_MS, NOW_MS),
    )
    sid = db.execute("INSERT INTO series (device_id, key) VALUES ('year', 'cpu-percent') RETURNING id").fetchone()[0]
    rng = random.Random(3)
    raw = [(sid, NOW_MS - j * 10_000, rng.random() * 100) for j in range(14 * DAY_MS // 10_000)]
    db.executemany("INSERT INTO samples VALUES (?, ?, ?)", sorted(raw))
    for table, width, days in (("rollups_5m", 300_000, 180), ("rollups_1h", 3_600_000, 365)):
        top = NOW_MS - 600_000
        top -= top % width
        rows = []
        for j in range(1, days * DAY_MS // width):
            lo, hi = sorted((rng.random() * 100, rng.random() * 100))
            rows.append((sid, top - j * width, width // 10_000, (lo + hi) / 2 * width // 10_000, lo, hi, hi))
        db.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?)", sorted(rows))
        db.execute("INSERT INTO rollup_state VALUES (?, ?)", ("5m" if width == 300_000 else "1h", top))
    db.execute("COMMIT")
    return len(raw)


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
            conn.execute(q.count_query(sid, start, end, "sqlite")).scalar()
            return conn.execute(q.buckets_query(sid, start, end, (end - start + 499) // 500, "sqlite")).all()

        def bare_devices() -> Any:
            rows = conn.execute(q.devices_page("", "id", False, None, 100)).all()
            ids = [r.id for r in rows]
            return q.metric_counts(conn, ids), q.headlines(conn, ids, q.metadata(conn, ids))

        year_from = (NOW_MS - 365 * DAY_MS) / 1000

        def bare_year() -> Any:  # what the endpoint runs for a year: the hourly tier, raw where it stops
            sid = q.series_ids(conn, "year", ["cpu-percent"])["cpu-percent"]
            start, end = int(year_from * 1000), int(to * 1000)
            width = (end - start + 499) // 500
            tier = rollups.tier_for(width)
            assert tier == "1h"
            base, wide = rollups.aligned(tier, start, width)
            return rollups.read_buckets(conn, tier, sid, base, end, wide)

        def bare_query() -> Any:  # the fleet query's work: candidate series, their newest values, the top 20
            pattern = "disk-usage-*-percent"
            rows = conn.execute(
                select(q.SERIES.c.id, q.SERIES.c.device_id, q.SERIES.c.last_value).where(
                    q.SERIES.c.key.like(q.like(pattern), escape="!"), q.key_prefix(pattern, "sqlite")
                )
            ).all()
            best: dict[str, float] = {}
            for _sid, device, value in rows:
                if value is not None and value > best.get(device, -1e308):
                    best[device] = value
            return sorted(best.items(), key=lambda kv: -kv[1])[:20]

        series_url = f"/api/v1/devices/dense/series?metric=cpu-percent&from={frm}&to={to}&points=500"
        year_url = f"/api/v1/devices/year/series?metric=cpu-percent&from={year_from}&to={to}&points=500"
        query_url = "/api/v1/query?metric=disk-usage-*-percent&agg=max&top=20"
        cases = [
            ("latest", over_http("/api/v1/devices/{d}/latest"), bare_latest, 10),
            ("series 24 h -> 500 points", over_http(series_url), bare_series, 20),
            ("series 1 year (rollups)", over_http(year_url), bare_year, 50),
            ("devices (page of 100)", over_http("/api/v1/devices?limit=100"), bare_devices, 50),
            ("query: fullest disk, top 20", over_http(query_url), bare_query, 100),
        ]
        got_year = json.load(urllib.request.urlopen(base + year_url))["series"][0]
        assert got_year["downsampled"], got_year
        assert 300 <= len(got_year["points"]) <= 500, len(got_year["points"])
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
