"""The stdlib CN reader agrees with cryptography on any common name."""

from __future__ import annotations

import contextlib

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgemon_protocol.certs import subject_cn, subject_cn_der, validity

common_names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=16)


@given(common_names)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_subject_cn_matches_cryptography(pki, cn):
    ident = pki.issue(cn.replace("/", "_").replace("\x00", "_"))
    cert = x509.load_pem_x509_certificate(ident.cert.read_bytes())
    expected = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert subject_cn(ident.cert) == expected


def test_ca_and_server_certificates(pki):
    assert subject_cn(pki.ca_path) == "edgemon test CA"
    assert subject_cn(pki.server.cert) == "localhost"


@given(st.binary(max_size=300))
def test_garbage_is_a_value_error_never_a_crash(data):
    with contextlib.suppress(ValueError):
        subject_cn_der(data)


def test_not_pem(tmp_path):
    path = tmp_path / "x.pem"
    path.write_text("hello")
    with pytest.raises(ValueError, match="no PEM certificate"):
        subject_cn(path)


def test_validity_matches_cryptography(pki):
    for ident in (pki.issue("dev-valid"), pki.issue("dev-old", expired=True)):
        cert = x509.load_pem_x509_certificate(ident.cert.read_bytes())
        assert validity(ident.cert) == (
            cert.not_valid_before_utc.timestamp(),
            cert.not_valid_after_utc.timestamp(),
        )
