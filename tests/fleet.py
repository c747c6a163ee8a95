"""A simulated fleet: N devices, each with its own certificate and MQTT 5 client.

Each device publishes numbered payloads like an agent's (``seq`` 0, 1, ...,
``ts`` = start + seq x interval, 50 numeric metrics, one bool, two strings),
retries a publish that failed (as the agent's disk buffer does), and answers
the server's ``resend`` commands from everything it has sent. One driver
thread runs the whole fleet with a window of publishes in flight per device,
so it serves both the tests and the ingest benchmark.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from edgemon_protocol.payload import utc_timestamp
from tests.harness import Mosquitto, Pki

METRICS = 50
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()


def payload(
    device: str, seq: int, interval: float = 1.0, start: float = START, plugin_states: bool = False
) -> dict[str, Any]:
    """The payload ``seq`` of ``device`` at ``start + seq x interval``: deterministic, so a resend is identical.

    ``plugin_states`` adds the agent's ``agent.plugin`` tree (strings only: attributes, no samples).
    """
    when = dt.datetime.fromtimestamp(start + seq * interval, dt.UTC)
    doc: dict[str, Any]
    cores = {f"cpu{i}": {"percent": (seq * 7 + i) % 100, "freq_mhz": 2600.0 + i} for i in range(8)}
    doc = {
        "schema": 1,
        "device_id": device,
        "ts": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
        "seq": seq,
        "interval": interval,
        "metrics": {
            "cpu": {"percent": (seq % 100) + 0.5, "load1": seq % 4 / 4, "cores": cores},  # 2 + 16
            "memory": {"total": 8 * 2**30, "used": (seq % 97) * 2**20, "percent": seq % 97, "swap_used": 0},  # 4
            "disk": {  # the shape of the edgemon-disk plugin's
                "usage": {d: {"percent": 42.0 + i, "free": 2**34} for i, d in enumerate(("sda", "sdb", "nvme0n1"))},
                "io": {d: {"read_bytes": seq * 4096, "write_bytes": seq * 512} for d in ("sda", "sdb", "nvme0n1")},
            },  # 12
            "net": {n: {"rx_bytes": seq * 1500, "tx_bytes": seq * 900} for n in ("eth0", "wlan0")},  # 4
            "gpu": {"0": {"utilization": {"gpu": seq % 100}, "mem_used": 2**30, "temp_c": 55, "power_w": 210.5}},  # 4
            "sensors": {f"t{i}": 40 + i for i in range(8)},  # 8
            "system": {"hostname": f"host-{device}", "agent_version": "0.1.0", "online": True},  # 2 strings, 1 bool
        },
        "alerts": [],
    }
    if plugin_states:
        doc["metrics"]["agent"] = {"plugin": PLUGIN_STATES}
    return doc


PLUGIN_STATES = {
    "cpu": {"status": "loaded", "version": "0.1.0"},
    "acme_sensors": {"status": "failed", "version": "2.1.0", "reason": "edgemon_startup raised OSError: no bus"},
}
"""How the agent reports its plugins (``agent.plugin.<name>``): one has failed."""

SAMPLES_PER_PAYLOAD = METRICS + 1
"""Numbers plus the bool (strings become attributes)."""


@dataclass
class SimDevice:
    name: str
    client: Any
    connected: threading.Event = field(default_factory=threading.Event)
    pending: deque[int] = field(default_factory=deque)
    inflight: set[int] = field(default_factory=set)
    acked: set[int] = field(default_factory=set)
    published_at: dict[int, float] = field(default_factory=dict)
    resends: int = 0
    next_at: float = 0.0


class Fleet:
    """``n`` simulated devices on ``broker``; :meth:`publish` then :meth:`wait`."""

    def __init__(
        self,
        broker: Mosquitto,
        pki: Pki,
        n: int,
        prefix: str = "sim",
        window: int = 8,
        interval: float = 1.0,
        pace: float = 0.0,
        start: float = START,
        plugin_states: bool = False,
    ) -> None:
        """``pace``: seconds between two publishes of one device (0: as fast as the window allows).

        ``start``: the ``ts`` of ``seq`` 0 (payload ``seq`` is at ``start + seq x interval``).
        ``plugin_states``: payloads carry the agent's plugin states (one plugin failed).
        """
        from awscrt import mqtt5
        from awsiot import mqtt5_client_builder

        self.mqtt5 = mqtt5
        self.window = window
        self.interval = interval
        self.pace = pace
        self.start = start
        self.plugin_states = plugin_states
        self.devices: list[SimDevice] = []
        self._events: deque[tuple[SimDevice, int, bool]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.failures = 0
        for i in range(n):
            name = f"{prefix}-{i:04d}"
            ident = pki.issue(name)
            dev = SimDevice(name, None)
            dev.client = mqtt5_client_builder.mtls_from_path(
                endpoint="localhost",
                port=broker.port,
                cert_filepath=str(ident.cert),
                pri_key_filepath=str(ident.key),
                ca_filepath=str(pki.ca_path),
                client_id=name,
                enable_metrics_collection=False,
                min_reconnect_delay_ms=200,
                max_reconnect_delay_ms=1000,
                extended_validation_and_flow_control_options=mqtt5.ExtendedValidationAndFlowControlOptions.NONE,
                offline_queue_behavior=mqtt5.ClientOperationQueueBehaviorType.FAIL_ALL_ON_DISCONNECT,
                on_lifecycle_connection_success=lambda _d, dev=dev: self._connected(dev),
                on_lifecycle_disconnection=lambda _d, dev=dev: dev.connected.clear(),
                on_publish_received=lambda data, dev=dev: self._command(dev, data),
            )
            self.devices.append(dev)
        for dev in self.devices:
            dev.client.start()
        for dev in self.devices:
            if not dev.connected.wait(15):
                raise RuntimeError(f"{dev.name} could not connect")
        self._thread = threading.Thread(target=self._drive, daemon=True)
        self._thread.start()

    def _connected(self, dev: SimDevice) -> None:
        sub = self.mqtt5.SubscribePacket(
            subscriptions=[
                self.mqtt5.Subscription(topic_filter=f"devices/{dev.name}/commands/#", qos=self.mqtt5.QoS.AT_LEAST_ONCE)
            ]
        )

        def subscribed(_future: Any) -> None:
            dev.connected.set()
            self._wake.set()

        dev.client.subscribe(sub).add_done_callback(subscribed)

    def _command(self, dev: SimDevice, data: Any) -> None:
        if not str(data.publish_packet.topic).endswith("/resend"):
            return  # a simulated device takes no configuration (it stays drifting)
        command = json.loads(bytes(data.publish_packet.payload))
        for seq in range(command["from"], command["to"] + 1):
            if seq in dev.acked:  # it was sent; send it again
                dev.acked.discard(seq)
                dev.pending.appendleft(seq)
                dev.resends += 1
        self._wake.set()

    def publish(self, count: int, start: int = 0) -> None:
        """Queue payloads ``start..start+count-1`` on every device."""
        for dev in self.devices:
            dev.pending.extend(range(start, start + count))
        self._wake.set()

    def _drive(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(min(0.2, self.pace) if self.pace else 0.2)
            self._wake.clear()
            while self._events:
                dev, seq, ok = self._events.popleft()
                dev.inflight.discard(seq)
                if ok:
                    dev.acked.add(seq)
                else:
                    self.failures += 1
                    dev.pending.appendleft(seq)
            now = time.monotonic()
            for dev in self.devices:
                while dev.connected.is_set() and dev.pending and len(dev.inflight) < self.window:
                    if self.pace and now < dev.next_at:
                        break
                    dev.next_at = now + self.pace
                    self._send(dev, dev.pending.popleft())

    def _send(self, dev: SimDevice, seq: int) -> None:
        body = json.dumps(
            payload(dev.name, seq, self.interval, self.start, self.plugin_states), separators=(",", ":")
        ).encode()
        dev.inflight.add(seq)
        dev.published_at[seq] = time.time()
        packet = self.mqtt5.PublishPacket(
            topic=f"devices/{dev.name}/monitoring", payload=body, qos=self.mqtt5.QoS.AT_LEAST_ONCE
        )

        def done(future: Any) -> None:
            ok = future.exception() is None and int(getattr(future.result().puback, "reason_code", 0) or 0) < 128
            if not ok:
                time.sleep(0.05)  # on an awscrt thread: a short pause against a hot retry loop while offline
            self._events.append((dev, seq, ok))
            self._wake.set()

        dev.client.publish(packet).add_done_callback(done)

    def describe(self, metrics: dict[str, dict[str, str]]) -> None:
        """Publish a metric metadata document (``devices/<id>/meta``) for every device, as agents do on connect."""
        for index, dev in enumerate(self.devices):
            doc = {"schema": 1, "device_id": dev.name, "ts": utc_timestamp(time.time()), "metrics": metrics}
            self.raw(index, json.dumps(doc).encode(), topic=f"devices/{dev.name}/meta")

    def raw(self, index: int, body: bytes, topic: str | None = None) -> Any:
        """Publish arbitrary bytes as device ``index``; returns the future of the PUBACK."""
        dev = self.devices[index]
        packet = self.mqtt5.PublishPacket(
            topic=topic or f"devices/{dev.name}/monitoring", payload=body, qos=self.mqtt5.QoS.AT_LEAST_ONCE
        )
        return dev.client.publish(packet).result(10)

    def published(self) -> int:
        """Payloads acknowledged by the broker, all devices."""
        return sum(len(d.acked) for d in self.devices)

    def wait(self, timeout: float) -> bool:
        """Until every queued payload is acknowledged by the broker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(not d.pending and not d.inflight for d in self.devices):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
        for dev in self.devices:
            dev.client.stop()
