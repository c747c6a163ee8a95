"""Alerts at the edge: threshold rules and plugin rules through one engine, state kept across restarts.

Each cycle the agent hands :meth:`Alerts.evaluate` the merged metrics and what each plugin rule
returned. Threshold rules (:mod:`edgemon_protocol.thresholds`) are judged on the flattened metrics; a plugin rule's
answer is the set of conditions active this cycle (``{"key", "severity", "message", "value"}``
each), and each condition gets the same state machine (:mod:`edgemon_protocol.alerting`), so plugin
rules have ``for``/``clear_for`` dwell and persistence for free. A rule that raised or timed out
says nothing: its alerts keep their state ("no data" is not "resolved").

What comes out: the **active set** (pending and firing alerts) that every payload carries, and the
**transitions**, which are logged and handed to the sink (``devices/<id>/alerts``). The state is
written to ``<state_dir>/alerts.json`` (temporary file, fsync, rename) after every transition, so a
restart keeps pending timers and firing alerts, and a changed rule starts fresh.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgemon.registry import Rule
from edgemon_protocol.alerting import Engine, Machine, Observation, Threshold, Transition
from edgemon_protocol.payload import utc_timestamp

log = logging.getLogger(__name__)

STATE_FILE = "alerts.json"
SAVE_PENDING_EVERY = 30.0
"""Seconds between saves while only pending timers changed (a restart may lose up to this much of a ``for``)."""


class Alerts:
    """The alert state of one agent."""

    def __init__(
        self, thresholds: Sequence[Threshold], interval: float, state_dir: str | Path | None, device: str = ""
    ) -> None:
        """Load the saved state of unchanged rules from ``state_dir`` (``None``: keep nothing on disk)."""
        self.engine = Engine(list(thresholds), interval)
        self.plugin_machines: dict[str, dict[tuple[str, str], Machine]] = {}
        """registered rule -> (alert rule name, key) -> machine."""
        self.path = Path(state_dir) / STATE_FILE if state_dir is not None else None
        self.device = device
        self.on_transition: Callable[[Transition], None] = lambda _t: None
        """Called for each transition (the MQTT sink publishes it)."""
        self.transitions = 0
        self.save_errors = 0
        self._dirty = False
        self._saved_at = float("-inf")
        self._stamps: dict[float, str] = {}
        self._load()

    # -- evaluation ----------------------------------------------------------------

    def evaluate(
        self, now: float, metrics: Mapping[str, Any], plugin_results: Sequence[tuple[Rule, list[dict[str, Any]]]]
    ) -> list[Transition]:
        """One cycle: thresholds on ``metrics``, plugin conditions from ``plugin_results``; return the transitions."""
        out: list[Transition] = []
        if self.engine.rules:
            out += self.engine.evaluate_tree(now, metrics)
        for rule, conditions in plugin_results:
            out += self._plugin(now, rule, conditions)
        if out:
            self.transitions += len(out)
            for transition in out:
                self._log(transition)
                if transition.state == "pending":
                    continue  # the payloads' active set says it; only firing and resolved are events
                try:
                    self.on_transition(transition)
                except Exception as exc:  # noqa: BLE001 - the payload's active set still says it
                    log.error("alert transition not handed off", extra={"rule": transition.rule, "reason": repr(exc)})
            # A firing or resolved alert is saved at once; a value flickering over a threshold only
            # starts pending timers, saved at most every SAVE_PENDING_EVERY seconds (and at exit).
            if any(t.state != "pending" for t in out) or now - self._saved_at >= SAVE_PENDING_EVERY:
                self.save(now)
            else:
                self._dirty = True
        elif self._dirty and now - self._saved_at >= SAVE_PENDING_EVERY:
            self.save(now)
        return out

    def _plugin(self, now: float, rule: Rule, conditions: list[dict[str, Any]]) -> list[Transition]:
        mine = self.plugin_machines.setdefault(rule.name, {})
        out: list[Transition] = []
        seen: set[tuple[str, str]] = set()
        for cond in conditions:
            name = str(cond.get("rule", rule.name))
            key = str(cond.get("key") or cond.get("metric") or name)
            seen.add((name, key))
            machine = mine.get((name, key))
            if machine is None:
                machine = mine[(name, key)] = Machine(name, key, rule.for_s, rule.clear_for_s)
            value = cond.get("value")
            number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            out += machine.step(now, Observation(True, cond["severity"], number, cond["message"]))
        for ident, machine in mine.items():
            if ident not in seen:  # not among this cycle's conditions: the condition no longer holds
                out += machine.step(now, Observation(False))
        return out

    def _log(self, t: Transition) -> None:
        fields = {"rule": t.rule, "path": t.key, "reason": f"{t.severity}: {t.summary}"[:500]}
        if t.state == "firing":
            log.warning("alert firing", extra=fields)
        elif t.state == "resolved":
            log.info("alert resolved", extra=fields)
        else:
            log.info("alert pending", extra=fields)

    # -- what the payload carries ------------------------------------------------------

    def active(self) -> list[dict[str, Any]]:
        """The pending and firing alerts, as the payload's ``alerts`` (most severe first)."""
        items = [a for m in self.machines() if (a := m.active()) is not None]
        order = {"critical": 0, "warning": 1, "info": 2}
        out = []
        for item in sorted(items, key=lambda a: (order[a["severity"]], a["rule"], a["key"])):
            alert = {
                "rule": item["rule"],
                "severity": item["severity"],
                "message": str(item["message"])[:1024],
                "key": item["key"][:256],
                "state": item["state"],
                "since": self._stamp(item["since"]),
                "changed": self._stamp(item["changed"]),
                "fingerprint": item["fingerprint"],
            }
            if isinstance(item.get("value"), (int, float)):
                alert["value"] = item["value"]
            out.append(alert)
        return out

    def _stamp(self, epoch: float) -> str:
        """RFC 3339 of a time, cached: an alert's since and changed are the same for many cycles."""
        text = self._stamps.get(epoch)
        if text is None:
            if len(self._stamps) > 1000:
                self._stamps.clear()
            text = self._stamps[epoch] = utc_timestamp(epoch)
        return text

    def machines(self) -> list[Machine]:
        """Every machine, threshold and plugin ones (``edgemon-agent rules``)."""
        return self.engine.all() + [m for mine in self.plugin_machines.values() for m in mine.values()]

    # -- persistence ---------------------------------------------------------------------

    def save(self, now: float | None = None) -> None:
        """Write the state atomically; a failure is counted and logged, never raised."""
        if self.path is None:
            return
        self._dirty = False
        self._saved_at = now if now is not None else self._saved_at
        doc = {
            "thresholds": self.engine.to_json(),
            "plugins": [
                {"owner": owner, "rule": m.rule, "key": m.key, **m.to_json()}
                for owner, mine in self.plugin_machines.items()
                for m in mine.values()
                if m.state != "ok"
            ],
        }
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(doc, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            self.save_errors += 1
            log.error(
                "alert state not saved; a restart would forget it", extra={"path": str(self.path), "reason": repr(exc)}
            )

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("alert state unreadable; starting fresh", extra={"path": str(self.path), "reason": repr(exc)})
            return
        if not isinstance(doc, dict):
            return
        restored = self.engine.restore(doc.get("thresholds") or {})
        for item in doc.get("plugins") or []:
            if isinstance(item, dict) and all(isinstance(item.get(k), str) for k in ("owner", "rule", "key")):
                machine = Machine(item["rule"], item["key"])
                machine.restore(item)
                if machine.state != "ok":  # its dwell settings come back when the rule next answers
                    self.plugin_machines.setdefault(item["owner"], {})[(machine.rule, machine.key)] = machine
                    restored += 1
        if restored:
            log.info("alert state restored", extra={"path": str(self.path), "reason": f"{restored} alerts"})

    def close(self) -> None:
        """Save what is not saved yet (pending timers)."""
        if self._dirty:
            self.save()

    def stats(self) -> dict[str, Any]:
        """Self-metrics under ``agent.alerts``."""
        machines = self.machines()
        return {
            "firing": sum(m.state == "firing" for m in machines),
            "pending": sum(m.state == "pending" for m in machines),
            "transitions": self.transitions,
            "save_errors": self.save_errors,
        }
