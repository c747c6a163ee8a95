"""The payload rules, applied to what each plugin hands back, before it is merged.

The server refuses a whole payload that breaks one rule, so one plugin's bad
key would cost the device every other plugin's data. Here each collector's
sub-tree and each rule's alerts are checked as they arrive: what breaks a rule
is left out (and reported as a :class:`Drop`), the rest goes on. Whatever a
plugin returns, the payload that results is one the server accepts and that
serialises to JSON.

The rules (the same as the payload JSON Schema and the server's limits):

* keys: strings of 1-64 ``A-Z a-z 0-9 _`` (``-`` is the server's flattening separator);
* leaves: finite numbers (integers that fit a double), booleans, ``None``, or strings of at
  most 256 characters without NUL or unpaired surrogates (they could not be stored);
* objects nested at most :data:`MAX_DEPTH` levels below ``metrics``; no arrays;
* at most :data:`MAX_LEAVES` leaves in a payload;
* alerts: ``rule`` (defaults to the registered rule's name), ``severity`` one of
  ``info``, ``warning``, ``critical``, ``message`` (cut to 1,024 characters), optional
  ``metric`` (a string) and ``value`` (a finite number or ``None``).

Numbers of other types that know they are numbers (``numpy.float32``,
``decimal.Decimal``) are converted to ``int``/``float``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgemon_protocol.ids import KEY_RE, RULE_RE

SEVERITIES = ("info", "warning", "critical")
ALERT_FIELDS = frozenset({"rule", "severity", "message", "metric", "value", "key"})
MAX_STRING = 256
MAX_MESSAGE = 1024
MAX_DEPTH = 8
"""Levels of objects in ``metrics`` (``metrics`` itself is level 1), as the server allows."""
MAX_LEAVES = 4096
"""Leaves in one payload, as the server allows."""
MAX_ALERTS = 256
"""Alerts in one payload (a rule returning thousands is a bug, not news)."""


@dataclass(frozen=True)
class Drop:
    """Something a plugin returned that was left out, and why."""

    path: str
    reason: str


class Budget:
    """The leaves still allowed in this payload (shared by all collectors of a cycle)."""

    def __init__(self, leaves: int = MAX_LEAVES) -> None:
        self.left = leaves

    def take(self) -> bool:
        """Use one leaf; ``False`` when none is left."""
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def _string_problem(value: str, limit: int) -> str | None:
    if len(value) > limit:
        return f"string longer than {limit} characters"
    if "\x00" in value:
        return "string holds a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "string is not valid Unicode (unpaired surrogate)"
    return None


def _key_problem(key: Any) -> str | None:
    if not isinstance(key, str):
        return f"key is a {type(key).__name__}, not a string"
    if KEY_RE.fullmatch(key):
        return None
    if "-" in key:
        return "key holds '-', the server's separator (use registry.safe_key)"
    return "key must be 1-64 of A-Z a-z 0-9 _"


def _path(prefix: str, key: Any) -> str:
    name = key if isinstance(key, str) else repr(key)
    return f"{prefix}{name[:80]!s}"


def leaf(value: Any) -> tuple[Any, str | None]:
    """Check one leaf: ``(value to keep, None)`` or ``(None, reason it is dropped)``."""
    kind = type(value)
    if kind is float:
        return (value, None) if math.isfinite(value) else (None, "non-finite number (NaN or infinity)")
    if kind is bool or value is None:
        return value, None
    if kind is int:
        try:
            float(value)
        except OverflowError:
            return None, "integer too large for a double"
        return value, None
    if kind is str:
        if value in _GOOD_STRINGS:
            return value, None
        problem = _string_problem(value, MAX_STRING)
        if problem:
            return None, problem
        if len(_GOOD_STRINGS) < 10_000:
            _GOOD_STRINGS.add(value)
        return value, None
    if isinstance(value, (list, tuple, set, frozenset)):
        return None, "arrays are not allowed (key the items by name or index)"
    if isinstance(value, numbers.Integral):
        return leaf(int(value))
    if isinstance(value, numbers.Real):
        return leaf(float(value))
    if isinstance(value, str):
        return leaf(str(value))
    return None, f"unsupported value type {kind.__name__}"


_GOOD_STRINGS: set[str] = set()
"""String values already found valid (mount points, names, versions repeat every cycle)."""

_GOOD_KEYS: set[str] = set()
"""Keys already found valid: a device repeats the same few hundred every cycle (checked once each)."""


def clean_tree(
    tree: Mapping[Any, Any], budget: Budget, prefix: str = "", depth: int = 1
) -> tuple[dict[str, Any], list[Drop]]:
    """Return a copy of ``tree`` with what breaks the payload rules left out, and what was left out.

    Args:
        tree: a collector's sub-tree (its keys are top-level ``metrics`` keys at ``depth`` 1).
        budget: leaves still allowed in the payload.
        prefix: the dotted path of ``tree`` (for the drop reports).
        depth: the level of ``tree`` below ``metrics``.
    """
    out: dict[str, Any] = {}
    drops: list[Drop] = []
    try:
        items = list(tree.items())
    except Exception as exc:  # noqa: BLE001 - a broken Mapping subclass from a plugin
        return out, [Drop(prefix.rstrip(".") or "<root>", f"cannot read items: {type(exc).__name__}")]
    for key, value in items:
        if key not in _GOOD_KEYS:
            problem = _key_problem(key)
            if problem:
                drops.append(Drop(_path(prefix, key), problem))
                continue
            if len(_GOOD_KEYS) < 100_000:
                _GOOD_KEYS.add(key)
        kind = type(value)
        if kind is dict or (kind not in _LEAF_TYPES and isinstance(value, Mapping)):
            if depth >= MAX_DEPTH:
                drops.append(Drop(prefix + key, f"objects nested deeper than {MAX_DEPTH} levels"))
                continue
            sub, sub_drops = clean_tree(value, budget, f"{prefix}{key}.", depth + 1)
            drops.extend(sub_drops)
            out[key] = sub
            continue
        if kind is int or kind is bool or value is None or (kind is float and math.isfinite(value)):
            kept, problem = value, None
            if kind is int and not -_MAX_INT < value < _MAX_INT:
                kept, problem = leaf(value)
        else:
            kept, problem = leaf(value)
        if problem is None:
            if budget.left <= 0:
                problem = f"over {MAX_LEAVES} leaves in the payload"
            else:
                budget.left -= 1
        if problem:
            drops.append(Drop(prefix + key, problem))
            continue
        out[key] = kept
    return out, drops


_LEAF_TYPES = frozenset({int, float, bool, str, type(None)})
_MAX_INT = 2**1023
"""Integers below this in magnitude always fit a double (larger ones may overflow ``float()``)."""


def clean_alert(alert: Any, rule: str) -> tuple[dict[str, Any] | None, list[Drop]]:
    """Check one alert from rule ``rule``; ``(None, drops)`` when it cannot be kept at all."""
    if not isinstance(alert, Mapping):
        return None, [Drop("alert", f"an alert must be a dict, got {type(alert).__name__}")]
    drops = [Drop(f"alert.{_path('', k)}", "unknown alert field") for k in alert if k not in ALERT_FIELDS]
    name = alert.get("rule", rule)
    if not isinstance(name, str) or not RULE_RE.fullmatch(name):
        return None, [*drops, Drop("alert.rule", f"{str(name)[:40]!r} is not a rule name ({RULE_RE.pattern})")]
    severity = alert.get("severity")
    if not isinstance(severity, str) or severity not in SEVERITIES:
        return None, [*drops, Drop("alert.severity", f"{str(severity)[:40]!r} is not one of {', '.join(SEVERITIES)}")]
    message = alert.get("message")
    if not isinstance(message, str):
        return None, [*drops, Drop("alert.message", "missing, or not a string")]
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
        drops.append(Drop("alert.message", f"cut to {MAX_MESSAGE} characters"))
    problem = _string_problem(message, MAX_MESSAGE)
    if problem:
        return None, [*drops, Drop("alert.message", problem)]
    out: dict[str, Any] = {"rule": name, "severity": severity, "message": message}
    for field in ("metric", "key"):
        if field in alert:
            text = alert[field]
            problem = _string_problem(text, MAX_STRING) if isinstance(text, str) else "not a string"
            if problem:
                drops.append(Drop(f"alert.{field}", problem))
            else:
                out[field] = text
    if "value" in alert:
        value, problem = (None, "not a number") if isinstance(alert["value"], (str, bool)) else leaf(alert["value"])
        if problem is None and value is not None and not isinstance(value, (int, float)):
            problem = "not a number"
        if problem:
            drops.append(Drop("alert.value", problem))
        else:
            out["value"] = value
    return out, drops


def cut(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters and made storable (a reason shown in the payload)."""
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"
