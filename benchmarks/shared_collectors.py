"""Scale-out: two collectors on a shared subscription against one, under the same steady fleet.

Usage::

    .venv/bin/python benchmarks/shared_collectors.py [--devices 100] [--seconds 30]

A fleet of ``--devices`` simulated devices (each its own certificate and MQTT 5 client) publishes one
realistic payload (51 samples) per device per second for ``--seconds`` through mosquitto with mutual
TLS into SQLite, first with one ``edgemon-server collect``, then with two on a shared subscription
(``EDGEMON_SHARED_GROUP``), each run on a fresh database. Printed per run: payloads stored (exactly
once?), resend requests the collectors sent (with no loss there should be none: gaps are judged from
what is committed, not from what one member saw), and the collectors' CPU seconds per million stored
rows; the ratio of the two runs is the cost of scaling out.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select

from edgemon_server import migrations
from edgemon_server.db import Payload, make_engine
from tests.fleet import SAMPLES_PER_PAYLOAD, Fleet
from tests.harness import COLLECTOR_CN, Mosquitto, Pki, collector_process_env

SERVER_BIN = Path(sys.executable).parent / "edgemon-server"


def cpu_seconds(pid: int) -> float:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def run(work: Path, broker: Mosquitto, pki: Pki, members: int, devices: int, seconds: int) -> dict[str, float]:
    url = f"sqlite:///{work}/m{members}.db"
    engine = make_engine(url)
    migrations.upgrade(engine)
    procs = []
    for i in range(1, members + 1):
        ident = pki.issue(f"{COLLECTOR_CN}-{i}")
        env = collector_process_env(
            broker,
            ident,
            url,
            EDGEMON_CLIENT_ID=f"collector-{i}",
            EDGEMON_LOG_FORMAT="json",
            EDGEMON_RESEND_AFTER="2",
            **({"EDGEMON_SHARED_GROUP": "ingest"} if members > 1 else {}),
        )
        log = open(work / f"m{members}-c{i}.log", "wb")  # noqa: SIM115 - closed with the process below
        procs.append((subprocess.Popen([str(SERVER_BIN), "collect"], env=env, stdout=log, stderr=log), log))
    time.sleep(3.0)
    cpu0 = sum(cpu_seconds(p.pid) for p, _ in procs)
    fleet = Fleet(broker, pki, devices, prefix=f"s{members}", window=8, pace=1.0)
    fleet.publish(seconds)
    total = devices * seconds
    deadline = time.time() + seconds + 120
    stored = 0
    while time.time() < deadline:
        time.sleep(1.0)
        with engine.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(Payload)) or 0
        if stored >= total:
            break
    time.sleep(5)  # a sweep or two after the last payload: would anything be asked for?
    cpu = sum(cpu_seconds(p.pid) for p, _ in procs) - cpu0
    fleet.stop()
    for proc, log in procs:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
    asks = 0
    for i in range(1, members + 1):
        for line in (work / f"m{members}-c{i}.log").read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("msg") == "asked a device for missing payloads":
                asks += 1
    with engine.connect() as conn:
        distinct = len(set(conn.execute(select(Payload.device_id, Payload.seq)).all()))
    engine.dispose()
    rows = stored * SAMPLES_PER_PAYLOAD
    return {"expected": total, "stored": stored, "distinct": distinct or 0, "asks": asks, "cpu_per_m": cpu / rows * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pki = Pki(work / "pki")
        broker = Mosquitto(work / "broker", pki)
        broker.start()
        try:
            results = {m: run(work, broker, pki, m, args.devices, args.seconds) for m in (1, 2)}
        finally:
            broker.stop()
    for members, r in results.items():
        print(
            f"{members} collector(s): stored {r['stored']:,} of {r['expected']:,} ({r['distinct']:,} distinct), "
            f"resend requests {r['asks']}, CPU {r['cpu_per_m']:.1f} s per million rows"
        )
    ratio = results[2]["cpu_per_m"] / results[1]["cpu_per_m"]
    verdict = "met" if ratio <= 1.1 and results[2]["asks"] == 0 else "MISSED"
    print(f"two collectors / one, CPU per stored row: {ratio:.2f}x (goal <= 1.1x, no resend requests): {verdict}")


if __name__ == "__main__":
    main()
