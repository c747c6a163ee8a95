"""`edgemon-server certs`: a local CA whose certificates a real mosquitto accepts."""

from __future__ import annotations

import subprocess

from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.server.conftest import SERVER_BIN


def certs(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SERVER_BIN), "certs", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_init_and_device(tmp_path):
    out = certs("init", "--dir", "pki", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "AWS IoT Core issues device certificates itself" in out.stderr
    pki = tmp_path / "pki"
    for name in ("ca.pem", "ca.key", "localhost.crt", "edgemon-collector.crt", "acl", "mosquitto.conf"):
        assert (pki / name).exists(), name
    assert "pattern write devices/%u/#" in (pki / "acl").read_text()
    assert "require_certificate true" in (pki / "mosquitto.conf").read_text()
    assert oct((pki / "ca.key").stat().st_mode & 0o777) == "0o600"

    out = certs("device", "press-17", "--dir", "pki", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    cert = x509.load_pem_x509_certificate((pki / "press-17.crt").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "press-17"
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)

    assert certs("init", "--dir", "pki", cwd=tmp_path).returncode == 2, "never overwrites a CA"
    bad = certs("device", "a/b", "--dir", "pki", cwd=tmp_path)
    assert bad.returncode == 2
    assert "device id" in bad.stderr
    assert certs("device", "x", "--dir", "nothing", cwd=tmp_path).returncode == 2
