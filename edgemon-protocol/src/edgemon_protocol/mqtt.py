"""The MQTT side of both ends: connection settings, one awscrt client builder, error hints.

Agent and collector build their clients here: MQTT 5 over mutual TLS (the production path, to
Mosquitto or AWS IoT Core), MQTT 5 over plain TCP to a loopback broker (tests, development), and
MQTT 3.1.1 over plain TCP to a loopback demo broker (``make run``'s embedded broker). awscrt and
awsiotsdk are imported only when a client is built.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgemon_protocol.config import ConfigError, check_ranges


@dataclass(frozen=True)
class MqttSettings:
    """The connection keys of an ``[mqtt]`` section (variables ``EDGEMON_MQTT_<KEY>``).

    Attributes:
        endpoint: broker host name (AWS IoT: ``xxxx-ats.iot.<region>.amazonaws.com``).
        port: 8883 (MQTT over TLS).
        ca: CA bundle that signed the broker's certificate (PEM path).
        cert: this client's certificate (PEM path).
        key: its private key (PEM path; never logged).
        insecure_local: plain TCP, allowed only to a loopback broker (development).
        protocol: ``5`` (the default), or ``3.1.1`` for the embedded demo broker (with ``insecure_local``).
        keep_alive: seconds between PINGREQs when idle.
        min_reconnect_delay: first reconnect back-off, seconds (full jitter).
        max_reconnect_delay: back-off cap, seconds.
        connect_timeout: seconds to wait for a CONNACK.
    """

    endpoint: str = ""
    port: int = 8883
    ca: str = ""
    cert: str = ""
    key: str = ""
    insecure_local: bool = False
    protocol: str = "5"
    keep_alive: int = 60
    min_reconnect_delay: float = 1.0
    max_reconnect_delay: float = 60.0
    connect_timeout: float = 10.0


MQTT_RANGES: dict[str, tuple[float, float]] = {
    "port": (1, 65535),
    "keep_alive": (0, 65535),
    "min_reconnect_delay": (0.01, 3600.0),
    "max_reconnect_delay": (0.01, 3600.0),
    "connect_timeout": (0.1, 600.0),
}
"""``[mqtt]`` numbers: inclusive (min, max); MQTT's keep-alive is a 16-bit field."""

REMOVED = {
    f"mqtt.{key}": (
        f"topics are fixed by the protocol ({topic}), so that the server subscribes to what agents "
        "publish; remove this key"
    )
    for key, topic in (
        ("topic", "devices/<client id>/monitoring"),
        ("alerts_topic", "devices/<client id>/alerts"),
        ("commands_topic", "devices/<client id>/commands"),
    )
}
"""Keys of earlier versions, refused with the reason (for ``load_sections(removed=...)``)."""


def check_mqtt(mqtt: MqttSettings, where: Callable[[str], str], ranges: dict[str, tuple[float, float]]) -> None:
    """Check the ``[mqtt]`` values; ``where(key)`` gives the file:line prefix of a key."""
    check_ranges("mqtt", mqtt, ranges, where)
    if not mqtt.min_reconnect_delay <= mqtt.max_reconnect_delay:
        raise ConfigError(f"{where('min_reconnect_delay')}mqtt.min_reconnect_delay: must be <= max_reconnect_delay")
    if mqtt.protocol not in ("5", "3.1.1"):
        raise ConfigError(f"{where('protocol')}mqtt.protocol: {mqtt.protocol!r} is not one of 5, 3.1.1")


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
"""awscrt error names, explained for an operator."""


def explain(exc: BaseException | None) -> str:
    """``NAME: what it likely means`` of an awscrt error."""
    name = getattr(exc, "name", type(exc).__name__)
    return f"{name}: {HINTS.get(name, getattr(exc, 'message', str(exc)))}"


NOT_AUTHORIZED = 135
"""MQTT 5 reason code of a publish (or subscription) the broker's policy refuses."""


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


def check_transport(m: MqttSettings) -> None:
    """The checks every client makes before it connects.

    Raises:
        ConfigError: no endpoint; plain TCP to a host that is not loopback; MQTT 3.1.1 with TLS;
            missing TLS files.
    """
    if not m.endpoint:
        raise ConfigError("mqtt.endpoint (EDGEMON_MQTT_ENDPOINT) is not set")
    if m.protocol == "3.1.1" and not m.insecure_local:
        raise ConfigError(
            "mqtt.protocol 3.1.1 is only for a local demo broker (with mqtt.insecure_local): an MQTT 3.1.1 broker "
            "acknowledges publishes it refuses, so refused payloads would look delivered; use MQTT 5"
        )
    if m.insecure_local:
        if not is_loopback(m.endpoint):
            raise ConfigError(
                f"mqtt.insecure_local: refusing plain TCP to {m.endpoint!r}, which is not a loopback address; "
                "use mutual TLS (mqtt.ca, mqtt.cert, mqtt.key)"
            )
        return
    for key in ("ca", "cert", "key"):
        if not getattr(m, key):
            raise ConfigError(f"mqtt.{key} (EDGEMON_MQTT_{key.upper()}) is required for mutual TLS")


@dataclass(frozen=True)
class Handlers:
    """awscrt MQTT 5 callbacks (each gets awscrt's event data)."""

    on_success: Callable[[Any], None]
    on_failure: Callable[[Any], None]
    on_disconnect: Callable[[Any], None]
    on_publish: Callable[[Any], None]


def mqtt5_client(
    m: MqttSettings,
    client_id: str,
    handlers: Handlers,
    *,
    persistent: bool = False,
    session_expiry: int = 0,
    receive_maximum: int | None = None,
) -> Any:
    """An awscrt MQTT 5 client (not started), over mutual TLS or, with ``insecure_local``, plain TCP.

    Args:
        m: the connection settings (checked with :func:`check_transport` first).
        client_id: the MQTT client id.
        handlers: lifecycle and message callbacks.
        persistent: rejoin the session on every connection (``REJOIN_ALWAYS``; the collector: the
            broker keeps what it queued while we were away); else a clean session each time.
        session_expiry: seconds the broker keeps a persistent session.
        receive_maximum: QoS 1 messages the broker may have in flight to us.

    Publishes still queued when the connection drops fail at once (the agent's buffer keeps the
    payload; a collector publishes only resend commands, which it asks again). AWS IoT Core gets the
    SDK's flow-control defaults (they cap a client at 100 publishes/s, AWS's own limit) and its
    metrics user name; any other broker gets neither (the metrics string would become the MQTT user
    name a Mosquitto ACL sees).
    """
    from awscrt import mqtt5  # noqa: PLC0415 - imported only when a client is built

    check_transport(m)
    aws = is_aws_endpoint(m.endpoint)
    connect = mqtt5.ConnectPacket(
        client_id=client_id,
        keep_alive_interval_sec=m.keep_alive,
        session_expiry_interval_sec=session_expiry if persistent else 0,
        receive_maximum=receive_maximum,
    )
    options: dict[str, Any] = {
        "session_behavior": (
            mqtt5.ClientSessionBehaviorType.REJOIN_ALWAYS if persistent else mqtt5.ClientSessionBehaviorType.CLEAN
        ),
        "extended_validation_and_flow_control_options": (
            mqtt5.ExtendedValidationAndFlowControlOptions.AWS_IOT_CORE_DEFAULTS
            if aws
            else mqtt5.ExtendedValidationAndFlowControlOptions.NONE
        ),
        "offline_queue_behavior": mqtt5.ClientOperationQueueBehaviorType.FAIL_ALL_ON_DISCONNECT,
        "retry_jitter_mode": mqtt5.ExponentialBackoffJitterMode.FULL,
        "min_reconnect_delay_ms": int(m.min_reconnect_delay * 1000),
        "max_reconnect_delay_ms": int(m.max_reconnect_delay * 1000),
        "min_connected_time_to_reset_reconnect_delay_ms": 30_000,
        "connack_timeout_ms": int(m.connect_timeout * 1000),
        "ack_timeout_sec": 30,
    }
    if m.insecure_local:
        return mqtt5.Client(
            mqtt5.ClientOptions(
                host_name=m.endpoint,
                port=m.port,
                connect_options=connect,
                on_publish_callback_fn=handlers.on_publish,
                on_lifecycle_event_connection_success_fn=handlers.on_success,
                on_lifecycle_event_connection_failure_fn=handlers.on_failure,
                on_lifecycle_event_disconnection_fn=handlers.on_disconnect,
                **options,
            )
        )
    from awsiot import mqtt5_client_builder  # noqa: PLC0415

    return mqtt5_client_builder.mtls_from_path(
        endpoint=m.endpoint,
        port=m.port,
        cert_filepath=m.cert,
        pri_key_filepath=m.key,
        ca_filepath=m.ca,
        connect_options=connect,
        enable_metrics_collection=aws,
        on_publish_received=handlers.on_publish,
        on_lifecycle_connection_success=handlers.on_success,
        on_lifecycle_connection_failure=handlers.on_failure,
        on_lifecycle_disconnection=handlers.on_disconnect,
        on_lifecycle_stopped=lambda _data: None,
        on_lifecycle_attempting_connect=lambda _data: None,
        **options,
    )


def refused_codes(future: Any) -> str | None:
    """Why a SUBSCRIBE failed (its future's exception or refusing reason codes), ``None`` when it did not."""
    exc = future.exception()
    if exc is not None:
        return repr(exc)
    codes = [int(c) for c in getattr(future.result(), "reason_codes", [])]
    return f"reason codes {codes}" if any(code >= 128 for code in codes) else None


def subscribe5(client: Any, topic_filters: list[str], done: Callable[[Any], None]) -> None:
    """Subscribe an MQTT 5 client to ``topic_filters`` with QoS 1; ``done`` gets the future."""
    from awscrt import mqtt5  # noqa: PLC0415

    packet = mqtt5.SubscribePacket(
        subscriptions=[mqtt5.Subscription(topic_filter=f, qos=mqtt5.QoS.AT_LEAST_ONCE) for f in topic_filters]
    )
    client.subscribe(packet).add_done_callback(done)


def publish5(client: Any, topic: str, body: bytes) -> Any:
    """Publish with QoS 1 on an MQTT 5 client; the future resolves to awscrt's ``PublishCompletionData``."""
    from awscrt import mqtt5  # noqa: PLC0415

    return client.publish(mqtt5.PublishPacket(topic=topic, payload=body, qos=mqtt5.QoS.AT_LEAST_ONCE))


def mqtt311_connection(m: MqttSettings, client_id: str, **callbacks: Any) -> Any:
    """An awscrt MQTT 3.1.1 connection over plain TCP, clean session (demo broker only)."""
    from awscrt import io  # noqa: PLC0415
    from awscrt import mqtt as mqtt3  # noqa: PLC0415

    check_transport(m)
    return mqtt3.Connection(
        client=mqtt3.Client(io.ClientBootstrap.get_or_create_static_default(), None),
        host_name=m.endpoint,
        port=m.port,
        client_id=client_id,
        clean_session=True,
        keep_alive_secs=m.keep_alive,
        reconnect_min_timeout_secs=max(1, int(m.min_reconnect_delay)),
        reconnect_max_timeout_secs=max(1, int(m.max_reconnect_delay)),
        **callbacks,
    )


def connect_with_backoff(
    connection: Any, m: MqttSettings, stop: threading.Event, on_failure: Callable[[BaseException], None]
) -> bool:
    """Connect an MQTT 3.1.1 connection, retrying with doubling delays until it works or ``stop`` is set.

    awscrt's 3.1.1 client reconnects by itself only after a first success.
    """
    delay = m.min_reconnect_delay
    while not stop.is_set():
        try:
            connection.connect().result(m.connect_timeout + 5)
            return True
        except Exception as exc:  # noqa: BLE001 - any failure is retried
            on_failure(exc)
            stop.wait(delay)
            delay = min(m.max_reconnect_delay, delay * 2)
    return False
