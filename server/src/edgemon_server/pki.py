"""A local certificate authority for a home lab or a development stack.

``edgemon-server certs init`` creates a CA, a broker certificate for
localhost/127.0.0.1 and a collector certificate (CN ``edgemon-collector``),
a mosquitto ACL that lets each device publish only its own
``devices/<CN>/monitoring`` and ``.../alerts`` and read its own
``.../commands/#``, and a mosquitto.conf that binds the client id to the
certificate's CN (no session takeover), refuses retained messages and packets
over 256 KB. ``certs device NAME`` issues a device certificate whose CN is
the device id (reserved and over-long names refused); ``certs collector
NAME`` another collector's. AWS IoT Core issues its own device certificates:
use this only for your own broker.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgemon_protocol import topics
from edgemon_protocol.ids import CERT_NAME_MAX, DEVICE_ID_RE

COLLECTOR_CN = "edgemon-collector"
"""The collectors' names: ``edgemon-collector`` and ``edgemon-collector-<n>`` (one certificate each)."""
SERVER_CN = "localhost"
RESERVED = ("ca", SERVER_CN)
MAX_PACKET = 256 * 1024
"""Largest MQTT packet the broker accepts: the agent's 128 KB payload limit (AWS IoT Core's) with room to spare."""

ACL_HEAD = "\n".join(
    [
        "# edgemon: what each identity (certificate CN = user name = client id) may do.",
        "# Devices: publish their own payloads, metadata and alerts, read their own commands (the local",
        "# twin of a per-thing AWS IoT policy). Explicit topics, no '#': a CN like 'dev-b/monitoring' gets nothing.",
        *topics.device_acl(),
        "",
    ]
)

COLLECTOR_ACL = "\n".join(["", "user {name}", *topics.collector_acl(), ""])


def check_device_name(name: str) -> None:
    """Refuse names that are not device ids, are too long for a CN, or would impersonate a service.

    Raises:
        ValueError: with the reason.
    """
    if not DEVICE_ID_RE.fullmatch(name) or len(name) > CERT_NAME_MAX:
        raise ValueError(f"{name[:80]!r}: a device name is 1-64 of letters, digits, _ . : -")
    if name.lower() in RESERVED or name.lower().startswith(COLLECTOR_CN):
        raise ValueError(f"{name!r} is reserved (the CA, the broker and the collectors use it)")


def collector_name(n: int | None = None) -> str:
    """``edgemon-collector`` or ``edgemon-collector-<n>``."""
    return COLLECTOR_CN if n is None else f"{COLLECTOR_CN}-{n}"


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Created 0600 (never readable by others, not even for a moment), and never over an existing key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


class LocalCA:
    """The CA in ``directory`` (``ca.pem``, ``ca.key``), created by :meth:`init`."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        """Bind to a directory (nothing is created yet)."""
        self.dir = Path(directory)
        self.ca_path = self.dir / "ca.pem"
        self.ca_key_path = self.dir / "ca.key"

    def exists(self) -> bool:
        """Whether the CA files are there."""
        return self.ca_path.exists() and self.ca_key_path.exists()

    def init(self, days: int = 825, broker_names: tuple[str, ...] = ()) -> None:
        """Create the CA, the broker's and the collector's certificates, and the ACL file.

        The broker's certificate names ``localhost`` and 127.0.0.1, plus ``broker_names`` (the host
        names devices and collectors reach it by, e.g. ``mosquitto`` in docker compose).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgemon local CA")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        self.ca_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(self.ca_key_path, key)
        self.issue(SERVER_CN, server=True, names=broker_names)
        (self.dir / "acl").write_text(ACL_HEAD)
        self.add_collector(COLLECTOR_CN)

    def add_collector(self, name: str) -> tuple[Path, Path]:
        """Issue a collector's certificate and give it the collectors' rights in the ACL."""
        if name != COLLECTOR_CN and not re.fullmatch(re.escape(COLLECTOR_CN) + r"-[a-z0-9]{1,16}", name):
            raise ValueError(f"{name!r}: a collector is {COLLECTOR_CN} or {COLLECTOR_CN}-<1-16 of a-z 0-9>")
        paths = self.issue(name)
        with open(self.dir / "acl", "a", encoding="utf-8") as fh:
            fh.write(COLLECTOR_ACL.format(name=name))
        return paths

    def issue(self, cn: str, server: bool = False, days: int = 825, names: tuple[str, ...] = ()) -> tuple[Path, Path]:
        """Issue ``<cn>.crt`` and ``<cn>.key``; returns their paths.

        Raises:
            FileExistsError: a certificate of that name exists (nothing is overwritten).
        """
        if (self.dir / f"{cn}.crt").exists() or (self.dir / f"{cn}.key").exists():
            raise FileExistsError(f"{self.dir / cn}.crt or .key exists; not overwriting")
        ca_cert = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
        ca_key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.ca_key_path}: not an EC key")
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        *(x509.DNSName(n) for n in names),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path, key_path = self.dir / f"{cn}.crt", self.dir / f"{cn}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return cert_path, key_path


def mosquitto_conf(ca: LocalCA, port: int, workdir: Path) -> str:
    """A mosquitto configuration: mutual TLS on 127.0.0.1:``port`` with the per-device ACL."""
    lines = [
        "per_listener_settings true",
        "persistence true",
        f"persistence_location {workdir}/",
        f"log_dest file {workdir}/mosquitto.log",
        # Past 1000 queued messages (the default) mosquitto drops silently for a slow subscriber.
        "max_queued_messages 0",
        f"max_packet_size {MAX_PACKET}",  # a 10 MB publish is refused, not buffered by broker and collector
        "retain_available false",  # no retained copy of a message on any device topic
        f"listener {port} 127.0.0.1",
        f"cafile {ca.ca_path}",
        f"certfile {ca.dir / 'localhost.crt'}",
        f"keyfile {ca.dir / 'localhost.key'}",
        "require_certificate true",
        "use_identity_as_username true",
        # The client id is the certificate's CN: nobody can take over another client's session.
        "use_username_as_clientid true",
        f"acl_file {ca.dir / 'acl'}",
    ]
    if os.geteuid() == 0:
        lines.insert(0, "user root")  # else it drops to 'mosquitto', who cannot read the keys
    return "\n".join(lines) + "\n"
