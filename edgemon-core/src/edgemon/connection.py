"""MQTT connections of the agent: awscrt MQTT 5 over mutual TLS, and MQTT 3.1.1 for a loopback demo broker.

Both classes have the same interface (``start``, ``publish``, ``stop``, ``connected``, ``on_change``,
``on_command``) and keep a :class:`TransportStatus` up to date. The clients themselves are built by
the protocol package (:mod:`edgemon_protocol.mqtt`), as the server's collector's are.

awscrt and awsiotsdk are imported only when a connection is built.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from edgemon_protocol import topics
from edgemon_protocol.mqtt import (
    Handlers,
    MqttSettings,
    connect_with_backoff,
    explain,
    mqtt5_client,
    mqtt311_connection,
    publish5,
    refused_codes,
    subscribe5,
)

log = logging.getLogger(__name__)


@dataclass
class TransportStatus:
    """What ``edgemon-agent status`` shows, written to ``<state_dir>/status.json``."""

    state: str = "starting"
    last_error: str | None = None
    last_error_at: float | None = None
    connected_since: float | None = None
    published: int = 0
    acked: int = 0
    acked_seq: int = 0
    """The highest payload ``seq`` the broker acknowledged."""
    failed: int = 0
    refused_too_large: int = 0
    connects: int = 0
    connect_failures: int = 0
    pid: int = field(default_factory=os.getpid)
    updated: float = 0.0
    buffer: dict[str, Any] = field(default_factory=dict)


class _Endpoint:
    """What both connections share: settings, identity, status, and the callbacks the forwarder sets."""

    def __init__(self, mqtt: MqttSettings, client_id: str, status: TransportStatus) -> None:
        self.settings = mqtt
        self.client_id = client_id
        self.status = status
        self.connected = threading.Event()
        self.on_change: Callable[[], None] = lambda: None
        """Called when the connection comes or goes (the forwarder wakes up)."""
        self.on_command: Callable[[str, bytes], None] = lambda _name, _body: None
        """Called with (command name, body) for a message on ``devices/<client id>/commands/<name>``."""

    def _command(self, topic: str, body: bytes) -> None:
        name = topics.command_name(self.client_id, topic)
        if name is not None:
            self.on_command(name, body)


class Connection(_Endpoint):
    """An awscrt MQTT 5 client with logging of lifecycle events and clear errors."""

    def __init__(self, mqtt: MqttSettings, client_id: str, status: TransportStatus) -> None:
        """Build the client; nothing connects until :meth:`start`."""
        super().__init__(mqtt, client_id, status)
        self._logged: set[str] = set()
        handlers = Handlers(self._on_success, self._on_failure, self._on_disconnect, self._on_publish)
        self.client = mqtt5_client(mqtt, client_id, handlers)

    def _on_success(self, data: Any) -> None:
        self.status.state = "connected"
        self.status.connected_since = time.time()
        self.status.connects += 1
        self._logged.clear()
        log.info("connected", extra={"reason": f"{self.settings.endpoint}:{self.settings.port}"})
        self.connected.set()
        self.on_change()
        # A clean session: subscribe again on every connection.
        subscribe5(self.client, [topics.command_filter(self.client_id)], self._subscribed)

    def _subscribed(self, future: Future[Any]) -> None:
        refused = refused_codes(future)
        if refused is not None:
            log.warning(
                "cannot subscribe to commands; the server cannot ask for lost payloads again",
                extra={"topic": f"{topics.commands(self.client_id)}/#", "reason": refused},
            )

    def _on_publish(self, data: Any) -> None:
        packet = data.publish_packet
        self._command(str(packet.topic), bytes(packet.payload or b""))

    def _on_failure(self, data: Any) -> None:
        self.status.state = "disconnected"
        self.status.connect_failures += 1
        reason = explain(data.exception)
        connack = data.connack_packet
        if connack is not None and connack.reason_code is not None and int(connack.reason_code) >= 128:
            code = int(connack.reason_code)
            reason = f"broker refused the connection: {connack.reason_code.name} ({code})"
            if connack.reason_string:
                reason += f": {connack.reason_string}"
        self._record(reason, "cannot connect to the broker; retrying with back-off")

    def _on_disconnect(self, data: Any) -> None:
        self.connected.clear()
        if self.status.state == "stopped":  # our own stop()
            return
        self.status.state = "disconnected"
        exc = data.exception
        name = getattr(exc, "name", type(exc).__name__) if exc is not None else "disconnected"
        self._record(f"{name}: {getattr(exc, 'message', '')}".rstrip(": "), "connection lost; buffering on disk")
        self.on_change()

    def _record(self, reason: str, message: str) -> None:
        self.status.last_error = reason
        self.status.last_error_at = time.time()
        if reason in self._logged:
            log.debug(message, extra={"reason": reason})
            return
        self._logged.add(reason)
        log.error(message, extra={"reason": reason})

    def start(self) -> None:
        """Start connecting (in awscrt's threads); returns at once."""
        self.status.state = "connecting"
        self.client.start()

    def publish(self, topic: str, body: bytes) -> Future[Any]:
        """Publish with QoS 1; the future resolves to awscrt's ``PublishCompletionData``."""
        future: Future[Any] = publish5(self.client, topic, body)
        return future

    def stop(self) -> None:
        """Disconnect cleanly."""
        self.connected.clear()
        self.status.state = "stopped"
        try:
            self.client.stop()
        except Exception as exc:  # noqa: BLE001 - stopping must not mask the reason we stop
            log.debug("stop failed", extra={"reason": repr(exc)})


class Connection311(_Endpoint):
    """MQTT 3.1.1 over plain TCP to a loopback broker (the embedded demo broker of ``make run``).

    Same interface as :class:`Connection`. Only for development: an MQTT 3.1.1
    broker (mosquitto) acknowledges a publish its ACL refuses, so a refused
    payload would look delivered; the production path is MQTT 5.
    """

    def __init__(self, mqtt: MqttSettings, client_id: str, status: TransportStatus) -> None:
        """Build the connection; nothing connects until :meth:`start`."""
        from awscrt import mqtt as mqtt3  # noqa: PLC0415

        super().__init__(mqtt, client_id, status)
        self.mqtt3 = mqtt3
        self._stop = threading.Event()
        self.connection = mqtt311_connection(
            mqtt, client_id, on_connection_interrupted=self._interrupted, on_connection_resumed=self._resumed
        )

    def start(self) -> None:
        """Connect in a thread, retrying with back-off (awscrt reconnects by itself only after a first success)."""
        self.status.state = "connecting"
        threading.Thread(target=self._connect_loop, name="edgemon-mqtt311", daemon=True).start()

    def _connect_loop(self) -> None:
        if connect_with_backoff(self.connection, self.settings, self._stop, self._failed):
            self._resumed()

    def _failed(self, exc: BaseException) -> None:
        self.status.connect_failures += 1
        self.status.last_error, self.status.last_error_at = repr(exc), time.time()

    def _interrupted(self, **_kwargs: Any) -> None:
        self.connected.clear()
        self.status.state = "disconnected"
        log.error("connection lost; buffering on disk", extra={"reason": "MQTT 3.1.1 connection interrupted"})
        self.on_change()

    def _resumed(self, **_kwargs: Any) -> None:
        self.status.state = "connected"
        self.status.connected_since = time.time()
        self.status.connects += 1
        log.info("connected (MQTT 3.1.1)", extra={"reason": f"{self.settings.endpoint}:{self.settings.port}"})
        self.connection.subscribe(
            f"{topics.commands(self.client_id)}/#", self.mqtt3.QoS.AT_LEAST_ONCE, callback=self._on_message
        )
        self.connected.set()
        self.on_change()

    def _on_message(self, topic: str, payload: bytes, **_kwargs: Any) -> None:
        self._command(topic, bytes(payload))

    def publish(self, topic: str, body: bytes) -> Future[Any]:
        """Publish with QoS 1; the future resolves on PUBACK."""
        future, _packet_id = self.connection.publish(topic, body, self.mqtt3.QoS.AT_LEAST_ONCE)
        return future  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Disconnect."""
        self._stop.set()
        self.connected.clear()
        self.status.state = "stopped"
        try:
            self.connection.disconnect().result(5)
        except Exception as exc:  # noqa: BLE001 - stopping must not mask the reason we stop
            log.debug("disconnect failed", extra={"reason": repr(exc)})
