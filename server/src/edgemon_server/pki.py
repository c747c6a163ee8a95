"""A local certificate authority for a home lab or a development stack.

``edgemon-server certs init`` creates a CA, a broker certificate for
localhost/127.0.0.1 and a collector certificate (CN ``edgemon-collector``),
plus a mosquitto ACL that lets each device write only under
``devices/<its CN>/``; ``edgemon-server certs device NAME`` issues a device
certificate whose CN is the device id. AWS IoT Core issues its own device
certificates: use this only for your own broker.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

COLLECTOR_CN = "edgemon-collector"
ACL = """# edgemon: each device may publish only under its own prefix (CN = user name) and
# read its own commands: the local twin of a per-thing AWS IoT policy.
pattern write devices/%u/#
pattern read devices/%u/commands/#

user edgemon-collector
topic read devices/#
topic write devices/+/commands/#
"""


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


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

    def init(self, days: int = 825) -> None:
        """Create the CA, the broker's and the collector's certificates, and the ACL file."""
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
        self.issue("localhost", server=True)
        self.issue(COLLECTOR_CN)
        (self.dir / "acl").write_text(ACL)

    def issue(self, cn: str, server: bool = False, days: int = 825) -> tuple[Path, Path]:
        """Issue ``<cn>.crt`` and ``<cn>.key``; returns their paths."""
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
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
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
        "max_queued_messages 0",  # never drop silently for a slow subscriber (ANCHORS trap 1)
        f"listener {port} 127.0.0.1",
        f"cafile {ca.ca_path}",
        f"certfile {ca.dir / 'localhost.crt'}",
        f"keyfile {ca.dir / 'localhost.key'}",
        "require_certificate true",
        "use_identity_as_username true",
        f"acl_file {ca.dir / 'acl'}",
    ]
    if os.geteuid() == 0:
        lines.insert(0, "user root")  # else it drops to 'mosquitto', who cannot read the keys (trap 12)
    return "\n".join(lines) + "\n"
