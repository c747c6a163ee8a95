"""MQTT transport: mutual TLS through awsiotsdk, fed by the store-and-forward buffer.

Flow of a payload::

    cycle -> MqttSink: size check -> Buffer.append (fsynced) -> Forwarder
          -> awscrt MQTT 5 publish, QoS 1 -> PUBACK success -> Buffer.ack (deleted)

The buffer, not awscrt's offline queue, is the source of truth: awscrt keeps
unsent publishes in memory only (lost when the process stops), so the client is set to fail
every operation on disconnect and the forwarder re-sends from disk after the
reconnect. Duplicates are possible (a PUBACK lost with the connection), losses
are not; the server discards duplicates by ``seq``.

A broker can still lose a message after its PUBACK (killed before it
delivered it). The buffer therefore keeps the newest ``mqtt.resend_keep``
acknowledged payloads, and the agent subscribes to
``devices/<id>/commands/#``: a ``resend`` command ``{"from": a, "to": b}``
from the server (which sees the hole in ``seq``) puts them back in the outbox.

awscrt and awsiotsdk are imported only when MQTT is used, which keeps
``edgemon-agent once`` and the stdout mode light.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from edgemon.buffer import Buffer, Entry
from edgemon.config import Config
from edgemon.connection import Connection, Connection311, TransportStatus
from edgemon.forwarder import Forwarder
from edgemon.payload import MAX_BYTES, dumps, subtree_sizes

log = logging.getLogger(__name__)

MAX_PAYLOAD = MAX_BYTES
"""AWS IoT Core's message size limit; larger payloads are refused before publishing (the agent never builds one)."""


class MqttSink:
    """The agent's sink in MQTT mode: size check, buffer, forward."""

    def __init__(self, config: Config, client_id: str) -> None:
        """Open the buffer and prepare the connection (not started)."""
        state = Path(config.agent.state_dir)
        self.topic = config.mqtt.topic.format(client_id=client_id)
        self.alerts_topic = config.mqtt.alerts_topic.format(client_id=client_id)
        self.status = TransportStatus()
        self.buffer = Buffer(
            state / "buffer.db",
            int(config.agent.buffer_max_mb * 1024 * 1024),
            keep_sent=config.mqtt.resend_keep,
            memory_max=config.agent.memory_max,
        )
        self.connection: Connection | Connection311 = (
            Connection311(config.mqtt, client_id, self.status)
            if config.mqtt.protocol == "3.1.1"
            else Connection(config.mqtt, client_id, self.status)
        )
        self.forwarder = Forwarder(self.buffer, self.connection, config.mqtt, state / "status.json")

    def start(self) -> None:
        """Connect and start forwarding (including what an earlier run left buffered)."""
        if len(self.buffer):
            log.info("resuming with buffered payloads", extra={"reason": f"{len(self.buffer)} in the buffer"})
        self.forwarder.start()
        self.connection.start()

    def __call__(self, payload: dict[str, Any], body: bytes | None = None) -> None:
        """Store ``payload`` (serialised as ``body``) durably and hand it to the forwarder."""
        body = dumps(payload).encode() if body is None else body
        if len(body) > MAX_PAYLOAD:
            self.status.refused_too_large += 1
            top = ", ".join(f"{name} ({size} B)" for name, size in subtree_sizes(payload)[:3])
            log.error(
                "payload too large; not published",
                extra={"seq": payload["seq"], "reason": f"{len(body)} B > {MAX_PAYLOAD} B; largest: {top}"},
            )
            return
        seq, created = int(payload["seq"]), time.time()
        entry_id = self.buffer.append(self.topic, seq, body, created)
        self.forwarder.notify(Entry(entry_id, seq, self.topic, created, body))

    def metrics(self) -> dict[str, Any]:
        """Transport self-metrics, published under ``agent.transport``."""
        age = self.buffer.oldest_age()
        return {
            "connected": self.connection.connected.is_set(),
            "buffered": len(self.buffer),
            "buffered_bytes": self.buffer.size_bytes,
            "oldest_age_s": round(age, 3) if age is not None else 0.0,
            "dropped": self.buffer.dropped,
            **self.buffer.health(),
            "published": self.status.published,
            "acked": self.status.acked,
            "failed": self.status.failed,
            "refused_too_large": self.status.refused_too_large,
            "connect_failures": self.status.connect_failures,
        }

    def stop(self) -> None:
        """Stop forwarding, disconnect, close the buffer."""
        self.forwarder.stop()
        self.connection.stop()
        self.buffer.close()
