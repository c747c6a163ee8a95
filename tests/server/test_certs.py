"""`edgemon-server certs`: a local CA whose certificates a real mosquitto accepts."""

from __future__ import annotations

import subprocess

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.server.conftest import SERVER_BIN


def certs(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    """The real command line, in a process of its own."""
    return subprocess.run([str(SERVER_BIN), "certs", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def certs_here(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    """The same command line in this process (each new process costs most of a second of imports)."""
    import contextlib
    import io
    import os

    from edgemon_server import cli

    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["certs", *args])
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@pytest.mark.slow  # a process of its own: end to end
def test_init_and_device(tmp_path):
    out = certs("init", "--dir", "pki", "--broker-name", "mosquitto", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "AWS IoT Core issues device certificates itself" in out.stderr
    pki = tmp_path / "pki"
    broker = x509.load_pem_x509_certificate((pki / "localhost.crt").read_bytes())
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert names == ["localhost", "mosquitto"], "docker compose reaches the broker as mosquitto"
    for name in ("ca.pem", "ca.key", "localhost.crt", "edgemon-collector.crt", "acl", "mosquitto.conf"):
        assert (pki / name).exists(), name
    acl = (pki / "acl").read_text()
    assert "pattern write devices/%u/monitoring" in acl
    writes = [line for line in acl.splitlines() if line.startswith(("pattern write", "topic write"))]
    assert all("#" not in line for line in writes if line.startswith("pattern")), "devices write explicit topics"
    conf = (pki / "mosquitto.conf").read_text()
    for line in ("require_certificate true", "use_username_as_clientid true", "retain_available false"):
        assert line in conf
    for key in ("ca.key", "localhost.key", "edgemon-collector.key"):
        assert oct((pki / key).stat().st_mode & 0o777) == "0o600", key

    out = certs_here("device", "press-17", "--dir", "pki", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    cert = x509.load_pem_x509_certificate((pki / "press-17.crt").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "press-17"
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)

    assert certs_here("init", "--dir", "pki", cwd=tmp_path).returncode == 2, "never overwrites a CA"
    assert oct((pki / "press-17.key").stat().st_mode & 0o777) == "0o600"
    for name, why in (
        ("a/b", "a device name is 1-64 of"),
        ("x" * 65, "a device name is 1-64 of"),
        ("ca", "reserved"),
        ("localhost", "reserved"),
        ("edgemon-collector", "reserved"),
        ("edgemon-collector-9", "reserved"),
        ("press-17", "exists; not overwriting"),
    ):
        bad = certs_here("device", name, "--dir", "pki", cwd=tmp_path)
        assert bad.returncode == 2, name
        assert why in bad.stderr, (name, bad.stderr)
        assert "Traceback" not in bad.stderr
    ca_key = (pki / "ca.key").read_bytes()
    assert certs_here("device", "ca", "--dir", "pki", cwd=tmp_path).returncode == 2
    assert (pki / "ca.key").read_bytes() == ca_key, "the CA's key is never overwritten"
    assert certs_here("device", "x", "--dir", "nothing", cwd=tmp_path).returncode == 2

    out = certs_here("collector", "edgemon-collector-2", "--dir", "pki", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "user edgemon-collector-2\ntopic read devices/+/monitoring" in (pki / "acl").read_text()
    assert certs_here("collector", "press-18", "--dir", "pki", cwd=tmp_path).returncode == 2


def test_the_test_broker_applies_the_same_rules_as_certs_init():
    from edgemon_server import pki
    from tests import harness

    assert pki.ACL_HEAD.split("\n", 3)[3] in harness.ACL, "the device rules are the same"
    assert pki.COLLECTOR_ACL.format(name=harness.COLLECTOR_CN) in harness.ACL
    assert harness.MAX_PACKET == pki.MAX_PACKET
