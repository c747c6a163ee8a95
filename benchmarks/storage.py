"""Storage benchmark: bytes per raw sample on SQLite and PostgreSQL, through the real store.

For each database: a fresh, migrated database (its size is the baseline, measured in the same run),
then ``--devices`` simulated devices x ``--payloads`` payloads of 51 samples each (the shape of
``tests/fleet.py``: CPU, memory, disks, network, GPU, sensors), written through ``Store.write`` in
batches of 100 payloads as the collector writes them ("as rows": the size then), then maintenance as
it runs a day later ("after": rollups added, and on PostgreSQL the day's hours packed into
``sample_chunks``, its emptied partition dropped, and the database vacuumed, as autovacuum would).
Printed: the database's size over the baseline divided by the raw samples, against the targets
(SQLite <= 30 B, PostgreSQL <= 40 B), and the bytes per sample of the packed chunks alone.

Run: ``.venv/bin/python benchmarks/storage.py [--devices 100 --payloads 360] [--pg-url URL]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, func, select, text

from edgemon_server import migrations, partitions, rollups
from edgemon_server.config import Retention
from edgemon_server.db import make_engine
from edgemon_server.store import Message, Store
from tests.fleet import payload
from tests.harness import temporary_pg_database


def fill(engine: Engine, devices: int, payloads: int) -> tuple[int, float]:
    """Write the fleet through the store; (samples, seconds)."""
    store = Store(engine)
    start = time.time() - payloads * 10 - 3600
    samples = 0
    began = time.perf_counter()
    for first in range(0, payloads, 100):
        batch = []
        for seq in range(first, min(payloads, first + 100)):
            for d in range(devices):
                doc = payload(f"dev-{d:04d}", seq, interval=10.0, start=start)
                batch.append(Message(f"devices/dev-{d:04d}/monitoring", json.dumps(doc).encode(), time.time()))
        for i in range(0, len(batch), 100):
            samples += store.write(batch[i : i + 100]).samples
    return samples, time.perf_counter() - began


def measure(name: str, engine: Engine, size: Callable[[], int], devices: int, payloads: int, target: float) -> None:
    migrations.upgrade(engine)
    # the day partitions maintenance keeps ready (PostgreSQL), from the first sample's day on
    partitions.maintain(engine, round((time.time() - payloads * 10 - 3600) * 1000), None)
    empty = size()
    samples, seconds = fill(engine, devices, payloads)
    raw = size() - empty
    # maintenance a day later, when the day the samples are in is over: rollups, and on PostgreSQL every
    # hour packed and the emptied day partition dropped (two rounds: each has a time budget)
    later = round((time.time() + 26 * 3600) * 1000)
    report = rollups.maintain(engine, Retention(0, 0, 0), later)
    report["packed_hours"] += rollups.maintain(engine, Retention(0, 0, 0), later)["packed_hours"]
    packed_line = ""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM"))  # what autovacuum does: emptied pages reusable, empty tails cut
            chunk_bytes = conn.execute(text("SELECT pg_total_relation_size('sample_chunks')")).scalar() or 0
            inside = conn.execute(text("SELECT coalesce(sum(cardinality(ts)), 0) FROM sample_chunks")).scalar() or 0
        if inside:
            packed_line = (
                f"\n{'':10} packed: {report['packed_hours']} hours, {int(inside):,} samples in chunks, "
                f"{chunk_bytes / int(inside):.1f} B/sample in sample_chunks (table, TOAST and index)"
            )
    with engine.connect() as conn:
        rolled = sum(
            int(conn.execute(select(func.count()).select_from(t)).scalar() or 0) for t, _w in rollups.TIERS.values()
        )
    total = size() - empty
    final = total / samples
    print(
        f"{name:10} {samples:>12,} {seconds:8.1f} {raw / samples:10.1f} {final:12.1f} {rolled:>12,}"
        f"   <= {target:g} B: {'met' if final <= target else 'MISSED'}{packed_line}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--payloads", type=int, default=360, help="per device, 10 s apart (360: an hour)")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    print(f"{'database':10} {'samples':>12} {'write s':>8} {'as rows B':>10} {'after B':>12} {'rollup rows':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "storage.db"
        engine = make_engine(f"sqlite:///{path}")

        def sqlite_size() -> int:
            with engine.connect() as conn:
                conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
                pages = conn.execute(text("PRAGMA page_count")).scalar() or 0
                free = conn.execute(text("PRAGMA freelist_count")).scalar() or 0
                page = conn.execute(text("PRAGMA page_size")).scalar() or 0
            return int((pages - free) * page)

        measure("sqlite", engine, sqlite_size, args.devices, args.payloads, 30)
        engine.dispose()
    with temporary_pg_database(args.pg_url, "edgemon_bench") as url:
        engine = make_engine(url)

        def pg_size() -> int:
            with engine.connect() as conn:
                conn.execute(text("CHECKPOINT"))
                return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar() or 0)

        measure("postgresql", engine, pg_size, args.devices, args.payloads, 40)
        engine.dispose()


if __name__ == "__main__":
    main()
