"""Metric metadata: what a number means (unit, kind, description) and which ones head the overview.

A collector declares metadata per flat key or key pattern, relative to its own name; the agent
prefixes the name and sends the whole set once per connection and whenever it changes, to
``devices/<id>/meta`` (not in every payload)::

    {"schema": 1, "device_id": "press-17", "ts": "2026-11-30T01:00:00.000Z", "tags": {"site": "berlin"},
     "metrics": {"disk-usage-*-percent": {"unit": "%", "kind": "gauge", "headline": "Disk"},
                 "disk-io-*-read_bytes": {"unit": "B", "kind": "counter", "description": "bytes read"}}}

In a pattern, ``*`` matches one level of the key and ``**`` any number of levels (none too);
the first pattern in the document that matches a key gives its metadata. A ``headline`` is a short
column label of the fleet overview, whose value is the largest of the device's matching keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from edgemon_protocol.ids import DEVICE_ID_RE, KEY_RE

UNITS = ("%", "B", "B/s", "s", "ms", "Hz", "MHz", "°C", "W", "count", "count/s", "epoch_s", "bool")
"""The unit vocabulary; a dashboard formats and charts by these (one axis per unit)."""
KINDS = ("gauge", "counter")
"""``gauge``: a level (percent, temperature); ``counter``: only grows (bytes read since boot)."""
MAX_ENTRIES = 512
"""Patterns in one metadata document at most."""
MAX_DESCRIPTION = 200
MAX_HEADLINE = 24
TAG_KEY_RE = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
MAX_TAGS = 32
MAX_TAG_VALUE = 64
"""A device's tags (``[agent] tags = {site = "berlin", line = "3"}``) travel with its metadata."""


@dataclass(frozen=True)
class Metric:
    """What a collector says about one key or key pattern.

    Attributes:
        unit: one of :data:`UNITS`, or ``""`` (undeclared).
        kind: ``gauge`` or ``counter``.
        description: one line for people.
        headline: a short column label (``"CPU"``) to show this metric on the fleet overview.
    """

    unit: str = ""
    kind: str = "gauge"
    description: str = ""
    headline: str = ""

    def __post_init__(self) -> None:
        """Refuse what the protocol does not allow, naming the field."""
        if self.unit and self.unit not in UNITS:
            raise ValueError(f"unit {self.unit!r} is not one of {' '.join(UNITS)}")
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {' '.join(KINDS)}")
        for name, limit in (("description", MAX_DESCRIPTION), ("headline", MAX_HEADLINE)):
            text = getattr(self, name)
            if not isinstance(text, str) or len(text) > limit or "\n" in text:
                raise ValueError(f"{name} must be one line of at most {limit} characters")

    def to_json(self) -> dict[str, str]:
        """The wire form: empty fields left out."""
        return {k: v for k, v in asdict(self).items() if v}


PATTERN_SEGMENT = re.compile(r"\*\*?|" + KEY_RE.pattern)


def check_pattern(pattern: str) -> None:
    """Raise ``ValueError`` unless ``pattern`` is ``-``-joined keys, ``*`` and ``**``, starting with a key."""
    parts = pattern.split("-")
    if len(pattern) > 256 or not all(PATTERN_SEGMENT.fullmatch(p) for p in parts):
        raise ValueError(f"pattern {pattern[:80]!r}: levels must be keys ([A-Za-z0-9_]), '*' or '**', joined by '-'")
    if parts[0].startswith("*"):
        raise ValueError(f"pattern {pattern!r} must start with a key (the collector's name)")


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression of a checked pattern (cached)."""
    check_pattern(pattern)
    level = "[A-Za-z0-9_]+"
    out = ""
    for i, part in enumerate(pattern.split("-")):
        if part == "**":
            out += f"(?:-{level})*"
        else:
            out += ("-" if i else "") + (level if part == "*" else re.escape(part))
    return re.compile(out)


def lookup(entries: Iterable[tuple[str, Metric]], key: str) -> Metric | None:
    """The metadata of ``key``: the first entry whose pattern matches it."""
    for pattern, metric in entries:
        if compile_pattern(pattern).fullmatch(key):
            return metric
    return None


def check_tags(tags: Any) -> dict[str, str]:
    """A device's tags, checked: at most 32, keys ``[a-z][a-z0-9_.-]``, values one line of <= 64 characters.

    Raises:
        ValueError: with the reason.
    """
    if not isinstance(tags, dict) or len(tags) > MAX_TAGS:
        raise ValueError(f"tags must be a table of at most {MAX_TAGS} name = value")
    for key, value in tags.items():
        if not isinstance(key, str) or not TAG_KEY_RE.fullmatch(key):
            raise ValueError(f"tag {key!r}: a name of lower-case letters, digits, _ . - (at most 32)")
        if not isinstance(value, str) or len(value) > MAX_TAG_VALUE or not value.isprintable():
            raise ValueError(f"tag {key}: a value is a string of at most {MAX_TAG_VALUE} printable characters")
    return dict(tags)


def parse_tags(body: bytes) -> dict[str, str]:
    """The tags of a metadata message (none: ``{}``).

    Raises:
        ValueError: with the reason.
    """
    return check_tags(json.loads(body).get("tags", {}))


def encode(device: str, ts: str, entries: Mapping[str, Metric], tags: Mapping[str, str] | None = None) -> bytes:
    """The body of a metadata message (order kept: the first match wins), with the device's tags."""
    doc: dict[str, Any] = {"schema": 1, "device_id": device, "ts": ts}
    if tags:
        doc["tags"] = dict(tags)
    doc["metrics"] = {p: m.to_json() for p, m in entries.items()}
    body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    parse(body)  # the sender holds itself to what the receiver accepts
    parse_tags(body)
    return body


def parse(body: bytes) -> tuple[str, dict[str, Metric]]:
    """Parse and check a metadata message: ``(device_id, {pattern: Metric})`` in document order.

    Raises:
        ValueError: with the reason.
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != 1:
        raise ValueError("not a metadata document of schema 1")
    device = doc.get("device_id")
    if not isinstance(device, str) or not DEVICE_ID_RE.fullmatch(device):
        raise ValueError("device_id is missing or not a valid id")
    metrics = doc.get("metrics")
    if not isinstance(metrics, dict) or len(metrics) > MAX_ENTRIES:
        raise ValueError(f"metrics must be an object of at most {MAX_ENTRIES} patterns")
    out: dict[str, Metric] = {}
    for pattern, fields in metrics.items():
        check_pattern(pattern)
        if not isinstance(fields, dict) or set(fields) - {"unit", "kind", "description", "headline"}:
            raise ValueError(f"{pattern}: fields are unit, kind, description, headline")
        try:
            out[pattern] = Metric(**_strings(fields))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{pattern}: {exc}") from None
    return device, out


def _strings(fields: Mapping[str, Any]) -> dict[str, str]:
    if not all(isinstance(v, str) for v in fields.values()):
        raise ValueError("every field is a string")
    return dict(fields)
