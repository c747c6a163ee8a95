"""Commands from the server to a device (``devices/<id>/commands/<name>``), as JSON bodies.

``resend {"from": a, "to": b}``: publish payloads ``seq`` a..b again (both included) from the
device's store of acknowledged payloads. The server sends it for a hole in a device's ``seq`` that
stays open (a broker that lost messages it had acknowledged, a shared collector that died).
"""

from __future__ import annotations

import json
from typing import Any

RESEND = "resend"
CONFIG = "config"
"""A remote configuration version (its body: :mod:`edgemon_protocol.remote`)."""
NAMES = (RESEND, CONFIG)
"""Every command a server sends; brokers' policies let a device receive exactly these."""
MAX_RESEND = 100_000
"""Longest range one resend command may ask for."""


def encode_resend(first: int, last: int) -> bytes:
    """The body of a resend command for ``seq`` ``first``..``last``.

    Raises:
        ValueError: a range :func:`parse_resend` would refuse.
    """
    body = json.dumps({"from": first, "to": last}).encode()
    parse_resend(body)
    return body


def parse_resend(body: bytes) -> tuple[int, int]:
    """Parse a resend command body.

    Raises:
        ValueError: with the reason, for anything but ``{"from": a, "to": b}`` with 0 <= a <= b < a + MAX_RESEND.
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
