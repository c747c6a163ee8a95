"""Threshold rules: the ones the agent ships, and ``[[alerts.threshold]]`` tables (the agent's TOML, remote documents).

::

    [alerts]
    defaults = true                     # the shipped rules below (a table of the same name replaces one)

    [[alerts.threshold]]
    name = "disk_full"                  # unique; default derived from metric
    metric = "disk-usage-*-percent"     # flattened key as in the API; * matches one level -> one alert per key
    above = 90                          # or: below = 10
    clear_below = 85                    # hysteresis (clear_above with below); default: the threshold
    for = "1m"                          # "0s" fires on the first cycle
    clear_for = "0s"
    severity = "warning"                # info | warning | critical
    critical_above = 97                 # optional escalation (critical_below with below)
    no_data = "keep"                    # keep | resolve | alert (after no_data_after, default 3 intervals)
    summary = "disk {key} at {value:.0f} %"

Every error names the file, the line and the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from edgemon_protocol.alerting import Threshold, parse_duration
from edgemon_protocol.config import ConfigError, Where

DEFAULTS = (
    Threshold(
        "cpu_high", "cpu-percent", above=90, clear=80, for_s=300, summary="CPU busy at {value:.0f} % for 5 minutes"
    ),
    Threshold(
        "memory_high",
        "memory-percent",
        above=90,
        clear=85,
        for_s=300,
        summary="memory {value:.0f} % used for 5 minutes",
    ),
    Threshold(
        "disk_full",
        "disk-usage-*-percent",
        above=90,
        clear=85,
        critical=97,
        for_s=60,
        summary="disk {key} at {value:.0f} %",
    ),
    Threshold("gpu_hot", "gpu-*-temperature", above=85, clear=80, for_s=60, summary="GPU {key} at {value:.0f} °C"),
)
"""Shipped with the agent: CPU and memory above 90 % for 5 min, any disk above 90 % (critical above 97 %),
a GPU above 85 °C for a minute."""

KEYS = {
    "name", "metric", "above", "below", "clear_below", "clear_above", "for", "clear_for", "severity",
    "critical_above", "critical_below", "no_data", "no_data_after", "summary",
}  # fmt: skip


def default_name(metric: str, side: str) -> str:
    """A rule name from a metric pattern: ``disk-usage-*-percent`` above -> ``disk_usage_percent_above``."""
    base = re.sub(r"[^a-z0-9]+", "_", metric.lower()).strip("_") or "metric"
    if not base[0].isalpha():
        base = "m_" + base
    return f"{base[:50]}_{side}"


def thresholds(raw: Any, where: Where) -> tuple[list[Threshold], bool]:
    """The ``[alerts]`` section: the user's threshold rules and whether the shipped ones apply.

    Raises:
        ConfigError: naming the file, line and key.
    """
    if raw is None:
        return [], True
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.at('alerts', None)}[alerts] must be a table")
    for key in raw:
        if key not in ("defaults", "threshold"):
            raise ConfigError(f"{where.at('alerts', key)}unknown key alerts.{key} (known: defaults, threshold)")
    defaults = raw.get("defaults", True)
    if not isinstance(defaults, bool):
        raise ConfigError(f"{where.at('alerts', 'defaults')}alerts.defaults: expected true or false")
    tables = raw.get("threshold", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{where.at('alerts', None)}alerts.threshold: use [[alerts.threshold]] tables")
    out: list[Threshold] = []
    names: set[str] = set()
    for i, table in enumerate(tables):
        rule = _threshold(table, i, where)
        if rule.name in names:
            raise ConfigError(
                f"{where.at_table('alerts.threshold', i, 'name')}alerts.threshold: name {rule.name!r} is used twice"
            )
        names.add(rule.name)
        out.append(rule)
    return out, defaults


def _threshold(table: Mapping[str, Any], index: int, where: Where) -> Threshold:
    def at(key: str | None) -> str:
        return where.at_table("alerts.threshold", index, key if key in table else None)

    for key in table:
        if key not in KEYS:
            raise ConfigError(f"{at(key)}unknown key alerts.threshold.{key} (known: {', '.join(sorted(KEYS))})")
    metric = table.get("metric")
    if not isinstance(metric, str):
        raise ConfigError(f"{at('metric')}alerts.threshold: metric (a flattened key or pattern) is required")
    side = "above" if "above" in table else "below"
    clear_key, critical_key = (
        ("clear_below", "critical_above") if side == "above" else ("clear_above", "critical_below")
    )
    for key in ({"clear_below", "clear_above"} - {clear_key}) | ({"critical_above", "critical_below"} - {critical_key}):
        if key in table:
            raise ConfigError(
                f"{at(key)}alerts.threshold.{key}: does not go with {side} (use {clear_key} and {critical_key})"
            )
    numbers: dict[str, float | None] = {}
    for key in ("above", "below", clear_key, critical_key):
        value = table.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{at(key)}alerts.threshold.{key}: expected a number, got {value!r}")
        numbers[key] = None if value is None else float(value)
    durations: dict[str, float | None] = {}
    for key in ("for", "clear_for", "no_data_after"):
        try:
            durations[key] = parse_duration(table[key]) if key in table else None
        except ValueError as exc:
            raise ConfigError(f"{at(key)}alerts.threshold.{key}: {exc}") from None
    for key in ("name", "severity", "no_data", "summary"):
        if key in table and not isinstance(table[key], str):
            raise ConfigError(f"{at(key)}alerts.threshold.{key}: expected a string")
    try:
        return Threshold(
            name=table.get("name") or default_name(metric, side),
            metric=metric,
            above=numbers["above"],
            below=numbers["below"],
            clear=numbers[clear_key],
            for_s=durations["for"] or 0.0,
            clear_for_s=durations["clear_for"] or 0.0,
            severity=table.get("severity", "warning"),
            critical=numbers[critical_key],
            no_data=table.get("no_data", "keep"),
            no_data_after=durations["no_data_after"],
            summary=table.get("summary", ""),
        )
    except ValueError as exc:
        raise ConfigError(f"{at(None)}alerts.threshold[{index}]: {exc}") from None


def effective(user: list[Threshold], defaults: bool) -> list[Threshold]:
    """The shipped rules (unless turned off), each replaced by a user rule of the same name, then the user's."""
    names = {r.name for r in user}
    shipped = [r for r in DEFAULTS if r.name not in names] if defaults else []
    return shipped + user
