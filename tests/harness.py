"""Test harness for everything that talks MQTT: certificates and a real Mosquitto.

- :class:`Pki` makes, with ``cryptography``, a CA, a server certificate for
  ``127.0.0.1``/``localhost``, per-device certificates (CN = device id), an
  expired one, and one from a foreign CA.
- :class:`Mosquitto` starts a real ``mosquitto`` on a free port: a TLS
  listener that requires client certificates, ``use_identity_as_username`` and
  ``use_username_as_clientid`` (the client id is the CN: no session takeover),
  the per-device ACL (:data:`ACL`, the local twin of the AWS IoT policy) plus
  read rules for the collector identities, no retained messages, packets of at
  most 256 KB, and ``max_queued_messages 0`` (past the default 1000, mosquitto
  drops messages for a slow subscriber while still acknowledging them).
  It stops gracefully (SIGTERM) or with SIGKILL, and restarts on the same port.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgemon_protocol import topics

COLLECTOR_CN = "edgemon-collector"
SUBSCRIBER_CN = "edgemon-collector-sub"
"""The tests' subscriber: a collector identity of its own (the client id is the CN)."""
MAX_PACKET = 256 * 1024

ACL = (
    "# Devices (CN = user = client id): their own payloads, metadata, alerts and configuration, their own commands.\n"
    + "".join(f"{line}\n" for line in topics.device_acl())
) + "".join(
    f"\nuser {name}\n" + "".join(f"{line}\n" for line in topics.collector_acl())
    for name in (COLLECTOR_CN, SUBSCRIBER_CN, *(f"{COLLECTOR_CN}-{i}" for i in range(1, 9)))
)
"""The same rules as ``edgemon-server certs init`` writes (a server test checks they agree), with
collector identities for the tests: ``edgemon-collector``, ``-sub`` and ``-1`` to ``-8``."""


@dataclass(frozen=True)
class Identity:
    """A certificate and its key on disk."""

    cert: Path
    key: Path
    cn: str


class Pki:
    """A throwaway PKI in a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca_key, self.ca_cert = self._ca("edgemon test CA")
        self.ca_path = self._write_cert("ca.pem", self.ca_cert)
        self.foreign_key, self.foreign_cert = self._ca("someone else's CA")
        self.server = self.issue("localhost", server=True)

    @staticmethod
    def _key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def _ca(self, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = self._key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def _write_cert(self, name: str, cert: x509.Certificate) -> Path:
        path = self.root / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def issue(self, cn: str, *, server: bool = False, expired: bool = False, foreign: bool = False) -> Identity:
        """Issue a certificate for ``cn`` (a device id, or ``localhost`` for the broker)."""
        key = self._key()
        ca_key, ca_cert = (self.foreign_key, self.foreign_cert) if foreign else (self.ca_key, self.ca_cert)
        now = dt.datetime.now(dt.timezone.utc)
        start, end = (
            (now - dt.timedelta(days=10), now - dt.timedelta(days=1))
            if expired
            else (
                now - dt.timedelta(days=1),
                now + dt.timedelta(days=30),
            )
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
                ),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        tag = f"{cn.replace('/', '_')}{'-expired' if expired else ''}{'-foreign' if foreign else ''}"
        cert_path = self._write_cert(f"{tag}.crt", cert)
        key_path = self.root / f"{tag}.key"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)
        return Identity(cert_path, key_path, cn)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """A real mosquitto broker with mutual TLS and the per-device ACL."""

    def __init__(self, workdir: Path, pki: Pki, port: int | None = None, plain_port: int | None = None) -> None:
        self.workdir = workdir
        self.pki = pki
        self.port = port or free_port()
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        acl = workdir / "acl"
        acl.write_text(ACL)
        self.conf = workdir / "mosquitto.conf"
        lines = [
            "per_listener_settings true",
            "persistence true",
            f"persistence_location {workdir}/",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            f"max_packet_size {MAX_PACKET}",
            "retain_available false",
            f"listener {self.port} 127.0.0.1",
            f"cafile {pki.ca_path}",
            f"certfile {pki.server.cert}",
            f"keyfile {pki.server.key}",
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
            f"acl_file {acl}",
        ]
        if plain_port is not None:  # loopback plain TCP, for the insecure-local development mode
            lines += [f"listener {plain_port} 127.0.0.1", "allow_anonymous true"]
        if os.geteuid() == 0:
            lines.insert(0, "user root")  # else it drops to 'mosquitto' and cannot read our temp dir
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        with open(self.workdir / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                stderr = (self.workdir / "stderr.log").read_text()
                raise RuntimeError(f"mosquitto exited: {stderr}\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}\n{self.log_text()}")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def collector_process_env(broker: Mosquitto, identity: Identity, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of an ``edgemon-server collect`` process on ``broker`` as ``identity``."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("EDGEMON_")},
        "EDGEMON_DATABASE_URL": database_url,
        "EDGEMON_MQTT_ENDPOINT": "localhost",
        "EDGEMON_MQTT_PORT": str(broker.port),
        "EDGEMON_MQTT_CA": str(broker.pki.ca_path),
        "EDGEMON_MQTT_CERT": str(identity.cert),
        "EDGEMON_MQTT_KEY": str(identity.key),
        **extra,
    }


def mqtt5_client(broker: Mosquitto, identity: Identity, client_id: str, **options: Any) -> Any:
    """An awscrt MQTT 5 client of ``broker`` with ``identity`` (quick reconnects, no AWS flow control)."""
    from awscrt import mqtt5
    from awsiot import mqtt5_client_builder

    return mqtt5_client_builder.mtls_from_path(
        endpoint="localhost",
        port=broker.port,
        cert_filepath=str(identity.cert),
        pri_key_filepath=str(identity.key),
        ca_filepath=str(broker.pki.ca_path),
        client_id=client_id,
        enable_metrics_collection=False,
        min_reconnect_delay_ms=200,
        max_reconnect_delay_ms=1000,
        extended_validation_and_flow_control_options=mqtt5.ExtendedValidationAndFlowControlOptions.NONE,
        **options,
    )


class Subscriber:
    """An awscrt MQTT 5 client with the collector's certificate, recording what it receives."""

    def __init__(self, broker: Mosquitto, identity: Identity, topic: str = "devices/+/monitoring") -> None:
        """Connect with a persistent session (REJOIN_ALWAYS, not a clean start): broker restarts lose nothing."""
        import threading

        from awscrt import mqtt5

        self.messages: list[tuple[str, bytes]] = []
        self.received_at: list[float] = []  # wall-clock arrival time of each message
        self._lock = threading.Lock()
        connected = threading.Event()
        self.client = mqtt5_client(
            broker,
            identity,
            f"{identity.cn}-{free_port()}",
            session_behavior=mqtt5.ClientSessionBehaviorType.REJOIN_ALWAYS,
            session_expiry_interval_sec=3600,
            on_publish_received=self._on_publish,
            on_lifecycle_connection_success=lambda _d: connected.set(),
        )
        self.client.start()
        if not connected.wait(10):
            raise RuntimeError("subscriber could not connect")
        sub = mqtt5.SubscribePacket(subscriptions=[mqtt5.Subscription(topic_filter=topic, qos=mqtt5.QoS.AT_LEAST_ONCE)])
        self.client.subscribe(sub).result(10)

    def _on_publish(self, data: object) -> None:
        packet = data.publish_packet  # type: ignore[attr-defined]
        with self._lock:
            self.messages.append((packet.topic, bytes(packet.payload)))
            self.received_at.append(time.time())

    def payloads(self) -> list[dict[str, object]]:
        import json

        with self._lock:
            return [json.loads(body) for _, body in self.messages]

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.payloads()):
                return True
            time.sleep(0.05)
        return bool(predicate(self.payloads()))

    def wait_count(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.messages) < n:
            time.sleep(0.05)
        return len(self.messages) >= n

    def stop(self) -> None:
        self.client.stop()


def wait(predicate: Any, timeout: float, step: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something true (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


@contextmanager
def temporary_pg_database(admin_url: str, prefix: str = "edgemon_t") -> Iterator[str]:
    """A fresh PostgreSQL database next to ``admin_url``'s, dropped afterwards (its connections too)."""
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
