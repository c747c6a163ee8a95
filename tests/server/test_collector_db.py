"""Acknowledge after commit: while the database is down nothing is acknowledged, so nothing is lost."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from edgemon.config import MqttSettings
from edgemon_server import migrations
from edgemon_server.collector import Collector
from edgemon_server.config import ServerConfig, ServerSettings
from edgemon_server.db import Payload, make_engine
from edgemon_server.store import Store
from tests.fleet import Fleet
from tests.harness import COLLECTOR_CN

pytestmark = pytest.mark.slow


class DownStore(Store):
    """The database is unreachable."""

    def write(self, messages, now=None):
        raise OperationalError("INSERT", {}, Exception("connection refused"))


def wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_nothing_is_acknowledged_while_the_database_is_down(broker, pki, sqlite_url, caplog):
    ident = pki.issue(COLLECTOR_CN)
    mqtt = MqttSettings(
        endpoint="localhost",
        port=broker.port,
        ca=str(pki.ca_path),
        cert=str(ident.cert),
        key=str(ident.key),
        min_reconnect_delay=0.2,
        max_reconnect_delay=1.0,
    )
    config = ServerConfig(server=ServerSettings(database_url=sqlite_url, client_id="collector-db"), mqtt=mqtt)
    engine = make_engine(sqlite_url)
    migrations.upgrade(engine)

    down = Collector(config, DownStore(engine))
    down.start()
    assert down.connected.wait(10)
    time.sleep(0.3)  # subscribed
    fleet = Fleet(broker, pki, 2, prefix="dbd")
    fleet.publish(5)
    assert fleet.wait(20)
    assert wait(lambda: down.stats.db_errors >= 1, 10)
    assert "database unavailable; batch kept, not acknowledged" in caplog.text
    down.stop(timeout=5)
    assert down.stats.stored == 0

    up = Collector(config, Store(engine))  # same client id: the broker's session still holds the messages
    up.start()
    try:
        with engine.connect() as conn:
            assert wait(lambda: conn.scalar(select(func.count()).select_from(Payload)) == 10, 20)
            conn.rollback()
            assert sorted(conn.execute(select(Payload.device_id, Payload.seq)).all()) == [
                (d.name, s) for d in fleet.devices for s in range(5)
            ]
    finally:
        up.stop(timeout=5)
        fleet.stop()
        engine.dispose()


def test_the_ingest_queue_is_bounded_by_bytes_too():
    import queue

    from edgemon_server.collector import ByteBoundedQueue
    from edgemon_server.store import Message

    q = ByteBoundedQueue(maxsize=1000, max_bytes=1000)
    q.put_nowait(Message("t", b"x" * 600, 0))
    q.put_nowait(Message("t", b"x" * 600, 0))  # one message may cross the bound
    with pytest.raises(queue.Full):
        q.put_nowait(Message("t", b"x", 0))
    assert q.bytes == 1200
    q.get_nowait()
    q.put_nowait(Message("t", b"x" * 100, 0))
    assert (len(q.queue), q.bytes) == (2, 700)
    q.get_nowait()
    q.get_nowait()
    assert q.empty()
    q.put_nowait(Message("t", b"x" * 5000, 0))
    assert not q.empty(), "a message larger than the bound still gets through, alone"


class BrokenStore(Store):
    """A store whose writer itself is broken (a bug, not a message): not an OperationalError."""

    def write(self, messages, now=None):
        raise RuntimeError("the writer's own bug")


def test_a_broken_writer_stops_the_collector_visibly_and_acknowledges_nothing(broker, pki, sqlite_url, caplog):
    ident = pki.issue(COLLECTOR_CN)
    mqtt = MqttSettings(
        endpoint="localhost", port=broker.port, ca=str(pki.ca_path), cert=str(ident.cert), key=str(ident.key)
    )
    config = ServerConfig(server=ServerSettings(database_url=sqlite_url, client_id="collector-db"), mqtt=mqtt)
    engine = make_engine(sqlite_url)
    migrations.upgrade(engine)
    collector = Collector(config, BrokenStore(engine))
    fatal: list[str] = []
    collector.on_fatal = fatal.append
    collector.start()
    try:
        assert collector.connected.wait(10)
        time.sleep(0.3)
        fleet = Fleet(broker, pki, 1, prefix="brk")
        fleet.publish(1)
        assert wait(lambda: bool(fatal), 10)
        assert fatal == ["RuntimeError: the writer's own bug"]
        assert collector.stats.state == "failed"
        assert "collector writer failed; stopping" in caplog.text
        fleet.stop()
    finally:
        collector.stop(timeout=5)
        engine.dispose()
    assert collector.stats.state == "failed", "stop() does not hide the failure"


def test_the_collect_command_exits_70_when_its_writer_dies(monkeypatch, sqlite_url):
    from edgemon_server import cli

    class FakeCollector:
        def __init__(self, *_a, **_k):
            from edgemon_server.collector import CollectorStats

            self.stats = CollectorStats()
            self.topics, self.client_id = ["t"], "c"
            self.on_fatal = lambda _r: None

        def start(self):
            self.stats.fatal = "RuntimeError: boom"
            self.on_fatal(self.stats.fatal)

        def stop(self):
            pass

    from edgemon_server.config import load

    monkeypatch.setattr("edgemon_server.collector.Collector", FakeCollector)
    monkeypatch.setattr("signal.signal", lambda *_a: None)  # leave pytest's own handlers alone
    config = load(None, environ={})
    engine = make_engine(sqlite_url)
    try:
        assert cli._collect(config, engine) == cli.EXIT_WRITER_FAILED == 70
    finally:
        engine.dispose()


def lingering_collector(tmp_path, batch_ms: int, batch_rows: int = 20000) -> Collector:
    """A collector that never connects: only its writer's batching is used."""
    url = f"sqlite:///{tmp_path}/linger.db"
    mqtt = MqttSettings(endpoint="127.0.0.1", port=1, insecure_local=True)
    server = ServerSettings(database_url=url, client_id="linger", batch_ms=batch_ms, batch_rows=batch_rows)
    return Collector(ServerConfig(server=server, mqtt=mqtt), Store(make_engine(url)))


@pytest.mark.parametrize("stop", [False, True])
def test_a_batch_lingers_for_payloads_that_arrive_within_batch_ms(tmp_path, stop):
    import threading

    from edgemon_server.store import Message

    collector = lingering_collector(tmp_path, batch_ms=400)
    collector.queue.put(Message("devices/a/monitoring", b"{}", 0))

    def trickle() -> None:  # four more payloads, 50 ms apart: a steady fleet, never a queue
        for _ in range(4):
            time.sleep(0.05)
            collector.queue.put(Message("devices/a/monitoring", b"{}", 0))

    if stop:
        collector._stop.set()
    feeder = threading.Thread(target=trickle)
    started = time.monotonic()
    feeder.start()
    batch = collector._next_batch()
    took = time.monotonic() - started
    feeder.join()
    if stop:
        assert len(batch) == 1, "a stopping collector does not linger"
        assert took < 0.1
    else:
        assert len(batch) == 5, "one commit for the payloads of the window, not one each"
        assert 0.35 <= took < 1.0, "and the window is batch_ms"


def test_a_batch_closes_early_at_batch_rows(tmp_path):
    from edgemon_server.store import Message

    collector = lingering_collector(tmp_path, batch_ms=5000, batch_rows=100)
    for _ in range(3):
        collector.queue.put(Message("devices/a/monitoring", b"x" * 1000, 0))  # ~50 leaves each
    started = time.monotonic()
    assert len(collector._next_batch()) == 2
    assert time.monotonic() - started < 0.5, "full before the window ended"
