"""Names on the wire: device ids, metric keys, rule names.

A device id becomes an MQTT topic level (``devices/<id>/monitoring``) and a URL path segment, so it
holds no ``/``, ``+``, ``#`` or space. A metric key is one level of the payload's ``metrics`` tree;
without ``-`` in it, the server's dash-joined flat key (``disk-sda-read_bytes``) names exactly one
path of the tree.
"""

from __future__ import annotations

import re

DEVICE_ID = r"[A-Za-z0-9_.:-]{1,128}"
"""A device id (MQTT client id and topic level): letters, digits, ``_ . : -``; 1 to 128 characters."""
DEVICE_ID_RE = re.compile(DEVICE_ID)

CERT_NAME_MAX = 64
"""Longest device id a certificate can carry: X.509 limits a subject CN to 64 characters."""

KEY = r"[A-Za-z0-9_]{1,64}"
"""One level of the metrics tree."""
KEY_RE = re.compile(KEY)

RULE = r"[a-z][a-z0-9_.]{0,63}"
"""An alert rule's name."""
RULE_RE = re.compile(RULE)

TS = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z"
"""A payload's ``ts``: UTC, RFC 3339 with a ``Z`` suffix."""
TS_RE = re.compile(TS)


def is_device_id(text: object) -> bool:
    """Whether ``text`` is a valid device id."""
    return isinstance(text, str) and DEVICE_ID_RE.fullmatch(text) is not None


def device_id_from(name: str, limit: int = 128) -> str:
    """Make a device id of any name (a host name): each other character becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", name)[:limit]


def safe_key(raw: str) -> str:
    """Turn a name from the outside world (a mount point, an interface) into a metric key.

    Characters outside ``[A-Za-z0-9_]`` become ``_``, leading/trailing ``_`` go, the result is cut to
    64 characters; ``_`` when nothing is left. ``"/dev/sda1"`` -> ``"dev_sda1"``.
    """
    key = re.sub(r"[^A-Za-z0-9_]", "_", raw).strip("_")
    return key[:64] or "_"
