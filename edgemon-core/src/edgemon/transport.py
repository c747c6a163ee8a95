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

import ipaddress
import json
import logging
import os
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgemon.buffer import Buffer, Entry
from edgemon.certs import subject_cn, validity
from edgemon.config import Config, ConfigError, MqttSettings
from edgemon.payload import MAX_BYTES, dumps, subtree_sizes, utc_timestamp

log = logging.getLogger(__name__)

MAX_PAYLOAD = MAX_BYTES
"""AWS IoT Core's message size limit; larger payloads are refused before publishing (the agent never builds one)."""

NOT_AUTHORIZED = 135
STATUS_EVERY = 5.0
"""Seconds between rewrites of ``status.json`` (more often costs measurable CPU on a small board)."""

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


def is_aws_endpoint(host: str) -> bool:
    """AWS IoT Core endpoints get the SDK's metrics and flow-control defaults; other brokers do not."""
    return host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


def is_loopback(host: str) -> bool:
    """Whether ``host`` resolves only to loopback addresses."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_settings(config: Config) -> str:
    """Check the MQTT settings and return the client id to use.

    The client id is ``agent.client_id`` if set, else the certificate's CN (a
    Mosquitto ACL with ``use_identity_as_username`` keys on it), else the host
    name. A configured id that differs from the CN gets a warning: normal on
    AWS IoT Core (the thing name), refused by a CN-keyed ACL.

    Raises:
        ConfigError: missing files, plain TCP to a non-loopback host.
    """
    mqtt = config.mqtt
    if not mqtt.endpoint:
        raise ConfigError("mqtt.endpoint (EDGEMON_MQTT_ENDPOINT) is not set")
    if mqtt.protocol == "3.1.1" and not mqtt.insecure_local:
        raise ConfigError(
            "mqtt.protocol 3.1.1 is only for a local demo broker (with mqtt.insecure_local): an MQTT 3.1.1 broker "
            "acknowledges publishes it refuses, so refused payloads would look delivered; use MQTT 5"
        )
    if mqtt.insecure_local:
        if not is_loopback(mqtt.endpoint):
            raise ConfigError(
                f"mqtt.insecure_local: refusing plain TCP to {mqtt.endpoint!r}, which is not a loopback address; "
                "use mutual TLS (mqtt.ca, mqtt.cert, mqtt.key)"
            )
        log.warning("MQTT without TLS to a loopback broker (insecure_local): for development only")
        return config.device_id
    for key in ("ca", "cert", "key"):
        path = getattr(mqtt, key)
        if not path:
            raise ConfigError(f"mqtt.{key} (EDGEMON_MQTT_{key.upper()}) is required for mutual TLS")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"mqtt.{key}: cannot read {path}")
    mode = os.stat(mqtt.key).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "private key is readable by group or others; chmod 600 it",
            extra={"path": mqtt.key, "reason": f"mode {stat.filemode(mode)}"},
        )
    try:
        cn = subject_cn(mqtt.cert)
        not_before, not_after = validity(mqtt.cert)
    except ValueError as exc:
        raise ConfigError(f"mqtt.cert: {mqtt.cert} is not a PEM certificate: {exc}") from exc
    check_clock(time.time(), not_before, not_after, mqtt.cert)
    if not config.agent.client_id:
        return cn or config.device_id
    if cn and cn != config.agent.client_id:
        log.warning(
            "client id differs from the certificate's CN",
            extra={
                "reason": (
                    f"client_id={config.agent.client_id!r} CN={cn!r}: fine on AWS IoT Core (thing name), "
                    f"but a broker whose ACL keys on the CN will refuse devices/{config.agent.client_id}/..."
                )
            },
        )
    return config.agent.client_id


def check_clock(now: float, not_before: float, not_after: float, cert: str) -> None:
    """Warn when this device's clock cannot be right, or its certificate has expired.

    The certificate's validity is the one time reference a device has before it talks to anyone:
    a clock before ``not_before`` (an RTC that lost its time: 1970 or 2000 after a flat battery)
    makes every TLS handshake fail with an unhelpful error, and so does an expired certificate.
    """
    if now < not_before - 300:
        log.warning(
            "the system clock is earlier than this device's certificate was issued: the clock is wrong "
            "(RTC not set? NTP not synchronised?) and TLS handshakes will fail until it is right",
            extra={
                "path": cert,
                "reason": f"now {utc_timestamp(now)}, certificate valid from {utc_timestamp(not_before)}",
            },
        )
    elif now > not_after:
        log.warning(
            "this device's certificate has expired (or the clock is ahead): the broker will refuse it",
            extra={"path": cert, "reason": f"now {utc_timestamp(now)}, valid until {utc_timestamp(not_after)}"},
        )


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


MAX_RESEND = 100_000
"""Largest ``seq`` range one resend command may ask for."""


def parse_resend(body: bytes) -> tuple[int, int]:
    """Parse a ``resend`` command body ``{"from": a, "to": b}``.

    Raises:
        ValueError: with the reason, for anything else.
    """
    try:
        command = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(command, dict):
        raise ValueError("not a JSON object")
    first: Any = command.get("from")
    last: Any = command.get("to")
    if not (_count(first) and _count(last)):
        raise ValueError("'from' and 'to' must be integers >= 0")
    if not first <= last < first + MAX_RESEND:
        raise ValueError(f"range {first}..{last} is empty or longer than {MAX_RESEND}")
    return first, last


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class Connection:
    """An awscrt MQTT 5 client with logging of lifecycle events and clear errors."""

    def __init__(self, mqtt: MqttSettings, client_id: str, status: TransportStatus) -> None:
        """Build the client; nothing connects until :meth:`start`."""
        from awscrt import mqtt5  # noqa: PLC0415 - keeps awscrt out of the stdout mode

        self.mqtt5 = mqtt5
        self.settings = mqtt
        self.client_id = client_id
        self.status = status
        self.connected = threading.Event()
        self.on_change: Callable[[], None] = lambda: None
        self.commands = mqtt.commands_topic.format(client_id=client_id)
        self.on_command: Callable[[str, bytes], None] = lambda _name, _body: None
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


class Connection311:
    """MQTT 3.1.1 over plain TCP to a loopback broker (the embedded demo broker of ``make run``).

    Same interface as :class:`Connection`. Only for development: an MQTT 3.1.1
    broker (mosquitto) acknowledges a publish its ACL refuses, so a refused
    payload would look delivered; the production path is MQTT 5.
    """

    def __init__(self, mqtt: MqttSettings, client_id: str, status: TransportStatus) -> None:
        """Build the connection; nothing connects until :meth:`start`."""
        from awscrt import mqtt as mqtt3  # noqa: PLC0415

        self.mqtt3 = mqtt3
        self.settings = mqtt
        self.client_id = client_id
        self.status = status
        self.connected = threading.Event()
        self.on_change: Callable[[], None] = lambda: None
        self.commands = mqtt.commands_topic.format(client_id=client_id)
        self.on_command: Callable[[str, bytes], None] = lambda _name, _body: None
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


class Forwarder:
    """Moves payloads from the buffer to the broker and deletes them on PUBACK.

    Live payloads (stored while connected) are published at once; the backlog
    is published oldest first at ``drain_rate`` per second, so a long outage
    neither floods the broker nor delays fresh data. At most ``max_inflight``
    publishes await their PUBACK.
    """

    def __init__(
        self, buffer: Buffer, connection: Connection | Connection311, settings: MqttSettings, status_path: Path
    ) -> None:
        """Wire the forwarder to a buffer and a connection; :meth:`start` starts its thread."""
        self.buffer = buffer
        self.conn = connection
        self.status = connection.status
        self.rate = min(settings.drain_rate, 90.0) if is_aws_endpoint(settings.endpoint) else settings.drain_rate
        self.max_inflight = settings.max_inflight
        self.status_path = status_path
        self._live: deque[Entry] = deque()
        self._inflight: set[int] = set()
        self._done: deque[tuple[int, int, Future[Any]]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._retry_at = 0.0
        self._failure_delay = 1.0
        self._logged: set[str] = set()
        self._resends: deque[bytes] = deque()
        self._acked: list[int] = []
        """Acknowledged by the broker, not yet removed from the buffer."""
        self._iteration_failures = 0
        self._thread = threading.Thread(target=self._loop, name="edgemon-forwarder", daemon=True)
        connection.on_change = self._wake.set
        connection.on_command = self.command

    def command(self, name: str, body: bytes) -> None:
        """A command from the server (on an awscrt thread: queued for the forwarder thread)."""
        if name == "resend":
            self._resends.append(body)
            self._wake.set()
            return
        log.warning("unknown command ignored", extra={"reason": f"command {name!r}"})

    def _resend(self) -> None:
        while self._resends:
            body = self._resends[0]
            try:
                first, last = parse_resend(body)
            except ValueError as exc:
                self._resends.popleft()
                log.warning("bad resend command ignored", extra={"reason": str(exc)})
                continue
            seqs = self.buffer.requeue(first, last)  # a disk error leaves the command queued for the next try
            self._resends.popleft()
            missing = (last - first + 1) - len(set(seqs))
            log.info(
                "server asked for payloads again",
                extra={"reason": f"seq {first}..{last}: {len(seqs)} requeued, {missing} no longer kept"},
            )

    def start(self) -> None:
        """Start the forwarder thread."""
        self._thread.start()

    def notify(self, entry: Entry) -> None:
        """A new payload was stored; if connected it is sent at once (from memory: no read of the buffer)."""
        if self.conn.connected.is_set():
            self._live.append(entry)
        self._wake.set()

    def _loop(self) -> None:
        tokens = 0.0
        last = time.monotonic()
        last_status = 0.0
        while not self._stop.is_set():
            # Event-driven: woken by a new payload, a PUBACK or a connection change. It
            # polls (for the drain rate and the back-off) only while a backlog waits.
            backlog = len(self.buffer) > len(self._inflight) + len(self._live) + len(self._acked)
            self._wake.wait(0.05 if backlog or self._acked else STATUS_EVERY)
            self._wake.clear()
            now = time.monotonic()
            tokens = min(self.rate, tokens + (now - last) * self.rate)  # burst of at most one second
            last = now
            if now - last_status >= STATUS_EVERY:
                self.write_status()
                last_status = now
            try:
                tokens = self._step(tokens)
                self._iteration_failures = 0
            except Exception as exc:
                self._iteration_failures += 1
                reason = f"{type(exc).__name__}: {exc}"
                self.status.last_error, self.status.last_error_at = reason, time.time()
                if reason not in self._logged:
                    self._logged.add(reason)
                    log.error("forwarder error; retrying with back-off", extra={"reason": reason}, exc_info=True)
                self._stop.wait(min(30.0, 0.1 * 2 ** min(self._iteration_failures, 9)))

    def _step(self, tokens: float) -> float:
        """One iteration: complete PUBACKs, serve resend commands, send live payloads and the backlog."""
        self._complete()
        self._resend()
        if not self.conn.connected.is_set() or time.monotonic() < self._retry_at:
            self._live.clear()
            return tokens
        busy = self._inflight | set(self._acked)
        while self._live and len(self._inflight) < self.max_inflight:
            entry = self._live.popleft()
            if entry.id not in busy:
                self._send(entry.id, entry.seq, entry.topic, entry.body)
        room = min(int(tokens), self.max_inflight - len(self._inflight))
        if len(self.buffer) <= len(self._inflight) + len(self._acked):
            return tokens
        for entry in self.buffer.oldest(room, exclude=self._inflight | set(self._acked)):
            self._send(entry.id, entry.seq, entry.topic, entry.body)
            tokens -= 1
        return tokens

    def _send(self, entry_id: int, seq: int, topic: str, body: bytes) -> None:
        self._inflight.add(entry_id)
        self.status.published += 1
        try:
            future = self.conn.publish(topic, body)
        except Exception as exc:  # noqa: BLE001 - an SDK error on submit is a failed publish, retried later
            future = Future()
            future.set_exception(exc)

        def done(f: Future[Any]) -> None:  # runs on an awscrt thread: hand over, never touch the buffer here
            self._done.append((entry_id, seq, f))
            self._wake.set()

        future.add_done_callback(done)

    def _complete(self) -> None:
        while self._done:
            entry_id, seq, future = self._done.popleft()
            self._inflight.discard(entry_id)
            reason = self._failure(future)
            if reason is None:
                self._acked.append(entry_id)
                self.status.acked += 1
                continue
            self.status.failed += 1
            self.status.last_error, self.status.last_error_at = reason, time.time()
            if reason not in self._logged:
                self._logged.add(reason)
                log.error("publish failed; payload kept in the buffer", extra={"seq": seq, "reason": reason})
            self._retry_at = time.monotonic() + self._failure_delay
            self._failure_delay = min(30.0, self._failure_delay * 2)
        if self._acked:
            # A failed ack (a locked or full disk) keeps the ids here, out of the sending lanes, and is
            # retried next iteration: nothing acknowledged is published again for it.
            self.buffer.ack(list(self._acked))
            self._acked.clear()
            self._failure_delay = 1.0

    @staticmethod
    def _failure(future: Future[Any]) -> str | None:
        exc = future.exception()
        if exc is not None:
            return f"{getattr(exc, 'name', type(exc).__name__)}: {getattr(exc, 'message', exc)}"
        puback = getattr(future.result(), "puback", None)
        code = getattr(puback, "reason_code", 0)
        if code is not None and int(code) >= 128:
            if int(code) == NOT_AUTHORIZED:
                return (
                    f"not authorized: the broker refused the publish (MQTT 5 reason code {NOT_AUTHORIZED}, "
                    "NOT_AUTHORIZED); its policy/ACL must allow this client to publish to devices/<client id>/#, "
                    "and on a CN-keyed broker the client id must equal the certificate's CN"
                )
            return f"broker refused the publish: {getattr(code, 'name', code)} ({int(code)})"
        return None

    def write_status(self) -> None:
        """Write ``status.json`` atomically for ``edgemon-agent status`` (a full disk is logged, not raised)."""
        self.status.updated = time.time()
        self.status.buffer = self.buffer.health()
        tmp = self.status_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(asdict(self.status)))
            os.replace(tmp, self.status_path)
        except OSError as exc:
            reason = f"status.json: {type(exc).__name__}: {exc.strerror or exc}"
            if reason not in self._logged:
                self._logged.add(reason)
                log.error("cannot write status file", extra={"path": str(self.status_path), "reason": reason})

    def drain(self, timeout: float) -> bool:
        """Wait until the buffer is empty (for tests and a clean stop); True when it is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.buffer) == 0:
                return True
            time.sleep(0.02)
        return len(self.buffer) == 0

    def stop(self) -> None:
        """Stop the thread and write a last status."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.status.state = "stopped"
        self.write_status()


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
