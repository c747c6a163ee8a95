"""Validation of one MQTT message into samples, in a single pass.

The rules are the agent's JSON Schema (``edgemon.payload.load_schema()``:
tests check that this code agrees with it) plus the server's limits: size,
depth, number of leaves, finite numbers, a ``ts`` not far in the future, a
``device_id`` equal to the one in the topic, and no duplicate JSON keys (a
silent overwrite otherwise). It is hand-written rather than ``jsonschema``
because it runs for every message and also flattens.

What becomes of a leaf (DESIGN.md, "Flattening"): a number becomes a sample;
``true``/``false`` a sample of 1/0; a string the device's attribute of that
key (its latest value, not a series); ``null`` nothing (the collector had no
value this time). Arrays are refused.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from edgemon_protocol import alerting, meta, remote, topics
from edgemon_protocol.flatten import SEP, CollisionError, flatten
from edgemon_protocol.ids import KEY_RE, RULE_RE, TS_RE
from edgemon_protocol.payload import MAX_INTERVAL, MAX_SEQ, MAX_STRING, SEVERITIES

FIELDS = frozenset({"schema", "device_id", "ts", "seq", "interval", "metrics", "alerts"})
OPTIONAL = frozenset({"metric", "value", "key", "state", "since", "changed", "fingerprint"})
ALERT_FIELDS = frozenset({"rule", "severity", "message"}) | OPTIONAL
FINGERPRINT_RE = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class Limits:
    """The server's limits (``[server]`` settings)."""

    max_bytes: int = 256 * 1024
    max_depth: int = 8
    max_leaves: int = 4096
    max_future_s: float = 300.0


def escape(text: str, limit: int = 1000) -> str:
    """``text`` made storable and printable: unpaired surrogates and NUL escaped, cut to ``limit``.

    Reasons quote what a device sent (a key, a value); SQLite's and PostgreSQL's drivers refuse
    an unpaired surrogate (``UnicodeEncodeError``, not wrapped by SQLAlchemy) and PostgreSQL a NUL.
    """
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"


class RejectedError(ValueError):
    """A message that is not stored as samples; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Accepted:
    """A valid payload, flattened."""

    device_id: str
    seq: int
    ts_ms: int
    interval: float
    samples: dict[str, float] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)


def device_of(topic: str) -> str | None:
    """The device id of an uplink topic (``devices/<id>/monitoring``, ``.../meta``), else ``None``."""
    parsed = topics.parse(topic)
    return parsed.device if parsed is not None else None


def _no_constant(name: str) -> Any:
    raise RejectedError(f"non-finite number {name} (NaN and Infinity are not JSON)")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise RejectedError(f"duplicate key {dup!r} in one object")
    return obj


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_ms(when: dt.datetime) -> int:
    """An aware datetime to epoch milliseconds, exactly (half a millisecond rounds up)."""
    return ((when - EPOCH) // dt.timedelta(microseconds=1) + 500) // 1000


def from_ms(ms: int) -> dt.datetime:
    """Epoch milliseconds to an aware UTC datetime, exactly."""
    return EPOCH + dt.timedelta(milliseconds=ms)


def parse_ts(value: Any) -> int:
    """RFC 3339 UTC (``...Z``) to epoch milliseconds.

    Raises:
        RejectedError: for anything else.
    """
    if not isinstance(value, str) or not TS_RE.fullmatch(value):
        raise RejectedError(f"ts: {str(value)[:40]!r} is not an RFC 3339 UTC time like 2026-01-02T03:04:05.678Z")
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise RejectedError(f"ts: {value!r}: {exc}") from None
    return to_ms(when)


def parse_transition(topic: str, body: bytes, limits: Limits, now: float) -> dict[str, Any]:
    """Validate an alert transition (``devices/<id>/alerts``); adds ``at_ms`` and ``since_ms``.

    Raises:
        RejectedError: with the reason.
    """
    parsed = topics.parse(topic)
    if parsed is None or parsed.kind != topics.ALERTS:
        raise RejectedError(f"topic {topic[:200]!r} is not devices/<id>/alerts")
    if len(body) > limits.max_bytes:
        raise RejectedError(f"transition too large: {len(body)} bytes > {limits.max_bytes}")
    try:
        doc = alerting.parse_transition(body)
    except ValueError as exc:
        raise RejectedError(f"alert transition: {exc}") from None
    if doc["device_id"] != parsed.device:
        raise RejectedError(f"device_id {doc['device_id']!r} does not match the topic's {parsed.device!r}")
    doc["at_ms"], doc["since_ms"] = parse_ts(doc["at"]), parse_ts(doc["since"])
    if doc["at_ms"] > (now + limits.max_future_s) * 1000:
        raise RejectedError(f"at is more than {limits.max_future_s:g} s ahead of the server's clock")
    return doc


def parse_config(topic: str, body: bytes) -> tuple[str, dict[str, Any]]:
    """Validate a device's remote-configuration message (``devices/<id>/config``): ``(device, message)``.

    Raises:
        RejectedError: with the reason.
    """
    parsed = topics.parse(topic)
    if parsed is None or parsed.kind != topics.CONFIG:
        raise RejectedError(f"topic {topic[:200]!r} is not devices/<id>/config")
    try:
        return parsed.device, remote.parse_uplink(body)
    except ValueError as exc:
        raise RejectedError(str(exc)) from None


@dataclass(frozen=True)
class Described:
    """A valid metric metadata document (``devices/<id>/meta``)."""

    device: str
    ts: int
    entries: list[list[Any]]
    """``[[pattern, {unit, kind, description, headline}], ...]`` in the device's order."""
    tags: dict[str, str] = field(default_factory=dict)


def parse_meta(topic: str, body: bytes, limits: Limits, now: float) -> Described:
    """Validate a metric metadata document (:mod:`edgemon_protocol.meta`).

    Raises:
        RejectedError: with the reason.
    """
    parsed = topics.parse(topic)
    if parsed is None or parsed.kind != topics.META:
        raise RejectedError(f"topic {topic[:200]!r} is not devices/<id>/meta")
    if len(body) > limits.max_bytes:
        raise RejectedError(f"metadata too large: {len(body)} bytes > {limits.max_bytes}")
    try:
        device, entries = meta.parse(body)
        tags = meta.parse_tags(body)
        ts = parse_ts(json.loads(body).get("ts"))
    except ValueError as exc:
        raise RejectedError(f"metadata: {exc}") from None
    if device != parsed.device:
        raise RejectedError(f"device_id {device!r} does not match the topic's {parsed.device!r}")
    if ts > (now + limits.max_future_s) * 1000:  # it would pin the device's metadata until then
        raise RejectedError(f"ts is more than {limits.max_future_s:g} s ahead of the server's clock")
    return Described(device, ts, [[pattern, m.to_json()] for pattern, m in entries.items()], tags)


def parse(topic: str, body: bytes, limits: Limits, now: float) -> Accepted:
    """Validate and flatten one message.

    Args:
        topic: the MQTT topic; the device id is taken from it.
        body: the payload bytes.
        limits: the server's limits.
        now: the server's clock (epoch seconds), for the future-``ts`` check.

    Raises:
        RejectedError: with the reason; nothing of the message is stored as samples.
    """
    parsed = topics.parse(topic)
    device = parsed.device if parsed is not None and parsed.kind == topics.MONITORING else None
    if device is None:
        raise RejectedError(f"topic {topic[:200]!r} is not devices/<id>/monitoring")
    if len(body) > limits.max_bytes:
        raise RejectedError(f"payload too large: {len(body)} bytes > {limits.max_bytes}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectedError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        doc = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_object)
    except RejectedError:
        raise
    except json.JSONDecodeError as exc:
        raise RejectedError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise RejectedError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise RejectedError("malformed JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise RejectedError(f"payload is a JSON {type(doc).__name__}, not an object")
    missing = FIELDS - doc.keys()
    if missing:
        raise RejectedError(f"missing field(s): {', '.join(sorted(missing))}")
    extra = doc.keys() - FIELDS
    if extra:
        raise RejectedError(f"unknown field(s): {', '.join(sorted(extra)[:5])}")
    if doc["schema"] != 1 or isinstance(doc["schema"], bool):
        raise RejectedError(f"schema: {doc['schema']!r} is not a known version (1)")
    if doc["device_id"] != device:
        raise RejectedError(f"device_id {str(doc['device_id'])[:130]!r} does not match the topic's device {device!r}")
    ts_ms = parse_ts(doc["ts"])
    if ts_ms > (now + limits.max_future_s) * 1000:
        raise RejectedError(f"ts {doc['ts']} is more than {limits.max_future_s:g} s ahead of the server's clock")
    seq = doc["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise RejectedError(f"seq: {str(seq)[:40]!r} is not an integer from 0 to 2^53-1")
    interval = doc["interval"]
    if not isinstance(interval, int | float) or isinstance(interval, bool) or not 0 < interval <= MAX_INTERVAL:
        raise RejectedError(f"interval: {str(interval)[:40]!r} is not a number of seconds > 0 and <= 86400")
    metrics = doc["metrics"]
    if not isinstance(metrics, dict):
        raise RejectedError("metrics: not an object")
    accepted = Accepted(device, seq, ts_ms, float(interval), alerts=_alerts(doc["alerts"]))
    _Walker(limits, accepted).walk(metrics, "", 1)
    return accepted


def _alerts(alerts: Any) -> list[dict[str, Any]]:
    if not isinstance(alerts, list):
        raise RejectedError("alerts: not an array")
    for i, alert in enumerate(alerts):
        where = f"alerts[{i}]"
        if not isinstance(alert, dict):
            raise RejectedError(f"{where}: not an object")
        if not {"rule", "severity", "message"} <= alert.keys() or not alert.keys() <= ALERT_FIELDS:
            raise RejectedError(
                f"{where}: needs rule, severity, message (and optionally {', '.join(sorted(OPTIONAL))})"
            )
        if not isinstance(alert["rule"], str) or not RULE_RE.fullmatch(alert["rule"]):
            raise RejectedError(f"{where}.rule: not a rule name")
        if not isinstance(alert["severity"], str) or alert["severity"] not in SEVERITIES:
            raise RejectedError(f"{where}.severity: not one of {', '.join(sorted(SEVERITIES))}")
        if not isinstance(alert["message"], str) or len(alert["message"]) > 1024:
            raise RejectedError(f"{where}.message: not a string of at most 1024 characters")
        if "metric" in alert and (not isinstance(alert["metric"], str) or len(alert["metric"]) > 256):
            raise RejectedError(f"{where}.metric: not a string of at most 256 characters")
        value = alert.get("value")
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise RejectedError(f"{where}.value: not a number or null")
        if "key" in alert and (not isinstance(alert["key"], str) or len(alert["key"]) > 256):
            raise RejectedError(f"{where}.key: not a string of at most 256 characters")
        if "state" in alert and alert["state"] not in ("pending", "firing"):
            raise RejectedError(f"{where}.state: not pending or firing")
        for name in ("since", "changed"):
            if name in alert:
                alert[f"{name}_ms"] = parse_ts(alert[name])
        if "fingerprint" in alert and (
            not isinstance(alert["fingerprint"], str) or not FINGERPRINT_RE.fullmatch(alert["fingerprint"])
        ):
            raise RejectedError(f"{where}.fingerprint: not 16 hex digits")
    return alerts


_GOOD_KEYS: set[str] = set()
"""Keys already checked against KEY_RE (a fleet repeats the same few hundred)."""


class _Walker:
    """One pass over ``metrics``: checks keys, depth, leaf count and types; fills samples and attributes."""

    def __init__(self, limits: Limits, out: Accepted) -> None:
        self.limits = limits
        self.out = out
        self.leaves = 0
        self.bad_key: str | None = None

    def walk(self, node: dict[str, Any], prefix: str, depth: int) -> None:
        if depth > self.limits.max_depth:
            raise RejectedError(f"metrics nested deeper than {self.limits.max_depth} levels at {prefix[:-1]!r}")
        samples = self.out.samples
        for key, value in node.items():
            if key not in _GOOD_KEYS:
                if KEY_RE.fullmatch(key):
                    if len(_GOOD_KEYS) < 100_000:
                        _GOOD_KEYS.add(key)
                elif self.bad_key is None:
                    self.bad_key = key
            flat = prefix + key
            kind = type(value)
            if kind is dict:
                self.walk(value, flat + SEP, depth + 1)
                continue
            self.leaves += 1
            if kind is float:
                if not math.isfinite(value):
                    raise RejectedError(f"{flat}: non-finite number")
                samples[flat] = value
            elif kind is int:
                try:
                    samples[flat] = float(value)
                except OverflowError:
                    raise RejectedError(f"{flat}: integer too large for a float") from None
            elif kind is bool:
                samples[flat] = 1.0 if value else 0.0
            elif kind is str:
                if len(value) > MAX_STRING:
                    raise RejectedError(f"{flat}: string longer than {MAX_STRING} characters")
                self.out.attributes[flat] = value
            elif kind is list:
                raise RejectedError(f"{flat}: arrays are not allowed (use an object keyed by name or index)")
            elif value is not None:  # pragma: no cover - json.loads makes nothing else
                raise RejectedError(f"{flat}: unsupported value")
        if self.leaves > self.limits.max_leaves:
            raise RejectedError(f"more than {self.limits.max_leaves} leaves")
        if depth == 1 and self.bad_key is not None:
            # Only a key outside [A-Za-z0-9_] (a '-') can make two paths meet: name the collision if there is one.
            try:
                flatten(node)
            except CollisionError as exc:
                raise RejectedError(f"key collision: {exc} (keys may not contain '-')") from None
            raise RejectedError(f"metrics key {self.bad_key[:80]!r}: keys are 1-64 of A-Z a-z 0-9 _")
