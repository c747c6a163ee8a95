"""Retention's storage mechanics: PostgreSQL day partitions, SQLite incremental vacuum."""

from __future__ import annotations

import time

import pytest
from alembic import command
from sqlalchemy import text

from edgemon_server import migrations, partitions, rollups
from edgemon_server.config import Retention
from edgemon_server.db import make_engine
from edgemon_server.store import Store
from tests.server.test_rollups import DAY, write

NOW_MS = 1_796_126_400_000  # 2026-12-01 12:00 UTC: a fixed clock, mid-day
D = partitions.DAY_MS


def day_partitions(engine) -> dict[str, tuple[int | None, int | None]]:
    with engine.connect() as conn:
        return {p.name: (p.lo, p.hi) for p in partitions.partitions(conn) if p.name != partitions.DEFAULT}


def where(engine, ts: int) -> str:
    """The partition holding the sample at ``ts``."""
    with engine.connect() as conn:
        return str(conn.execute(text("SELECT tableoid::regclass FROM samples WHERE ts = :ts"), {"ts": ts}).scalar())


def add_sample(engine, ts: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO devices (id, first_seen, last_seen, last_ts, last_seq, interval, attributes, received, "
                "duplicates) VALUES ('p', 0, 0, 0, 0, 10, '{}', 0, 0) ON CONFLICT DO NOTHING"
            )
        )
        sid = conn.execute(text("SELECT id FROM series WHERE device_id = 'p'")).scalar()
        if sid is None:
            sid = conn.execute(text("INSERT INTO series (device_id, key) VALUES ('p', 'x') RETURNING id")).scalar()
        conn.execute(text("INSERT INTO samples VALUES (:s, :ts, 1.0)"), {"s": sid, "ts": ts})


@pytest.fixture
def pg(engine):
    assert engine.dialect.name == "postgresql"
    with engine.begin() as conn:  # the session database keeps partitions made by earlier tests
        for p in partitions.partitions(conn):
            if p.name != partitions.DEFAULT:
                conn.execute(text(f"DROP TABLE {p.name}"))
    return engine


def test_name_and_day_follow_utc():
    assert partitions.name_for(partitions.day_of(NOW_MS)) == "samples_p20261201"
    assert partitions.day_of(NOW_MS) % D == 0
    assert 0 <= NOW_MS - partitions.day_of(NOW_MS) < D
    assert partitions.is_partition("samples_p20261201")
    assert partitions.is_partition("samples_default")
    assert not partitions.is_partition("samples")
    assert not partitions.is_partition("series")


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_partitions_are_made_ahead_filled_from_default_and_dropped_whole(pg):
    today = partitions.day_of(NOW_MS)
    report = partitions.maintain(pg, NOW_MS, horizon_ms=None)
    assert report == {"created": 4, "dropped": 0, "default": 0}
    assert day_partitions(pg) == {
        partitions.name_for(today + i * D): (today + i * D, today + (i + 1) * D) for i in range(4)
    }
    assert partitions.maintain(pg, NOW_MS, None)["created"] == 0, "idempotent"

    add_sample(pg, NOW_MS)
    assert where(pg, NOW_MS) == "samples_p20261201"
    ten_days_ago, twenty_days_ago = NOW_MS - 10 * D, NOW_MS - 20 * D
    add_sample(pg, ten_days_ago)  # a backlog from before any partition existed
    add_sample(pg, twenty_days_ago)  # older than the horizon below
    assert where(pg, ten_days_ago) == partitions.DEFAULT

    horizon = NOW_MS - 14 * D
    report = partitions.maintain(pg, NOW_MS, horizon)
    assert report["created"] == 1, "the backlog's day got its partition"
    assert where(pg, ten_days_ago) == "samples_p20261121"
    assert where(pg, twenty_days_ago) == partitions.DEFAULT, "no partition is made that would expire at once"
    assert report["default"] == 1, "and the stray row is reported"

    report = partitions.maintain(pg, NOW_MS, horizon_ms=NOW_MS - 5 * D)
    assert report["dropped"] == 1
    assert "samples_p20261121" not in day_partitions(pg)
    with pg.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM samples WHERE ts = :t"), {"t": ten_days_ago}).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM samples WHERE ts = :t"), {"t": NOW_MS}).scalar() == 1


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_maintenance_makes_todays_partition_and_live_rows_land_in_it(pg):
    store = Store(pg)
    now = time.time()
    report = rollups.maintain(pg, Retention(14 * DAY, 0, 0), round(now * 1000))
    assert report["partitions_created"] == 4
    assert report["partitions_default"] == 0
    write(store, "live", range(0, 60, 10), now - 60, now=now)
    with pg.connect() as conn:
        homes = conn.execute(
            text(
                "SELECT DISTINCT s.tableoid::regclass::text FROM samples s JOIN series k ON k.id = s.series_id "
                "WHERE k.device_id = 'live'"
            )
        ).scalars()
        assert set(homes) <= {partitions.name_for(partitions.day_of(round((now - t) * 1000))) for t in (0, 60)}


@pytest.mark.slow  # heavy on PostgreSQL; `make test` runs it
def test_an_older_postgresql_database_keeps_its_samples_as_the_legacy_partition(db_url):
    eng = make_engine(db_url)
    if eng.dialect.name != "postgresql":
        migrations.upgrade(eng)  # SQLite: 0012 changes nothing
        with eng.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM samples")).scalar() == 0
        eng.dispose()
        return
    migrations.upgrade(eng, "0011")
    old = round(time.time() * 1000) - 3 * D
    add_sample(eng, old)
    migrations.upgrade(eng)
    assert where(eng, old) == partitions.LEGACY
    with eng.connect() as conn:
        assert partitions.is_partitioned(conn)
        newest = conn.execute(text("SELECT last_ts, last_value FROM series WHERE device_id = 'p'")).one()
        assert tuple(newest) == (old, 1.0), "0013 fills each series' newest sample from what is stored"
    report = partitions.maintain(eng, round(time.time() * 1000), horizon_ms=None)
    assert report["created"] >= 3, "days after the legacy range get partitions"
    add_sample(eng, round(time.time() * 1000) + 2 * D)
    command.downgrade(migrations.alembic_config(eng), "0011")  # and back: one plain table with every row
    with eng.connect() as conn:
        assert not partitions.is_partitioned(conn)
        assert conn.execute(text("SELECT count(*) FROM samples")).scalar() == 2
    eng.dispose()


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)  # PostgreSQL drops partitions (above)
def test_sqlite_retention_hands_pages_back_in_steps(engine, store):
    now = time.time()
    write(store, "old", range(0, 6000, 10), now - 30 * DAY)
    write(store, "new", range(0, 600, 10), now - 60)
    rollups.maintain(engine, Retention(0, 0, 0), round(now * 1000))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2, "new files are made incremental"
        pages_before = conn.exec_driver_sql("PRAGMA page_count").scalar()
    report = rollups.apply_retention(engine, Retention(14 * DAY, 0, 0), round(now * 1000))
    assert report["samples"] > 0
    assert report["vacuumed_pages"] > 0
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA freelist_count").scalar() == 0
        assert conn.exec_driver_sql("PRAGMA page_count").scalar() < pages_before
