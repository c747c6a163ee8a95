"""MQTT connections of the agent: awscrt MQTT 5 over mutual TLS, and MQTT 3.1.1 for a loopback demo broker.

Both classes have the same interface (``start``, ``publish``, ``stop``, ``connected``, ``on_change``,
``on_command``) and keep a :class:`TransportStatus` up to date. The collector of the server shares
:data:`HINTS`, :func:`mqtt311_connection` and :func:`connect_with_backoff`.

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

from edgemon.config import MqttSettings
from edgemon.identity import is_aws_endpoint

log = logging.getLogger(__name__)

NOT_AUTHORIZED = 135
"""MQTT 5 reason code of a publish the broker's policy refuses."""

HINTS = {
    "AWS_IO_TLS_ERROR_READ_FAILURE": (
        "the broker closed the TLS handshake: this client's certificate was refused. Likely causes: "
        "certificate signed by a CA the broker does not trust, expired or not yet valid, revoked, "
        "no certificate sent, or a key that does not match it"
    ),
    "AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE": (
        "TLS negotiation failed. Likely causes: the broker's certificate is not signed by mqtt.ca, "
        "its name does not match mqtt.endpoint, or this client's certificate was refused"
    ),
    "AWS_IO_SOCKET_CONNECTION_REFUSED": "nothing is listening at the endpoint and port: broker down or wrong port",
    "AWS_IO_SOCKET_TIMEOUT": "no answer from the endpoint: firewall, wrong host, or network down",
    "AWS_IO_DNS_INVALID_NAME": "the endpoint's host name does not resolve",
    "AWS_IO_DNS_QUERY_FAILED": "the endpoint's host name does not resolve",
    "AWS_ERROR_MQTT5_CONNACK_TIMEOUT": "connected but the broker sent no CONNACK: is it an MQTT 5 broker?",
}


@dataclass
class TransportStatus:
    """What ``edgemon-agent status`` shows, written to ``<state_dir>/status.json``."""

    state: str = "starting"
    last_error: str | None = None
    last_error_at: float | None = None
    connected_since: float | None = None
    published: int = 0
    acked: int = 0
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
        self.commands = mqtt.commands_topic.format(client_id=client_id)
        self.on_command: Callable[[str, bytes], None] = lambda _name, _body: None
        """Called with (command name, body) for a message under ``<commands_topic>/``."""


class Connection(_Endpoint):
    """An awscrt MQTT 5 client with logging of lifecycle events and clear errors."""

    def __init__(self, mqtt: MqttSettings, client_id: str, status: TransportStatus) -> None:
        """Build the client; nothing connects until :meth:`start`."""
        from awscrt import mqtt5  # noqa: PLC0415 - keeps awscrt out of the stdout mode

        super().__init__(mqtt, client_id, status)
        self.mqtt5 = mqtt5
        self._logged: set[str] = set()
        self.client = self._build()

    def _build(self) -> Any:
        mqtt5 = self.mqtt5
        m = self.settings
        aws = is_aws_endpoint(m.endpoint)
        common: dict[str, Any] = {
            "endpoint": m.endpoint,
            "port": m.port,
            "client_id": self.client_id,
            "keep_alive_interval_sec": m.keep_alive,
            "min_reconnect_delay_ms": int(m.min_reconnect_delay * 1000),
            "max_reconnect_delay_ms": int(m.max_reconnect_delay * 1000),
            "min_connected_time_to_reset_reconnect_delay_ms": 30_000,
            "retry_jitter_mode": mqtt5.ExponentialBackoffJitterMode.FULL,
            "connack_timeout_ms": int(m.connect_timeout * 1000),
            "ack_timeout_sec": 30,
            "session_behavior": mqtt5.ClientSessionBehaviorType.CLEAN,
            "offline_queue_behavior": mqtt5.ClientOperationQueueBehaviorType.FAIL_ALL_ON_DISCONNECT,
            "extended_validation_and_flow_control_options": (
                mqtt5.ExtendedValidationAndFlowControlOptions.AWS_IOT_CORE_DEFAULTS
                if aws
                else mqtt5.ExtendedValidationAndFlowControlOptions.NONE
            ),
            "on_lifecycle_connection_success": self._on_success,
            "on_lifecycle_connection_failure": self._on_failure,
            "on_lifecycle_disconnection": self._on_disconnect,
            "on_lifecycle_stopped": lambda _data: None,
            "on_lifecycle_attempting_connect": lambda _data: None,
            "on_publish_received": self._on_publish,
        }
        if m.insecure_local:
            options = mqtt5.ClientOptions(
                host_name=m.endpoint,
                port=m.port,
                connect_options=mqtt5.ConnectPacket(client_id=self.client_id, keep_alive_interval_sec=m.keep_alive),
                session_behavior=common["session_behavior"],
                extended_validation_and_flow_control_options=common["extended_validation_and_flow_control_options"],
                offline_queue_behavior=common["offline_queue_behavior"],
                retry_jitter_mode=common["retry_jitter_mode"],
                min_reconnect_delay_ms=common["min_reconnect_delay_ms"],
                max_reconnect_delay_ms=common["max_reconnect_delay_ms"],
                connack_timeout_ms=common["connack_timeout_ms"],
                ack_timeout_sec=common["ack_timeout_sec"],
                on_lifecycle_event_connection_success_fn=self._on_success,
                on_lifecycle_event_connection_failure_fn=self._on_failure,
                on_lifecycle_event_disconnection_fn=self._on_disconnect,
                on_publish_callback_fn=self._on_publish,
            )
            return mqtt5.Client(options)
        from awsiot import mqtt5_client_builder  # noqa: PLC0415

        return mqtt5_client_builder.mtls_from_path(
            cert_filepath=m.cert,
            pri_key_filepath=m.key,
            ca_filepath=m.ca,
            enable_metrics_collection=aws,  # else awscrt sends an SDK metrics string as the MQTT user name
            **common,
        )

    def _on_success(self, data: Any) -> None:
        self.status.state = "connected"
        self.status.connected_since = time.time()
        self.status.connects += 1
        self._logged.clear()
        log.info("connected", extra={"reason": f"{self.settings.endpoint}:{self.settings.port}"})
        self.connected.set()
        self.on_change()
        # A clean session: subscribe again on every connection.
        mqtt5 = self.mqtt5
        packet = mqtt5.SubscribePacket(
            subscriptions=[mqtt5.Subscription(topic_filter=f"{self.commands}/#", qos=mqtt5.QoS.AT_LEAST_ONCE)]
        )
        self.client.subscribe(packet).add_done_callback(self._subscribed)

    def _subscribed(self, future: Future[Any]) -> None:
        exc = future.exception()
        codes = [int(c) for c in getattr(future.result(), "reason_codes", [])] if exc is None else []
        if exc is not None or any(code >= 128 for code in codes):
            log.warning(
                "cannot subscribe to commands; the server cannot ask for lost payloads again",
                extra={"topic": f"{self.commands}/#", "reason": repr(exc) if exc is not None else f"codes {codes}"},
            )

    def _on_publish(self, data: Any) -> None:
        packet = data.publish_packet
        topic = str(packet.topic)
        if topic.startswith(self.commands + "/"):
            self.on_command(topic[len(self.commands) + 1 :], bytes(packet.payload or b""))

    def _on_failure(self, data: Any) -> None:
        self.status.state = "disconnected"
        self.status.connect_failures += 1
        exc = data.exception
        name = getattr(exc, "name", type(exc).__name__)
        reason = f"{name}: {HINTS.get(name, getattr(exc, 'message', str(exc)))}"
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
        mqtt5 = self.mqtt5
        future: Future[Any] = self.client.publish(
            mqtt5.PublishPacket(topic=topic, payload=body, qos=mqtt5.QoS.AT_LEAST_ONCE)
        )
        return future

    def stop(self) -> None:
        """Disconnect cleanly."""
        self.connected.clear()
        self.status.state = "stopped"
        try:
            self.client.stop()
        except Exception as exc:  # noqa: BLE001 - stopping must not mask the reason we stop
            log.debug("stop failed", extra={"reason": repr(exc)})


def mqtt311_connection(mqtt: MqttSettings, client_id: str, **callbacks: Any) -> Any:
    """An awscrt MQTT 3.1.1 connection over plain TCP, clean session (agent and collector, demo broker only)."""
    from awscrt import io  # noqa: PLC0415
    from awscrt import mqtt as mqtt3  # noqa: PLC0415

    return mqtt3.Connection(
        client=mqtt3.Client(io.ClientBootstrap.get_or_create_static_default(), None),
        host_name=mqtt.endpoint,
        port=mqtt.port,
        client_id=client_id,
        clean_session=True,
        keep_alive_secs=mqtt.keep_alive,
        reconnect_min_timeout_secs=max(1, int(mqtt.min_reconnect_delay)),
        reconnect_max_timeout_secs=max(1, int(mqtt.max_reconnect_delay)),
        **callbacks,
    )


def connect_with_backoff(
    connection: Any, mqtt: MqttSettings, stop: threading.Event, on_failure: Callable[[BaseException], None]
) -> bool:
    """Connect an MQTT 3.1.1 connection, retrying with doubling delays until it works or ``stop`` is set.

    awscrt's 3.1.1 client reconnects by itself only after a first success.
    """
    delay = mqtt.min_reconnect_delay
    while not stop.is_set():
        try:
            connection.connect().result(mqtt.connect_timeout + 5)
            return True
        except Exception as exc:  # noqa: BLE001 - any failure is retried
            on_failure(exc)
            stop.wait(delay)
            delay = min(mqtt.max_reconnect_delay, delay * 2)
    return False


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
        self.connection.subscribe(f"{self.commands}/#", self.mqtt3.QoS.AT_LEAST_ONCE, callback=self._on_message)
        self.connected.set()
        self.on_change()

    def _on_message(self, topic: str, payload: bytes, **_kwargs: Any) -> None:
        if topic.startswith(self.commands + "/"):
            self.on_command(topic[len(self.commands) + 1 :], bytes(payload))

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
