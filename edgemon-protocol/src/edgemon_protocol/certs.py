"""Read the subject common name of a PEM certificate without a crypto library.

The agent needs the CN once, at start-up, to default its MQTT client id.
``cryptography`` would add about 16 MB to the agent's resident memory for
that one lookup, so this walks the certificate's DER encoding (RFC 5280:
``Certificate -> TBSCertificate -> subject -> RDN -> AttributeTypeAndValue``)
with the standard library. Tests check it against ``cryptography``.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timezone
from pathlib import Path

CN_OID = bytes([0x06, 0x03, 0x55, 0x04, 0x03])  # OBJECT IDENTIFIER 2.5.4.3
STRING_TAGS = {0x0C, 0x13, 0x14, 0x16, 0x1E, 0x1C}  # UTF8, Printable, Teletex, IA5, BMP, Universal


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """Return (tag, start of value, end of value) of the DER element at ``pos``."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if not 0 < n <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    end = pos + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, pos, end


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, vstart, vend = _tlv(data, pos)
        out.append((tag, vstart, vend))
        pos = vend
    return out


def subject_cn_der(der: bytes) -> str | None:
    """Return the subject CN of a DER certificate, ``None`` if it has none.

    Raises:
        ValueError: not a well-formed X.509 certificate.
    """
    try:
        tag, start, end = _tlv(der, 0)
        if tag != 0x30:
            raise ValueError("not a SEQUENCE")
        tbs_tag, tbs_start, tbs_end = _children(der, start, end)[0]
        fields = _children(der, tbs_start, tbs_end)
        if fields and fields[0][0] == 0xA0:  # explicit version
            fields = fields[1:]
        # serialNumber, signature, issuer, validity, subject
        subj_tag, subj_start, subj_end = fields[4]
        if tbs_tag != 0x30 or subj_tag != 0x30:
            raise ValueError("unexpected structure")
        cn = None
        for _, rdn_start, rdn_end in _children(der, subj_start, subj_end):
            for _, atv_start, _atv_end in _children(der, rdn_start, rdn_end):
                if der[atv_start : atv_start + len(CN_OID)] == CN_OID:
                    vtag, vstart, vend = _tlv(der, atv_start + len(CN_OID))
                    if vtag not in STRING_TAGS:
                        raise ValueError("CN is not a string")
                    raw = der[vstart:vend]
                    cn = raw.decode("utf-16-be") if vtag == 0x1E else raw.decode("utf-8", "replace")
        return cn
    except IndexError as exc:
        raise ValueError("truncated certificate") from exc


def _time(der: bytes, tag: int, start: int, end: int) -> float:
    """An X.509 UTCTime (``YYMMDDHHMMSSZ``) or GeneralizedTime (``YYYYMMDDHHMMSSZ``) as epoch seconds."""
    text = der[start:end].decode("ascii")
    if tag == 0x17:  # UTCTime: 50-99 are 19xx (RFC 5280, 4.1.2.5.1)
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:
        raise ValueError("validity is not a time")
    when = datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
    return when.timestamp()


def validity_der(der: bytes) -> tuple[float, float]:
    """``(not_before, not_after)`` of a DER certificate, as epoch seconds.

    Raises:
        ValueError: not a well-formed X.509 certificate.
    """
    try:
        _, start, end = _tlv(der, 0)
        _, tbs_start, tbs_end = _children(der, start, end)[0]
        fields = _children(der, tbs_start, tbs_end)
        if fields and fields[0][0] == 0xA0:  # explicit version
            fields = fields[1:]
        _, v_start, v_end = fields[3]  # serialNumber, signature, issuer, validity
        (t1, s1, e1), (t2, s2, e2) = _children(der, v_start, v_end)[:2]
        return _time(der, t1, s1, e1), _time(der, t2, s2, e2)
    except (IndexError, UnicodeDecodeError) as exc:
        raise ValueError("truncated certificate") from exc


def _pem_der(path: str | Path) -> bytes:
    text = Path(path).read_text(encoding="ascii", errors="replace")
    match = re.search(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", text, re.S)
    if match is None:
        raise ValueError("no PEM certificate block")
    return base64.b64decode("".join(match.group(1).split()))


def subject_cn(path: str | Path) -> str | None:
    """Return the subject CN of the first certificate in a PEM file."""
    return subject_cn_der(_pem_der(path))


def validity(path: str | Path) -> tuple[float, float]:
    """``(not_before, not_after)`` of the first certificate in a PEM file, as epoch seconds."""
    return validity_der(_pem_der(path))
