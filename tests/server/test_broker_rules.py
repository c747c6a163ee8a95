"""What the broker set-up guarantees, against a real mosquitto configured as `certs init` configures it:
no session takeover, explicit per-device topics, no retained messages, no oversized packets."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from edgemon_server.db import Payload, make_engine
from tests.fleet import payload

pytestmark = pytest.mark.slow


class Client:
    """A bare MQTT 5 client with a device's certificate and any client id it likes."""

    def __init__(self, broker: Any, identity: Any, client_id: str) -> None:
        from awscrt import mqtt5

        from tests.harness import mqtt5_client

        self.mqtt5 = mqtt5
        self.connected = threading.Event()
        self.disconnects: list[Any] = []
        self.client = mqtt5_client(
            broker,
            identity,
            client_id,
            session_behavior=mqtt5.ClientSessionBehaviorType.CLEAN,
            on_lifecycle_connection_success=lambda _d: self.connected.set(),
            on_lifecycle_disconnection=self._disconnected,
        )
        self.client.start()
        assert self.connected.wait(10), "could not connect"

    def _disconnected(self, data: Any) -> None:
        self.connected.clear()
        self.disconnects.append(data)

    def publish(self, topic: str, body: bytes, retain: bool = False) -> int | None:
        """Publish QoS 1; the PUBACK's reason code, or None when the broker dropped the connection."""
        packet = self.mqtt5.PublishPacket(topic=topic, payload=body, qos=self.mqtt5.QoS.AT_LEAST_ONCE, retain=retain)
        try:
            result = self.client.publish(packet).result(10)
        except Exception:  # noqa: BLE001 - the broker closed the connection
            return None
        puback = getattr(result, "puback", None)
        return int(puback.reason_code) if puback is not None else None

    def stop(self) -> None:
        self.client.stop()


def stored(url: str) -> int:
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            return conn.scalar(select(func.count()).select_from(Payload)) or 0
    except Exception:  # noqa: BLE001 - not migrated yet
        return 0
    finally:
        eng.dispose()


def wait_stored(url: str, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and stored(url) < n:
        time.sleep(0.2)
    return stored(url)


def body(device: str, seq: int) -> bytes:
    return json.dumps(payload(device, seq)).encode()


def test_a_device_cannot_take_over_the_collectors_session(broker, pki, sqlite_url, run_collector, collector_env):
    collector = run_collector(collector_env(sqlite_url))
    collector.wait_subscribed()
    dev = Client(broker, pki.issue("dev-honest"), "dev-honest")
    for seq in range(5):
        assert dev.publish("devices/dev-honest/monitoring", body("dev-honest", seq)) == 0
    assert wait_stored(sqlite_url, 5, 20) == 5
    # A device connects with the collector's client id (clean start: it would discard its session).
    evil = Client(broker, pki.issue("dev-evil"), "collector-1")
    time.sleep(1)
    for seq in range(5, 20):
        assert dev.publish("devices/dev-honest/monitoring", body("dev-honest", seq)) == 0
    assert wait_stored(sqlite_url, 20, 20) == 20, "every payload stored: the collector kept its session"
    # Nor can one device knock another off.
    other = Client(broker, pki.issue("dev-other"), "dev-honest")
    time.sleep(1)
    assert dev.connected.is_set()
    assert not dev.disconnects
    logs = [r.get("msg") for r in collector.records()]
    assert "collector disconnected" not in logs
    for c in (dev, evil, other):
        c.stop()


def test_a_certificate_named_like_a_topic_cannot_write_another_device(broker, pki, subscriber):
    sneaky = Client(broker, pki.issue("dev-b/monitoring"), "dev-b/monitoring")
    assert sneaky.publish("devices/dev-b/monitoring", body("dev-b", 1)) == 135, "NOT_AUTHORIZED"
    assert sneaky.publish("devices/dev-b/monitoring/monitoring", body("dev-b", 2)) in (0, 16, 135)  # no one reads it
    honest = Client(broker, pki.issue("dev-c"), "dev-c")
    assert honest.publish("devices/dev-c/status", b"{}") == 135, "only monitoring and alerts"
    assert honest.publish("devices/dev-c/monitoring", body("dev-c", 1)) == 0
    assert subscriber.wait_count(1, 10)
    time.sleep(0.5)
    assert [t for t, _ in subscriber.messages] == ["devices/dev-c/monitoring"]
    sneaky.stop()
    honest.stop()


def test_retained_and_oversized_publishes_are_refused(broker, pki, sqlite_url, run_collector, collector_env):
    collector = run_collector(collector_env(sqlite_url))
    collector.wait_subscribed()
    dev = Client(broker, pki.issue("dev-r"), "dev-r")
    assert dev.publish("devices/dev-r/monitoring", body("dev-r", 1), retain=True) in (None, 154), "no retain"
    assert dev.connected.wait(10)
    rss_before = rss_mb(collector.proc.pid)
    big = json.dumps({**payload("dev-r", 2), "metrics": {"blob": {"x": "y" * 250}}}).encode() + b" " * (10 << 20)
    for _ in range(5):
        assert dev.publish("devices/dev-r/monitoring", big) is None, "a 10 MB packet closes the connection"
        assert dev.connected.wait(10)
    assert dev.publish("devices/dev-r/monitoring", body("dev-r", 3)) == 0
    assert wait_stored(sqlite_url, 1, 20) == 1, "only the plain payload is stored"
    time.sleep(1)
    assert stored(sqlite_url) == 1
    assert rss_mb(collector.proc.pid) - rss_before < 30, "the collector never held the 10 MB messages"
    assert collector.proc.poll() is None
    dev.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
