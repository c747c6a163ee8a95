"""Generate docs/reference.md: every configuration key, topic, metric unit and API endpoint.

    python scripts/gen_reference.py          # writes docs/reference.md

The tables come from the code (the settings dataclasses and their docstrings, the protocol's topics
and units, the OpenAPI document), so they cannot drift: a test fails when the file is out of date, and
the generator fails when a configuration key has no description in its class's docstring.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "docs" / "reference.md"


def attribute_docs(cls: type) -> dict[str, str]:
    """``{name: description}`` from the Google-style ``Attributes:`` sections of ``cls`` and its bases."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = inspect.getdoc(klass) or ""
        if "Attributes:" not in doc:
            continue
        current = None
        for line in doc.split("Attributes:", 1)[1].splitlines():
            match = re.match(r"^    (\w+): (.*)$", line)
            if match:
                current = match[1]
                out[current] = match[2].strip()
            elif current and line.startswith("        "):
                out[current] += " " + line.strip()
            elif line.strip() and not line.startswith(" "):
                break
    return out


def default_of(field: dataclasses.Field[Any], instance: Any) -> str:
    value = getattr(instance, field.name)
    if field.name in ("state_dir",):
        return "`/var/lib/edgemon` (root), else `~/.local/state/edgemon`"
    if field.name == "api_token":
        return "(none)"
    if value == "" or value == []:
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value!r}`".replace("'", '"') if isinstance(value, str) else f"`{value}`"


def settings_table(cls: type, section: str, env_prefix: str, ranges: dict[str, tuple[float, float]]) -> list[str]:
    docs = attribute_docs(cls)
    instance = cls()
    rows = ["| key | variable | default | range | meaning |", "| --- | --- | --- | --- | --- |"]
    for field in dataclasses.fields(cls):
        if field.name not in docs:
            raise SystemExit(f"{cls.__module__}.{cls.__name__}: {section}.{field.name} has no description")
        low_high = f"{ranges[field.name][0]:,.10g} to {ranges[field.name][1]:,.10g}" if field.name in ranges else ""
        meaning = docs[field.name].replace("|", "\\|").replace("``", "`")
        variable = f"`{env_prefix}{field.name.upper()}`"
        rows.append(f"| `{field.name}` | {variable} | {default_of(field, instance)} | {low_high} | {meaning} |")
    return rows


THRESHOLD_KEYS = (
    ("name", "unique rule name; default derived from `metric` (`disk_usage_percent_above`)"),
    ("metric", "flattened key or pattern as in the API: `*` one level, `**` any number"),
    ("above / below", "the threshold (exactly one)"),
    (
        "clear_below / clear_above",
        "where a firing alert clears (hysteresis; with `above` / `below`); default: the threshold",
    ),
    ("for", "how long the condition must hold before firing (`0s`: the first cycle)"),
    ("clear_for", "how long it must be clear before resolving"),
    ("severity", "`info`, `warning` (default) or `critical`"),
    ("critical_above / critical_below", "escalate the same alert to critical beyond this value"),
    ("no_data", "`keep` (default), `resolve` or `alert` when the key has no value for `no_data_after`"),
    ("no_data_after", "default: 3 of the agent's intervals"),
    ("summary", "one line, with `{key}`, `{value}`, `{rule}`, `{threshold}`"),
)


def render() -> str:
    from edgemon import config as agent_config
    from edgemon_protocol import meta, mqtt, topics
    from edgemon_protocol import thresholds as rules
    from edgemon_server import config as server_config
    from edgemon_server.openapi import document

    out = [
        "# edgemon reference",
        "",
        "Generated from the code by `scripts/gen_reference.py`; a test fails when it is out of date.",
        "Settings come from a TOML file, then `EDGEMON_*` variables, then command-line flags; an error names",
        "the file, the line and the key.",
        "",
        "## Agent: `[agent]`",
        "",
        *settings_table(agent_config.AgentSettings, "agent", "EDGEMON_", agent_config.AGENT_RANGES),
        "",
        "## Agent: `[mqtt]`",
        "",
        *settings_table(agent_config.MqttSettings, "mqtt", "EDGEMON_MQTT_", agent_config.MQTT_RANGES),
        "",
        "Removed keys (refused with the reason): "
        + ", ".join(f"`{k}`" for k in sorted(k.split(".", 1)[1] for k in mqtt.REMOVED))
        + ": topics are fixed by the protocol.",
        "",
        "## Agent: `[remote_config]`",
        "",
        *settings_table(agent_config.RemoteSettings, "remote_config", "EDGEMON_REMOTE_CONFIG_", {}),
        "",
        "A remote document may set only `agent.interval`, `agent.timeout`, `agent.tags`, `[plugins.<name>]`",
        "and `[alerts]`; what it sets wins over the file, the variables and the flags, and what it leaves out",
        "keeps the local value.",
        "",
        "## Agent: `[plugins.<name>]`",
        "",
        "A plugin's own keys (its `edgemon_settings_spec`), plus the core's in every section:",
        "",
        "| key | default | meaning |",
        "| --- | --- | --- |",
        "| `enabled` | `true` | `false`: the plugin is not imported |",
        "| `interval` | `0` (the agent's) | seconds between runs of the plugin's collectors |",
        "| `timeout` | `0` (the agent's) | seconds after which a run is abandoned |",
        "",
        "## Agent: `[alerts]` and `[[alerts.threshold]]`",
        "",
        "`[alerts] defaults = true` keeps the shipped rules below; a `[[alerts.threshold]]` table of the same",
        "name replaces one. Each table is one rule, one alert per key its `metric` pattern matches:",
        "",
        "| key | meaning |",
        "| --- | --- |",
        *(f"| `{key}` | {text} |" for key, text in THRESHOLD_KEYS),
        "",
        "Shipped rules:",
        "",
        "| name | metric | fires | clears | for | severity |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| `{r.name}` | `{r.metric}` | above {r.limit:g}"
            + (f" (critical above {r.critical:g})" if r.critical is not None else "")
            + f" | at or below {r.clear_at:g} | {r.for_s:g} s | {r.severity} |"
            for r in rules.DEFAULTS
        ),
        "",
        "## Server: `[server]`",
        "",
        *settings_table(server_config.ServerSettings, "server", "EDGEMON_", {}),
        "",
        "## Server: `[mqtt]`",
        "",
        "The protocol's connection keys, the same as the agent's:",
        "",
        *settings_table(mqtt.MqttSettings, "mqtt", "EDGEMON_MQTT_", mqtt.MQTT_RANGES),
        "",
        "## Server: `[retention]`",
        "",
        *settings_table(server_config.RetentionSettings, "retention", "EDGEMON_RETENTION_", {}),
        "",
        "## MQTT topics",
        "",
        "| topic | direction | what |",
        "| --- | --- | --- |",
        f"| `{topics.monitoring('<id>')}` | device -> server | one payload per cycle (QoS 1) |",
        f"| `{topics.meta('<id>')}` | device -> server | metric metadata, on every connection and when it changes |",
        f"| `{topics.alerts('<id>')}` | device -> server | reserved for alert transitions |",
        f'| `{topics.command("<id>", "<name>")}` | server -> device | commands: `resend {{"from", "to"}}` |',
        "",
        "The server subscribes to "
        + ", ".join(f"`{topics.subscription(k)}`" for k in (topics.MONITORING, topics.META))
        + " (with `server.shared_group`: `$share/<group>/...`).",
        "",
        "## Metric units and kinds",
        "",
        "Units: "
        + ", ".join(f"`{u}`" for u in meta.UNITS)
        + ". Kinds: "
        + ", ".join(f"`{k}`" for k in meta.KINDS)
        + ".",
        f"A metadata document holds at most {meta.MAX_ENTRIES} patterns; descriptions are one line of at most"
        f" {meta.MAX_DESCRIPTION} characters, headline labels at most {meta.MAX_HEADLINE}.",
        "",
        "## HTTP API",
        "",
        "| method | path | what |",
        "| --- | --- | --- |",
    ]
    for path, item in document()["paths"].items():
        out.append(f"| GET | `{path}` | {item['get']['summary']} |")
    out.append("")
    return "\n".join(out)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        return 0 if OUT.exists() and OUT.read_text(encoding="utf-8") == text else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
