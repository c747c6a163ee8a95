"""``edgemon-agent new-plugin NAME``: a plugin distribution that passes its own test right away.

It writes ``edgemon-<name>/``: ``pyproject.toml`` (the ``edgemon`` entry point, edgemon-core pinned
to this release line), ``src/edgemon_<name>/__init__.py`` (settings, a collector with units, a rule
with a dwell time), ``README.md`` and ``tests/`` using the fixtures of :mod:`edgemon.testing`.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgemon import __version__

NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
"""A plugin name: lowercase words joined by ``-`` (it is a config section and a key prefix)."""

PYPROJECT = """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "edgemon-{name}"
version = "0.1.0"
description = "edgemon plugin: {name}"
readme = "README.md"
requires-python = ">=3.9"
# Pinned to edgemon-core's release line: a plugin is built against one hook contract.
dependencies = ["edgemon-core~={line}"]

[project.optional-dependencies]
test = ["pytest>=8", "jsonschema>=4.18"]

[project.entry-points.edgemon]
{name} = "{module}"

[tool.setuptools.packages.find]
where = ["src"]
"""

PLUGIN = '''"""edgemon-{name}: one collector and one alert rule (edit them to measure what you need)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from edgemon import Metric, RegisterCollector, RegisterRule, SettingsSpec, hookimpl


@hookimpl
def edgemon_settings_spec() -> SettingsSpec:
    """``[plugins.{name}]``: ``warn_above`` (the load per CPU that raises the alert)."""
    return SettingsSpec({{"warn_above": 2.0}})


def _collect() -> dict[str, Any]:
    """The plugin's sub-tree: everything under one top-level key, the plugin's own."""
    load1, _load5, _load15 = os.getloadavg()
    return {{"{key}": {{"load_per_cpu": round(load1 / (os.cpu_count() or 1), 3)}}}}


@hookimpl
def edgemon_register_collectors(register: RegisterCollector, settings: Mapping[str, Any]) -> None:
    """Register the collector, with what its values mean (unit, kind, a column on the overview)."""
    register(
        "{key}",
        _collect,
        metrics={{
            "{key}-load_per_cpu": Metric("count", "gauge", "1-minute load average per CPU", headline="Load/CPU"),
        }},
    )


@hookimpl
def edgemon_register_alert_rules(register: RegisterRule, settings: Mapping[str, Any]) -> None:
    """Alert when the load per CPU stays above ``warn_above`` for a minute."""
    limit = float(settings["warn_above"])

    def busy(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
        value = metrics.get("{key}", {{}}).get("load_per_cpu")
        if value is None or value <= limit:
            return []
        return [
            {{
                "rule": "{key}.busy",
                "severity": "warning",
                "message": f"load per CPU {{value}} > {{limit}}",
                "metric": "{key}-load_per_cpu",
                "value": value,
            }}
        ]

    register("{key}_busy", busy, for_s=60.0)
'''

README = """# edgemon-{name}

An [edgemon](https://github.com/edgemon) agent plugin. It reports `{key}.load_per_cpu` and alerts
(`{key}.busy`, warning) when it stays above `warn_above` for a minute.

    pip install -e '.[test]'     # next to edgemon-core (from the agent bundle or a checkout)
    pytest                       # the fixtures come with edgemon-core (edgemon.testing)
    edgemon-agent plugins test {name}

Settings, in the agent's TOML file:

    [plugins.{name}]
    warn_above = 2.0
"""

CONFTEST = '''"""Let the tests import the plugin from src/ before it is installed."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
'''

TEST = '''"""The plugin in a real agent, through edgemon-core's pytest fixtures (edgemon.testing)."""

from __future__ import annotations

import {module}


def test_the_collector_reports_a_number_with_its_unit(edgemon_plugin):
    plugin = edgemon_plugin({module}, "{name}")
    tree = plugin.collect()
    assert tree["{key}"]["load_per_cpu"] >= 0
    assert plugin.metadata()["{key}-load_per_cpu"].unit == "count"
    assert "{key}" in plugin.payload()["metrics"], "a whole payload, valid against the protocol schema"


def test_the_rule_fires_only_after_its_minute(edgemon_plugin, edgemon_clock):
    plugin = edgemon_plugin({module}, "{name}", {{"warn_above": 0.5}})
    busy = {{"{key}": {{"load_per_cpu": 3.0}}}}
    states = [(a["rule"], a["state"]) for a in plugin.alerts(busy)]
    assert states == [("{key}.busy", "pending")], "pending for 60 s"
    edgemon_clock.advance(61)
    assert [(a["rule"], a["state"]) for a in plugin.alerts(busy)] == [("{key}.busy", "firing")]
    assert plugin.alerts({{"{key}": {{"load_per_cpu": 0.1}}}}) == [], "and it clears"
'''


class ScaffoldError(ValueError):
    """A bad plugin name, or a directory that exists."""


def new_plugin(name: str, parent: Path) -> Path:
    """Write the distribution ``parent/edgemon-<name>``; returns its path."""
    if not NAME_RE.fullmatch(name) or len(name) > 40:
        raise ScaffoldError(f"{name!r}: a plugin name is lowercase words joined by '-' (e.g. 'room-sensors')")
    root = parent / f"edgemon-{name}"
    if root.exists():
        raise ScaffoldError(f"{root} exists; not overwriting")
    key = name.replace("-", "_")
    module = f"edgemon_{key}"
    major, minor = __version__.split(".")[:2]
    fields = {"name": name, "key": key, "module": module, "line": f"{major}.{minor}.0"}
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"src/{module}/__init__.py": PLUGIN,
        "tests/conftest.py": CONFTEST,
        f"tests/test_{key}.py": TEST,
    }
    for rel, template in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**fields), encoding="utf-8")
    return root
