"""Server fixtures: databases (SQLite and the real PostgreSQL), collector processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from edgemon_server import migrations
from edgemon_server.db import Base, make_engine
from edgemon_server.gaps import GapTracker
from edgemon_server.store import Store
from tests.conftest import broker_env, json_lines
from tests.harness import temporary_pg_database
from tests.server.notifying import receiver  # noqa: F401 - the local HTTP receiver fixture of notification tests

SERVER_BIN = Path(sys.executable).parent / "edgemon-server"
PG_ADMIN = os.environ.get("EDGEMON_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    with temporary_pg_database(PG_ADMIN) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same tests on SQLite and on the real PostgreSQL (never skipped: CI starts it)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/edgemon.db"
    else:
        yield from _pg_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/edgemon.db"


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    """One migrated PostgreSQL database for the session's ``engine`` fixtures (emptied before each test).

    ``CREATE DATABASE`` costs about 0.3 s (it copies and syncs a template); emptying the tables of
    one migrated database costs a few milliseconds. Tests that need an empty, unmigrated database
    use ``db_url``, which still creates one.
    """
    for url in _pg_database():
        eng = make_engine(url)
        migrations.upgrade(eng)
        eng.dispose()
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated, empty SQLite file; each ``engine`` gets a copy (running the migrations per test
    cost about 0.1 s each, 14 s of the fast loop)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "edgemon.db"
    eng = make_engine(f"sqlite:///{path}")
    migrations.upgrade(eng)
    with eng.begin() as conn:
        conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    eng.dispose()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database: SQLite in the test's directory, or the session's PostgreSQL one."""
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("sqlite_template"), tmp_path / "edgemon.db")
        eng = make_engine(f"sqlite:///{tmp_path}/edgemon.db")
    else:
        eng = make_engine(request.getfixturevalue("pg_session_url"))
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with eng.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield eng
    eng.dispose()


@pytest.fixture
def store(engine: Engine) -> Store:
    return Store(engine, gaps=GapTracker(engine, resend_after=1.0))


class CollectorProc:
    """``edgemon-server collect`` in a subprocess, logging JSON lines to a file."""

    def __init__(self, env: dict[str, str], log: Path, args: tuple[str, ...] = ()) -> None:
        self.env = env
        self.log = log
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CollectorProc:
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                [str(SERVER_BIN), "collect", *self.args], env={**os.environ, **self.env}, stdout=fh, stderr=fh
            )
        return self

    def wait_subscribed(self, timeout: float = 20) -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(r.get("msg") == "subscribed" for r in self.records()):
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"collector exited: {self.log.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"collector did not subscribe: {self.log.read_text()}")

    def records(self) -> list[dict[str, Any]]:
        return json_lines(self.log)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(20)


@pytest.fixture
def collector_env(broker, pki, tmp_path: Path):
    """Environment of a collector on the test broker: client id ``collector-<n>``, certificate CN
    ``edgemon-collector-<n>`` (the broker binds the client id to the CN, so each collector has its own)."""
    identities: dict[str, Any] = {}

    def make(db_url: str, client_id: str = "collector-1", **extra: str) -> dict[str, str]:
        cn = f"edgemon-{client_id}"
        ident = identities.get(cn) or identities.setdefault(cn, pki.issue(cn))
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEMON_")}
        env.update(
            {
                "EDGEMON_DATABASE_URL": db_url,
                **broker_env(broker, pki, ident),
                "EDGEMON_CLIENT_ID": client_id,
                "EDGEMON_RESEND_AFTER": "1",
                "EDGEMON_LOG_FORMAT": "json",
            }
        )
        env.update(extra)
        return env

    return make


@pytest.fixture
def run_collector(tmp_path: Path):
    procs: list[CollectorProc] = []

    def start(env: dict[str, str]) -> CollectorProc:
        proc = CollectorProc(env, tmp_path / f"collector-{len(procs)}.log").start()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop(signal.SIGKILL)


PG_IN_THE_SLOW_LOOP = (
    "tests/server/test_api.py",
    "tests/server/test_alerts.py",
    "tests/server/test_interop.py",
    "tests/server/test_overview.py",
    "tests/server/test_tags.py",
    "tests/server/test_fleet_config.py",
)
"""Modules whose PostgreSQL variants run only in the full suite: each builds a fleet per test (about
0.5 s on PostgreSQL), and their SQLite variants cover the same API code in the fast loop; the store,
rollups, partitions and migrations keep both databases in the fast loop."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the PostgreSQL variants of ``PG_IN_THE_SLOW_LOOP`` slow (`make test` still runs them)."""
    for item in items:
        if item.nodeid.startswith(PG_IN_THE_SLOW_LOOP) and "[postgresql" in item.nodeid:
            item.add_marker(pytest.mark.slow)
