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

The metric metadata document (:mod:`edgemon_protocol.meta`) goes to ``devices/<id>/meta`` on every
connection and whenever it changes, not with each payload; a publish of it that fails is tried
again on the next connection.

awscrt and awsiotsdk are imported only when MQTT is used, which keeps
``edgemon-agent once`` and the stdout mode light.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from edgemon.buffer import Buffer, Entry
from edgemon.config import Config
from edgemon.connection import Connection, Connection311, TransportStatus
from edgemon.forwarder import Forwarder
from edgemon.payload import MAX_BYTES, dumps, subtree_sizes, utc_timestamp
from edgemon.remote_config import RemoteState, Report
from edgemon_protocol import remote, topics
from edgemon_protocol.alerting import Transition, encode_transition
from edgemon_protocol.mqtt import NOT_AUTHORIZED, explain

log = logging.getLogger(__name__)

META_REFUSED_WAIT = 600.0
"""Seconds before a metadata document the broker refused (not authorized) is sent again."""

MAX_PAYLOAD = MAX_BYTES
"""AWS IoT Core's message size limit; larger payloads are refused before publishing (the agent never builds one)."""


class MqttSink:
    """The agent's sink in MQTT mode: size check, buffer, forward (an :class:`edgemon.sink.Sink`)."""

    keeps_seq = True

    def __init__(self, config: Config, client_id: str) -> None:
        """Open the buffer and prepare the connection (not started)."""
        state = Path(config.agent.state_dir)
        self.topic = topics.monitoring(client_id)
        self.meta_topic = topics.meta(client_id)
        self.alerts_topic = topics.alerts(client_id)
        self.client_id = client_id
        self._meta = b""
        self._meta_sent = b""
        self._meta_lock = threading.Lock()
        self._meta_refused_until = 0.0
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
        self.config_topic = topics.config(client_id)
        self.remote: RemoteState | None = None
        """Set when remote configuration is on: a ``get`` goes out with its version on every connection."""
        self.on_config: Callable[[bytes], None] = lambda _body: None
        """Called (on an MQTT thread) with each configuration version the server sends."""
        self._reports: list[bytes] = []
        self._config_lost = 0
        """Connections lost in a row while a configuration message awaited its PUBACK."""
        self._config_paused_until = 0.0
        forward = self.connection.on_change
        forward_command = self.connection.on_command

        def changed() -> None:
            forward()
            if self.connection.connected.is_set():
                self._send_meta(force=time.monotonic() >= self._meta_refused_until)
                self._send_config()

        def command(name: str, body: bytes) -> None:
            if name == remote.COMMAND:
                self.on_config(body)
            else:
                forward_command(name, body)

        self.connection.on_change = changed
        self.connection.on_command = command

    def last_seq(self) -> int:
        """The highest seq in the buffer (payloads are stored with their seq)."""
        return self.buffer.last_seq()

    def alert(self, transition: Transition) -> None:
        """Store an alert transition durably, in the priority lane, and hand it to the forwarder."""
        with self._meta_lock:
            seq = self.buffer.last_alert_seq() + 1
            body = encode_transition(self.client_id, seq, transition)
            created = time.time()
            entry_id = self.buffer.append(self.alerts_topic, seq, body, created)
        self.forwarder.notify(Entry(entry_id, seq, self.alerts_topic, created, body))

    def describe(self, body: bytes) -> None:
        """Publish the metric metadata now if connected, and again on every connection."""
        with self._meta_lock:
            self._meta = body
        if self.connection.connected.is_set():
            self._send_meta(force=False)

    def _send_meta(self, force: bool) -> None:
        with self._meta_lock:
            body = self._meta
            if not body or (body == self._meta_sent and not force):
                return
            self._meta_sent = body
        try:
            future = self.connection.publish(self.meta_topic, body)
        except Exception as exc:  # noqa: BLE001 - metadata is an aid; payloads go on without it
            self._meta_failed(body, repr(exc))
            return
        future.add_done_callback(lambda f: self._meta_done(f, body))

    def _meta_done(self, future: Future[Any], body: bytes) -> None:
        exc = future.exception()
        code = getattr(getattr(future.result(), "puback", None), "reason_code", None) if exc is None else None
        if exc is not None:
            self._meta_failed(body, explain(exc))
        elif code is not None and int(code) == NOT_AUTHORIZED:
            # Not tried again on every connection: some brokers (mosquitto) close the connection after a
            # refused publish, and a refusal at each connect would keep payloads from ever going out.
            self._meta_refused_until = time.monotonic() + META_REFUSED_WAIT
            log.error(
                "metric metadata not authorized (135): the broker's policy must allow this client to publish to "
                f"{self.meta_topic}; tried again in {META_REFUSED_WAIT:.0f} s or when it changes",
                extra={"topic": self.meta_topic, "reason": "not authorized (135)"},
            )
        elif code is not None and int(code) >= 128:
            self._meta_failed(body, f"the broker refused it: {code!r}")
        else:
            log.debug("metric metadata sent", extra={"topic": self.meta_topic})

    def _meta_failed(self, body: bytes, reason: str) -> None:
        with self._meta_lock:
            if self._meta_sent == body:
                self._meta_sent = b""  # sent again on the next connection
        log.warning(
            "metric metadata not delivered; sent again on the next connection",
            extra={"topic": self.meta_topic, "reason": reason},
        )

    def report(self, report: Report) -> None:
        """Tell the server what was done with a configuration version (now, or on the next connection)."""
        body = remote.encode_report(
            report.version, report.hash, report.status, report.error, utc_timestamp(time.time())
        )
        with self._meta_lock:
            self._reports = [*self._reports, body][-20:]
        if self.connection.connected.is_set():
            self._send_config(ask=False)

    def _send_config(self, ask: bool = True) -> None:
        """The queued reports, then (on a new connection) the ``get`` with the applied version.

        A broker whose policy predates remote configuration refuses ``devices/<id>/config``, and
        mosquitto and AWS IoT then close the connection: after two connections lost in a row with a
        configuration message in flight (or a refusal, 135), remote configuration pauses for
        ``META_REFUSED_WAIT`` so that payloads keep flowing, and says why.
        """
        if self.remote is None or time.monotonic() < self._config_paused_until:
            return
        with self._meta_lock:
            bodies, self._reports = self._reports, []
        if ask:
            bodies.append(self.remote.get_message())
        for body in bodies:
            try:
                future = self.connection.publish(self.config_topic, body)
            except Exception as exc:  # noqa: BLE001 - asked again on the next connection
                log.warning("remote configuration message not sent", extra={"reason": repr(exc)})
                continue
            future.add_done_callback(functools.partial(self._config_done, body=body))

    def _config_done(self, future: Future[Any], *, body: bytes) -> None:
        exc = future.exception()
        code = getattr(getattr(future.result(), "puback", None), "reason_code", None) if exc is None else None
        refused = code is not None and int(code) == NOT_AUTHORIZED
        if exc is None and not refused:
            self._config_lost = 0
            return
        if b'"report"' in body:
            with self._meta_lock:  # a report is kept for the next connection; a get is sent anew anyway
                self._reports = [body, *self._reports][:20]
        self._config_lost = 2 if refused else self._config_lost + 1
        if self._config_lost >= 2:
            self._config_lost = 0
            self._config_paused_until = time.monotonic() + META_REFUSED_WAIT
            log.error(
                f"remote configuration paused for {META_REFUSED_WAIT:.0f} s: the broker refused or dropped "
                f"{self.config_topic}; its policy (ACL) must allow this client to publish there",
                extra={"topic": self.config_topic, "reason": "not authorized (135)" if refused else explain(exc)},
            )

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
