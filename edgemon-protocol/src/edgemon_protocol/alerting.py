"""The alert engine: one state machine per (rule, key), the same on the device and on the server.

Each cycle a rule gives, per key it watches, an :class:`Observation`: is the condition true, at
which severity, with which value, or is there no data. :class:`Machine` turns the sequence of
observations into states and transitions::

    ok --(condition true)--> pending --(true for `for_s`)--> firing --(false for `clear_for_s`)--> ok
         <--(false again)--'                                   (severity may go warning <-> critical)

- **Dwell.** ``for_s`` (0: fire at once) and ``clear_for_s`` (0: resolve at once) are measured on the
  observation times, so a value hovering around the threshold never flaps.
- **Hysteresis** is the rule's business (:class:`Threshold` says "true" above ``above`` while not
  firing, and above ``clear`` while firing); the machine only sees the verdict.
- **No data** is not "resolved": after ``no_data_after`` seconds without an observation the rule's
  policy applies: ``keep`` (nothing changes), ``resolve`` (a firing alert resolves), ``alert``
  (a no-data condition fires at the rule's severity).
- **Times** are the observer's clock (the device's): ``since`` is when the condition first held
  (the start of ``pending``), ``at`` when a transition happened.

State is plain data (:meth:`Machine.to_json`), saved by the caller after each transition, so a
restart keeps pending timers and firing alerts. Standard library only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from edgemon_protocol.flatten import flatten
from edgemon_protocol.ids import DEVICE_ID_RE, RULE_RE, TS_RE
from edgemon_protocol.meta import check_pattern, compile_pattern

SEVERITIES = ("info", "warning", "critical")
NO_DATA = ("keep", "resolve", "alert")
STATES = ("ok", "pending", "firing")
REMATCH_CYCLES = 60
"""Cycles between two full matchings of the rules' patterns against every key (:meth:`Engine.evaluate_tree`)."""
NO_DATA_INTERVALS = 3
"""Default: no data for this many of the agent's intervals counts as "no data"."""


@dataclass(frozen=True)
class Observation:
    """What a rule says about one key in one cycle.

    Attributes:
        active: the condition holds.
        severity: the severity it holds at (a rule may escalate a firing alert).
        value: the value it was judged on, if any.
        summary: one line for people.
        data: ``False`` when the key had no value this cycle.
    """

    active: bool
    severity: str = "warning"
    value: float | None = None
    summary: str = ""
    data: bool = True


@dataclass(frozen=True)
class Transition:
    """A change of an alert's state, as logged, published and stored.

    ``state`` is ``pending``, ``firing`` (also on an escalation or de-escalation, with the new
    severity) or ``resolved``.
    """

    rule: str
    key: str
    state: str
    severity: str
    at: float
    since: float
    value: float | None
    summary: str = ""

    @property
    def fingerprint(self) -> str:
        """Identifies the alert (rule and key) across transitions and restarts."""
        return fingerprint(self.rule, self.key)

    def to_json(self) -> dict[str, Any]:
        """The wire form (times as epoch seconds)."""
        return {"fingerprint": self.fingerprint, **asdict(self)}


def fingerprint(rule: str, key: str) -> str:
    """A short stable id of (rule, key): 64-bit FNV-1a, 16 hex digits.

    Not :mod:`hashlib`: importing it loads OpenSSL, about 4 MB of resident memory on the device for
    ids that need no cryptographic strength.
    """
    return _fnv64(f"{rule}\0{key}")


def _fnv64(text: str) -> str:
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


@dataclass
class Machine:
    """The state of one (rule, key) and the rules of its transitions."""

    rule: str
    key: str
    for_s: float = 0.0
    clear_for_s: float = 0.0
    no_data: str = "keep"
    no_data_after: float = 30.0
    state: str = "ok"
    severity: str = "warning"
    since: float | None = None
    """When the condition first held (start of pending); ``None`` while ok."""
    clear_since: float | None = None
    """When the condition first stopped holding while firing."""
    last_data: float | None = None
    value: float | None = None
    summary: str = ""
    changed: float | None = None
    """When the last transition happened (the firing time, or the last escalation)."""
    _fingerprint: str = field(default="", repr=False, compare=False)

    def step(self, now: float, obs: Observation) -> list[Transition]:
        """Advance with this cycle's observation; return the transitions it caused (usually none)."""
        if not obs.data:
            return self._no_data(now, obs)
        self.last_data = now
        self.value = obs.value
        if obs.summary:
            self.summary = obs.summary
        if obs.active:
            return self._holds(now, obs.severity)
        return self._clear(now)

    def _holds(self, now: float, severity: str) -> list[Transition]:
        self.clear_since = None
        if self.state == "ok":
            self.state, self.since, self.severity = "pending", now, severity
            if self.for_s > 0:
                return [self._transition("pending", now)]
        assert self.since is not None
        if self.state == "pending":
            self.severity = severity
            if now - self.since >= self.for_s:
                self.state = "firing"
                return [self._transition("firing", now)]
            return []
        if severity != self.severity:  # firing: escalation or de-escalation, still one alert
            self.severity = severity
            return [self._transition("firing", now)]
        return []

    def _clear(self, now: float) -> list[Transition]:
        if self.state == "pending":  # never fired: back to ok without a word
            self._reset()
            return []
        if self.state == "firing":
            if self.clear_since is None:
                self.clear_since = now
            if now - self.clear_since >= self.clear_for_s:
                out = [self._transition("resolved", now)]
                self._reset()
                return out
        return []

    def _no_data(self, now: float, obs: Observation) -> list[Transition]:
        if self.last_data is None:
            self.last_data = now  # silence is measured from the first time the machine looked
        if now - self.last_data < self.no_data_after or self.no_data == "keep":
            return []
        self.value = None
        if self.no_data == "resolve":
            out = [self._transition("resolved", now)] if self.state == "firing" else []
            self._reset()
            return out
        self.summary = obs.summary or f"no data for {self.key} since {self.last_data:.0f}"
        return self._holds(now, obs.severity)

    def _reset(self) -> None:
        self.state, self.since, self.clear_since = "ok", None, None

    def _transition(self, state: str, now: float) -> Transition:
        self.changed = now
        since = self.since if self.since is not None else now
        return Transition(self.rule, self.key, state, self.severity, now, since, self.value, self.summary)

    def active(self) -> dict[str, Any] | None:
        """The alert as the payload's active set carries it; ``None`` while ok."""
        if self.state == "ok":
            return None
        if not self._fingerprint:
            self._fingerprint = fingerprint(self.rule, self.key)
        return {
            "fingerprint": self._fingerprint,
            "rule": self.rule,
            "key": self.key,
            "severity": self.severity,
            "state": self.state,
            "since": self.since,
            "changed": self.changed if self.changed is not None else self.since,
            "value": self.value,
            "message": self.summary or f"{self.rule}: {self.key}",
        }

    def to_json(self) -> dict[str, Any]:
        """The state to save (not the rule's settings)."""
        return {
            k: getattr(self, k)
            for k in ("state", "severity", "since", "clear_since", "last_data", "value", "summary", "changed")
        }

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Take back a saved state (unknown or broken fields are ignored: a fresh machine is safe)."""
        if saved.get("state") in STATES and saved.get("severity") in SEVERITIES:
            self.state, self.severity = saved["state"], saved["severity"]
            for name in ("since", "clear_since", "last_data", "value", "changed"):
                value = saved.get(name)
                setattr(self, name, float(value) if isinstance(value, (int, float)) else None)
            self.summary = str(saved.get("summary") or "")[:1024]
            if self.state != "ok" and self.since is None:
                self._reset()


@dataclass(frozen=True)
class Threshold:
    """A threshold rule (``[[alerts.threshold]]``): one alert per key its pattern matches.

    With ``above``, the condition holds when the value is above it, and, once firing, until the
    value is at or below ``clear`` (the hysteresis; default: the threshold). ``critical`` escalates
    a firing alert to critical above it, and back to the rule's severity at or below
    ``critical - (above - clear)``. With ``below`` everything is mirrored.
    """

    name: str
    metric: str
    above: float | None = None
    below: float | None = None
    clear: float | None = None
    for_s: float = 0.0
    clear_for_s: float = 0.0
    severity: str = "warning"
    critical: float | None = None
    no_data: str = "keep"
    no_data_after: float | None = None
    summary: str = ""

    def __post_init__(self) -> None:
        """Refuse what cannot work, naming the field (a :class:`ValueError`)."""
        if not RULE_RE.fullmatch(self.name):
            raise ValueError(f"name {self.name!r}: lower-case letters, digits, _ and . (start with a letter)")
        check_pattern(self.metric)
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above or below")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {', '.join(SEVERITIES)}")
        if self.no_data not in NO_DATA:
            raise ValueError(f"no_data {self.no_data!r} is not one of {', '.join(NO_DATA)}")
        for name in ("for_s", "clear_for_s"):
            if not 0 <= getattr(self, name) <= 7 * 86400:
                raise ValueError(f"{name.replace('_s', '')} must be between 0s and 7d")
        limit = self.limit
        clear = self.clear_at
        if self.above is not None and clear > limit:
            raise ValueError(f"clear_below ({clear:g}) must be at or below above ({limit:g}), or it never clears")
        if self.below is not None and clear < limit:
            raise ValueError(f"clear_above ({clear:g}) must be at or above below ({limit:g}), or it never clears")
        if self.critical is not None:
            beyond = self.critical > limit if self.above is not None else self.critical < limit
            if not beyond:
                side = "above" if self.above is not None else "below"
                raise ValueError(f"critical_{side} ({self.critical:g}) must be beyond {side} ({limit:g})")
        if self.severity == "critical" and self.critical is not None:
            raise ValueError("severity is already critical: a critical_ escalation has nothing to escalate to")
        try:
            self.summary.format(key="k", value=1.0, rule="r", threshold=1.0)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"summary: {exc!r}; it may use {{key}}, {{value}}, {{rule}}, {{threshold}}") from None

    @property
    def limit(self) -> float:
        """The threshold (``above`` or ``below``)."""
        return self.above if self.above is not None else self.below  # type: ignore[return-value]

    @property
    def clear_at(self) -> float:
        """Where a firing alert clears."""
        return self.limit if self.clear is None else self.clear

    def observe(self, machine: Machine, value: float | None) -> Observation:
        """This cycle's verdict on one key, given its machine's state (for the hysteresis)."""
        if value is None:
            return Observation(False, self.severity, None, data=False)
        sign = 1.0 if self.above is not None else -1.0
        firing = machine.state == "firing"
        edge = self.clear_at if firing else self.limit
        active = sign * value > sign * edge
        severity = self.severity
        if self.critical is not None and active:
            width = abs(self.limit - self.clear_at)
            stay = firing and machine.severity == "critical"
            crit_edge = self.critical - sign * width if stay else self.critical
            if sign * value > sign * crit_edge:
                severity = "critical"
        if not active and machine.state == "ok":
            return Observation(False, severity, value)  # the common case: no words needed
        summary = (self.summary or "{rule}: {key} is {value:g} ({threshold_side} {threshold:g})").format(
            key=machine.key,
            value=value,
            rule=self.name,
            threshold=self.limit,
            threshold_side="above" if self.above is not None else "below",
        )
        return Observation(active, severity, value, summary[:1024])


@dataclass
class Engine:
    """Threshold rules over flat metrics: finds each rule's keys, keeps a machine per (rule, key).

    Which keys a rule's pattern matches is worked out again only when the set of keys changes (a
    disk mounted), not every cycle: matching every pattern against every key each second would cost
    more than the rest of the cycle.
    """

    rules: list[Threshold]
    interval: float = 10.0
    machines: dict[str, dict[str, Machine]] = field(default_factory=dict)
    """rule name -> key -> machine."""
    _keys: frozenset[str] = frozenset()
    _split: bool = False
    """The plan looks keys up along their levels (:meth:`evaluate_tree`), not whole (:meth:`evaluate`)."""
    _hot: list[tuple[Threshold, float, float, list[tuple[list[str], Machine]], dict[str, Machine], set[str]]] = field(
        default_factory=list
    )
    """Per rule, what the hot path needs: sign and signed limit, (path, machine) per key, machines, keys."""
    _cycles: int = 0

    def evaluate(self, now: float, flat: Mapping[str, Any]) -> list[Transition]:
        """One cycle over flat metrics (``{"cpu-percent": 3.5, ...}``); returns the transitions."""
        keys = frozenset(flat)
        if keys != self._keys or self._split:  # a new set of keys (rare): match every pattern again
            self._rematch(flat, split=False)
            self._keys = keys
        return self._judge(now, flat)

    def evaluate_tree(self, now: float, tree: Mapping[str, Any]) -> list[Transition]:
        """One cycle over the nested metrics tree, without flattening it every cycle.

        The matched keys are looked up along their paths (a flat key's levels, as keys hold no
        ``-``); the whole tree is flattened and matched again every :data:`REMATCH_CYCLES` cycles, so a
        disk mounted later is found within that many cycles. A matched key that is gone is "no data".
        """
        self._cycles += 1
        if not self._split or self._cycles % REMATCH_CYCLES == 0:
            flat = flatten(tree)
            keys = frozenset(flat)
            if keys != self._keys or not self._split:  # same keys: the matching still holds
                self._rematch(flat, split=True)
                self._keys = keys
        return self._judge(now, tree)

    def _rematch(self, flat: Mapping[str, Any], split: bool) -> None:
        """Match every pattern against the numeric keys; plan the lookups (a key's levels, or the key)."""
        numeric = [k for k, v in flat.items() if _number(v)]
        self._split = split
        self._hot = []
        for r in self.rules:
            matched = sorted(filter(compile_pattern(r.metric).fullmatch, numeric))
            plan = [(k.split("-") if split else [k], self._machine(r, k)) for k in matched]
            sign = 1.0 if r.above is not None else -1.0
            mine = self.machines.setdefault(r.name, {})
            self._hot.append((r, sign, sign * r.limit, plan, mine, set(matched)))

    def _judge(self, now: float, tree: Mapping[str, Any]) -> list[Transition]:
        """Judge every planned key, its value looked up along its path (the per-cycle hot path, kept flat).

        A value still on the quiet side of its threshold while its alert is ok, the common case,
        costs one lookup and one comparison; only the rest goes through the state machine.
        """
        out: list[Transition] = []
        for rule, sign, limit, plan, mine, matched in self._hot:
            for path, machine in plan:
                node: Any = tree
                try:
                    for level in path:
                        node = node[level]  # the agent's tree is plain dicts: no ABC checks here
                except (KeyError, TypeError, IndexError):
                    node = None
                kind = type(node)
                if (kind is float or kind is int) and sign * node <= limit and machine.state == "ok":
                    machine.last_data = now
                    machine.value = node
                    continue
                number = float(node) if _number(node) else None
                out += machine.step(now, rule.observe(machine, number))
            if len(mine) > len(matched):  # keys that went away: no data
                for key, machine in mine.items():
                    if key not in matched:
                        out += machine.step(now, rule.observe(machine, None))
        return out

    def all(self) -> list[Machine]:
        """Every machine."""
        return [m for mine in self.machines.values() for m in mine.values()]

    def to_json(self) -> dict[str, Any]:
        """What a restart needs: the pending and firing machines, each with its rule's signature."""
        signatures = {r.name: signature(r) for r in self.rules}
        return {
            "version": 1,
            "machines": [
                {"rule": m.rule, "key": m.key, "signature": signatures.get(m.rule, ""), **m.to_json()}
                for m in self.all()
                if m.state != "ok"
            ],
        }

    def restore(self, saved: Mapping[str, Any]) -> int:
        """Take back saved machines whose rule still exists unchanged (a changed rule starts fresh); how many."""
        rules = {r.name: r for r in self.rules}
        restored = 0
        items = saved.get("machines") if isinstance(saved, Mapping) else None
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, Mapping):
                continue
            rule = rules.get(str(item.get("rule")))
            key = item.get("key")
            if rule is None or not isinstance(key, str) or item.get("signature") != signature(rule):
                continue
            self._machine(rule, key).restore(item)
            restored += 1
        return restored

    def _machine(self, rule: Threshold, key: str) -> Machine:
        machine = self.machines.setdefault(rule.name, {}).get(key)
        if machine is None:
            machine = self.machines[rule.name][key] = Machine(
                rule.name,
                key,
                rule.for_s,
                rule.clear_for_s,
                rule.no_data,
                rule.no_data_after if rule.no_data_after is not None else NO_DATA_INTERVALS * self.interval,
            )
        return machine

    def active(self) -> list[dict[str, Any]]:
        """The pending and firing alerts, most severe first."""
        items = [a for m in self.all() if (a := m.active()) is not None]
        return sorted(items, key=lambda a: (-SEVERITIES.index(a["severity"]), a["rule"], a["key"]))


def signature(rule: Threshold) -> str:
    """Changes whenever anything about the rule changes."""
    return _fnv64(repr(rule))


def _number(value: Any) -> bool:
    kind = type(value)
    return kind is float or kind is int or (kind is not bool and isinstance(value, (int, float)))


DURATION_RE = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))+")
UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: Any) -> float:
    """``"90s"``, ``"5m"``, ``"1h30m"``, ``"0s"`` (or a number of seconds) -> seconds.

    Raises:
        ValueError: anything else.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool) and text >= 0:
        return float(text)
    if not isinstance(text, str) or not DURATION_RE.fullmatch(text.strip()):
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 1h30m")
    return sum(float(n) * UNITS_S[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text))


TRANSITION_STATES = ("pending", "firing", "resolved")


def encode_transition(device: str, seq: int, t: Transition) -> bytes:
    """The body of a transition message (``devices/<id>/alerts``); ``seq`` counts the device's transitions."""
    from edgemon_protocol.payload import utc_timestamp  # noqa: PLC0415 - payload imports nothing of ours

    doc = {
        "schema": 1,
        "device_id": device,
        "seq": seq,
        "fingerprint": t.fingerprint,
        "rule": t.rule,
        "key": t.key[:256],
        "state": t.state,
        "severity": t.severity,
        "at": utc_timestamp(t.at),
        "since": utc_timestamp(t.since),
        "value": t.value,
        "message": t.summary[:1024],
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def parse_transition(body: bytes) -> dict[str, Any]:
    """Parse and check a transition message; the dict as sent.

    Raises:
        ValueError: with the reason.
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != 1:
        raise ValueError("not a transition of schema 1")
    checks: dict[str, Callable[[Any], bool]] = {
        "device_id": lambda v: isinstance(v, str) and DEVICE_ID_RE.fullmatch(v) is not None,
        "seq": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53,
        "fingerprint": lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{16}", v) is not None,
        "rule": lambda v: isinstance(v, str) and RULE_RE.fullmatch(v) is not None,
        "key": lambda v: isinstance(v, str) and 0 < len(v) <= 256,
        "state": lambda v: v in TRANSITION_STATES,
        "severity": lambda v: v in SEVERITIES,
        "at": lambda v: isinstance(v, str) and TS_RE.fullmatch(v) is not None,
        "since": lambda v: isinstance(v, str) and TS_RE.fullmatch(v) is not None,
        "value": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)),
        "message": lambda v: isinstance(v, str) and len(v) <= 1024,
    }
    if set(doc) - {"schema", *checks}:
        raise ValueError(f"unknown fields: {', '.join(sorted(set(doc) - {'schema', *checks}))}")
    for name, ok in checks.items():
        if name not in doc or not ok(doc[name]):
            raise ValueError(f"{name}: missing or not valid")
    if doc["fingerprint"] != fingerprint(doc["rule"], doc["key"]):
        raise ValueError("fingerprint does not match rule and key")
    return doc
