"""``edgemon-agent rules``: the alert rules, their state, and what one live cycle would fire."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from edgemon.agent import Agent
from edgemon.alerts import STATE_FILE
from edgemon_protocol.alerting import Machine, Observation
from edgemon_protocol.flatten import flatten
from edgemon_protocol.meta import compile_pattern


def saved_state(state_dir: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The running agent's alert state (``alerts.json``), read only: (rule, key) -> machine state."""
    path = Path(state_dir) / STATE_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    items = [*(doc.get("thresholds", {}).get("machines") or []), *(doc.get("plugins") or [])]
    return {(str(i.get("rule")), str(i.get("key"))): i for i in items if isinstance(i, dict)}


def list_rules(agent: Agent, as_json: bool, out: TextIO) -> int:
    """Every rule (thresholds and plugin rules) with its alerts as the running agent last saved them."""
    agent.load()
    agent.start()
    state = saved_state(agent.config.agent.state_dir)
    rules: list[dict[str, Any]] = []
    for t in agent.config.thresholds:
        side = "above" if t.above is not None else "below"
        rules.append(
            {
                "rule": t.name,
                "kind": "threshold",
                "when": f"{t.metric} {side} {t.limit:g} for {t.for_s:g} s (clears at {t.clear_at:g})",
                "severity": t.severity + (f" (critical {side} {t.critical:g})" if t.critical is not None else ""),
            }
        )
    for r in agent.rules:
        rules.append({"rule": r.name, "kind": f"plugin {r.plugin}", "when": f"for {r.for_s:g} s", "severity": "-"})
    for rule in rules:
        rule["alerts"] = [
            {"key": key, "state": s.get("state"), "severity": s.get("severity"), "since": s.get("since")}
            for (name, key), s in sorted(state.items())
            if name == rule["rule"] or s.get("owner") == rule["rule"]
        ]
    if as_json:
        print(json.dumps({"rules": rules}, indent=2, ensure_ascii=False), file=out)
        return 0
    for rule in rules:
        print(f"{rule['rule']:<20} {rule['kind']:<16} {rule['severity']:<28} {rule['when']}", file=out)
        for item in rule["alerts"]:
            print(f"{'':<20} {item['state']:<8} {item['severity']:<9} {item['key']}", file=out)
    return 0


def test_rules(agent: Agent, out: TextIO) -> int:
    """Collect one live cycle and judge it as if no rule had a ``for``: what would fire now, and why."""
    agent.load()
    agent.start()
    metrics = agent.collect_metrics()
    numbers = {
        k: float(v) for k, v in flatten(metrics).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    verdicts: list[tuple[str, str, Observation]] = []
    for rule in agent.config.thresholds:
        pattern = compile_pattern(rule.metric)
        for key in sorted(filter(pattern.fullmatch, numbers)):
            verdicts.append((rule.name, key, rule.observe(Machine(rule.name, key), numbers[key])))
    assert agent.rule_runner is not None
    for registered, conditions in agent.rule_runner.evaluate(metrics):
        for cond in conditions:
            if isinstance(cond, dict):
                name = str(cond.get("rule", registered.name))
                key = str(cond.get("key") or cond.get("metric") or name)
                verdicts.append(
                    (name, key, Observation(True, str(cond.get("severity")), None, str(cond.get("message"))))
                )
    for name, key, obs in verdicts:
        print(f"{'FIRES' if obs.active else 'ok':<6} {name:<20} {obs.severity:<9} {key:<40} {obs.summary}", file=out)
    if not verdicts:
        print("no rule matches any metric of this cycle", file=out)
    return 0
