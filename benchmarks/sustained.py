"""Sustained load: a fleet at its normal pace (not an overload) through the real collector, per database.

``--devices`` simulated devices (default 1,000), each with its own certificate and MQTT 5 connection,
publish one payload (51 samples) every ``--interval`` seconds (default 10: 100 payloads/s), evenly
spread, for ``--minutes`` (default 5), to mosquitto (mutual TLS) -> ``edgemon-server collect`` ->
the database, which holds ``--samples`` of history beforehand (default 34,000,000, the devices' own
series, rollups up to date). An ``edgemon-server api`` process on the same database answers
``latest`` of a random device and a 1-hour ``series`` of a random device's CPU, in a loop, first
with the fleet idle (the baseline of the same run) and then under the load.

Reported side by side, per database: the collector's CPU (and PostgreSQL's, all its processes),
the machine's disk write rate and its ratio to the payload bytes received (write amplification),
publish-to-commit lag p50/p99, payloads lost, the SQLite WAL's largest size, and API p95 idle and
under load.

Run: ``.venv/bin/python benchmarks/sustained.py [--db sqlite,postgresql] [--devices 1000]
[--minutes 5] [--samples 34000000]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, func, select, text

from edgemon_server import migrations, partitions
from edgemon_server.db import Payload, make_engine
from edgemon_server.store import Message, Store
from tests.fleet import SAMPLES_PER_PAYLOAD, Fleet, payload
from tests.harness import COLLECTOR_CN, Mosquitto, Pki, collector_process_env, free_port, temporary_pg_database

SERVER_BIN = Path(sys.executable).parent / "edgemon-server"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def prefill(engine: Engine, names: list[str], samples: int, interval: float, start: float) -> int:
    """Each device's seq 0 through the store (its rows, series and metadata), then history before it."""
    store = Store(engine)
    for i in range(0, len(names), 100):
        store.write(
            [
                Message(f"devices/{n}/monitoring", json.dumps(payload(n, 0, interval, start)).encode(), start)
                for n in names[i : i + 100]
            ],
            now=start + 1,
        )
    with engine.connect() as conn:
        series = conn.execute(text("SELECT count(*) FROM series")).scalar() or 1
    per_series = max(1, samples // series)
    first_ms = round((start - per_series * interval) * 1000)
    step = round(interval * 1000)
    done = 0
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(text("SELECT id FROM series ORDER BY id"))]
    for i in range(0, len(ids), 2000):
        chunk = ids[i : i + 2000]
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(
                    text(
                        "INSERT INTO samples (series_id, ts, value) SELECT s, :first + g * :step, random() * 100 "
                        "FROM unnest(CAST(:ids AS integer[])) s, generate_series(0, :n - 1) g"
                    ),
                    {"first": first_ms, "step": step, "n": per_series, "ids": chunk},
                )
            else:
                conn.execute(
                    text(
                        "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < :n - 1) "
                        "INSERT INTO samples (series_id, ts, value) "
                        f"SELECT s.id, :first + g.i * :step, abs(random() % 10000) / 100.0 FROM series s, g "
                        f"WHERE s.id BETWEEN {chunk[0]} AND {chunk[-1]} ORDER BY s.id, g.i"
                    ),
                    {"first": first_ms, "step": step, "n": per_series},
                )
        done += len(chunk) * per_series
    top = round((start - 600) * 1000)
    with engine.begin() as conn:  # rollups are up to date, as in a steady state
        for tier, width in (("5m", 300_000), ("1h", 3_600_000)):
            conn.execute(text("DELETE FROM rollup_state WHERE tier = :t"), {"t": tier})
            conn.execute(text("INSERT INTO rollup_state VALUES (:t, :c)"), {"t": tier, "c": top - top % width})
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    return done


class ApiProbe:
    """Requests in a loop on one keep-alive connection; latencies per phase."""

    def __init__(self, port: int, names: list[str]) -> None:
        self.port, self.names = port, names
        self.phase = "idle"
        self.lat: dict[tuple[str, str], list[float]] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(5)
        client = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self._stop.is_set():
            d = rng.choice(self.names)
            now = time.time()
            for kind, url in (
                ("latest", f"/api/v1/devices/{d}/latest"),
                ("series 1 h", f"/api/v1/devices/{d}/series?metric=cpu-percent&from={now - 3600}&to={now}"),
            ):
                t0 = time.perf_counter()
                try:
                    client.request("GET", url)
                    response = client.getresponse()
                    response.read()
                    ok = response.status == 200
                except OSError:
                    client = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                    ok = False
                if not ok:
                    self.errors += 1
                    continue
                self.lat.setdefault((self.phase, kind), []).append((time.perf_counter() - t0) * 1000)
            self._stop.wait(0.1)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def postgres_procs() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["name"]):
        if (p.info.get("name") or "").startswith("postgres"):
            out.append(p)
    return out


def run(kind: str, url: str, broker: Mosquitto, pki: Pki, args: argparse.Namespace) -> dict[str, Any]:
    """One database's run; the collector and API processes end with it, whatever happens."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        return _run(kind, url, broker, pki, args, procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)


def _run(
    kind: str, url: str, broker: Mosquitto, pki: Pki, args: argparse.Namespace, procs: list[subprocess.Popen[bytes]]
) -> dict[str, Any]:
    engine = make_engine(url)
    migrations.upgrade(engine)
    start = time.time()
    names = [f"s{kind[:2]}-{i:04d}" for i in range(args.devices)]
    if kind == "postgresql":
        partitions.maintain(engine, round(start * 1000), None)
    t0 = time.perf_counter()
    history = prefill(engine, names, args.samples, args.interval, start - args.interval)
    print(f"[{kind}] history: {history:,} samples in {time.perf_counter() - t0:.0f} s", flush=True)

    ident = pki.issue(COLLECTOR_CN)
    env = collector_process_env(
        broker,
        ident,
        url,
        EDGEMON_CLIENT_ID=f"sus-{kind}",
        EDGEMON_LOG_LEVEL="warning",
        EDGEMON_RESEND_AFTER="0",
        # 1,000 simulated devices take about a minute to connect after the history is written: not an outage
        EDGEMON_SILENT_FACTOR="1000",
    )
    collector = subprocess.Popen([str(SERVER_BIN), "collect"], env=env, stdout=subprocess.DEVNULL)
    procs.append(collector)
    port = free_port()
    api_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEMON_")}
    api_env.update(
        {
            "EDGEMON_DATABASE_URL": url,
            "EDGEMON_HTTP_BIND": f"127.0.0.1:{port}",
            "EDGEMON_RATE_LIMIT": "",
            "EDGEMON_LOG_LEVEL": "warning",
        }
    )
    api = subprocess.Popen([str(SERVER_BIN), "api"], env=api_env, stdout=subprocess.DEVNULL)
    procs.append(api)
    time.sleep(3.0)
    fleet = Fleet(
        broker,
        pki,
        args.devices,
        prefix=names[0][:3],
        window=4,
        interval=args.interval,
        pace=args.interval,
        start=start - args.interval,
    )
    probe = ApiProbe(port, names)
    probe.start()
    time.sleep(args.idle)  # the baseline: connected fleet, nothing published
    probe.phase = "load"
    now = time.monotonic()
    for i, dev in enumerate(fleet.devices):  # evenly spread over one interval
        dev.next_at = now + i * args.interval / args.devices
    count = int(args.minutes * 60 / args.interval)
    coll = psutil.Process(collector.pid)
    pg = postgres_procs() if kind == "postgresql" else []
    cpu0, pg0, io0, w0 = cpu_seconds([coll]), cpu_seconds(pg), psutil.disk_io_counters(), time.monotonic()
    wal_max = 0
    fleet.publish(count, start=1)
    deadline = time.monotonic() + args.minutes * 60 + 5
    wal = Path(url.removeprefix("sqlite:///") + "-wal") if kind == "sqlite" else None
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if wal is not None and wal.exists():
            wal_max = max(wal_max, wal.stat().st_size)
    wall = time.monotonic() - w0
    cpu1, pg1, io1 = cpu_seconds([coll]), cpu_seconds(pg), psutil.disk_io_counters()
    probe.stop()
    fleet.wait(30)
    time.sleep(2.0)
    expected = args.devices * count
    with engine.connect() as conn:
        rows = conn.execute(select(Payload.device_id, Payload.seq, Payload.received).where(Payload.seq > 0)).all()
        size = conn.execute(select(func.count()).select_from(Payload)).scalar()
    received = {(d, s): r for d, s, r in rows}
    lags = [
        received[(d.name, s)] / 1000 - t
        for d in fleet.devices
        for s, t in d.published_at.items()
        if (d.name, s) in received
    ]
    fleet.stop()
    engine.dispose()
    body_bytes = (
        sum(len(json.dumps(payload(names[0], s, args.interval, start), separators=(",", ":"))) for s in range(1, 4)) / 3
    )
    written = (io1.write_bytes - io0.write_bytes) / wall if io0 and io1 else float("nan")
    data_rate = len(rows) / wall * body_bytes
    return {
        "kind": kind,
        "stored": len(rows),
        "expected": expected,
        "lost": expected - len(rows),
        "payloads_total": size,
        "collector_cpu": (cpu1 - cpu0) / wall,
        "postgres_cpu": (pg1 - pg0) / wall,
        "disk_write_mb_s": written / 1e6,
        "data_mb_s": data_rate / 1e6,
        "amplification": written / data_rate if data_rate else float("nan"),
        "lag_p50": statistics.median(lags) if lags else float("nan"),
        "lag_p99": pct(lags, 0.99),
        "wal_max_mb": wal_max / 1e6,
        "api": {k: (pct(v, 0.5), pct(v, 0.95), len(v)) for k, v in probe.lat.items()},
        "api_errors": probe.errors,
        "history": history,
    }


def report(r: dict[str, Any]) -> None:
    k = r["kind"]
    print(f"\n== {k}: {r['history']:,} samples of history ==")
    print(f"payloads stored {r['stored']:,} of {r['expected']:,} (lost {r['lost']})")
    print(
        f"collector CPU {r['collector_cpu'] * 100:.1f} % of a core (goal <= 10 %)"
        + (f"; PostgreSQL processes {r['postgres_cpu'] * 100:.1f} %" if k == "postgresql" else "")
    )
    print(
        f"disk writes {r['disk_write_mb_s']:.2f} MB/s (goal <= 5) for {r['data_mb_s']:.3f} MB/s of payloads: "
        f"{r['amplification']:.0f}x write amplification"
    )
    print(f"lag publish -> commit p50 {r['lag_p50'] * 1000:.0f} ms, p99 {r['lag_p99'] * 1000:.0f} ms (goal p99 < 1 s)")
    if k == "sqlite":
        print(f"largest WAL {r['wal_max_mb']:.1f} MB")
    for kind, goal in (("latest", 10), ("series 1 h", 20)):
        idle = r["api"].get(("idle", kind), (float("nan"),) * 3)
        load = r["api"].get(("load", kind), (float("nan"),) * 3)
        print(
            f"API {kind:10}: idle p95 {idle[1]:6.1f} ms, under load p50 {load[0]:6.1f} p95 {load[1]:6.1f} ms "
            f"({load[1] / idle[1]:.2f}x idle; goal p95 < {goal} ms {'met' if load[1] < goal else 'MISSED'}; "
            f"{load[2]} requests)"
        )
    if r["api_errors"]:
        print(f"API errors: {r['api_errors']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--samples", type=int, default=34_000_000)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of the idle API baseline")
    parser.add_argument("--pg-url", default=PG_ADMIN)
    args = parser.parse_args()
    print(
        f"{args.devices} devices x 1 payload ({SAMPLES_PER_PAYLOAD} samples) / {args.interval:g} s = "
        f"{args.devices / args.interval:.0f} payloads/s, {args.devices / args.interval * SAMPLES_PER_PAYLOAD:,.0f} "
        f"samples/s, for {args.minutes:g} min; {psutil.cpu_count()} CPUs",
        flush=True,
    )
    with tempfile.TemporaryDirectory(dir=os.environ.get("EDGEMON_BENCH_DIR")) as tmp:
        work = Path(tmp)
        pki = Pki(work / "pki")
        broker = Mosquitto(work / "broker", pki)
        broker.start()
        try:
            for kind in args.db.split(","):
                if kind == "sqlite":
                    report(run(kind, f"sqlite:///{work}/sustained.db", broker, pki, args))
                    continue
                with temporary_pg_database(args.pg_url, "edgemon_sustained") as url:
                    report(run(kind, url, broker, pki, args))
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
