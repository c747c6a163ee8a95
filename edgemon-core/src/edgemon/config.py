"""Agent configuration: a TOML file, then ``EDGEMON_*`` variables, then CLI flags.

The file is read once into frozen dataclasses. Unknown sections and keys are
errors, and every error names the file, the line and the key, so that an
operator can fix a fleet's configuration from the log line alone.

Example ``/etc/edgemon/agent.toml``::

    [agent]
    client_id = "press-17"
    interval = 10          # seconds between payloads
    timeout = 2            # default per-collector timeout, seconds

    [plugins.disk]
    interval = 60          # usage changes slowly
    exclude_mounts = ["/snap/*"]
"""

from __future__ import annotations

import functools
import math
import os
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Debian 11 / Ubuntu 22.04 / JetPack 6: the same parser, from PyPI
    import tomli as tomllib

DEFAULT_CONFIG = Path("/etc/edgemon/agent.toml")
CORE_PLUGIN_KEYS = {"enabled": True, "interval": 0.0, "timeout": 0.0}
"""Keys the core understands in every ``[plugins.<name>]`` section (0 = the agent's value)."""


class ConfigError(ValueError):
    """A configuration problem, with the file and line where it is known."""


def _default_state_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/edgemon"
    return str(Path.home() / ".local" / "state" / "edgemon")


@dataclass(frozen=True)
class AgentSettings:
    """The ``[agent]`` section.

    Attributes:
        client_id: the device id; default: the host name.
        interval: seconds between payloads.
        timeout: default per-collector timeout in seconds; must be below ``interval``;
            0 (the default) means min(2 s, interval / 2).
        state_dir: where ``seq`` (and the send buffer) live.
        output: ``mqtt``, ``stdout`` (JSON lines), or ``auto``: ``mqtt`` when
            ``mqtt.endpoint`` is set, else ``stdout``.
        buffer_max_mb: bound of the store-and-forward buffer; past it the oldest are dropped (and counted).
        memory_max: payloads held in memory while the state directory cannot be written
            (full or read-only disk); past it the oldest are dropped (and counted).
        startup_timeout: seconds a plugin's import or lifecycle hook (startup, register, device id,
            shutdown) may take before the plugin is reported failed.
        log_format: ``text`` or ``json`` (one JSON object per line).
        log_level: ``debug``, ``info``, ``warning`` or ``error``.
    """

    client_id: str = ""
    interval: float = 10.0
    timeout: float = 0.0
    state_dir: str = field(default_factory=_default_state_dir)
    output: str = "auto"
    buffer_max_mb: float = 100.0
    memory_max: int = 1000
    startup_timeout: float = 10.0
    log_format: str = "text"
    log_level: str = "info"


@dataclass(frozen=True)
class MqttSettings:
    """The ``[mqtt]`` section (variables ``EDGEMON_MQTT_<KEY>``).

    Attributes:
        endpoint: broker host name (AWS IoT: ``xxxx-ats.iot.<region>.amazonaws.com``).
        port: 8883 (MQTT over TLS).
        ca: CA bundle that signed the broker's certificate (PEM path).
        cert: this device's certificate (PEM path).
        key: its private key (PEM path; never logged; warned about when group/other can read it).
        insecure_local: plain TCP, allowed only to a loopback broker (development).
        protocol: ``5`` (the default), or ``3.1.1`` for the embedded demo broker (with ``insecure_local``).
        topic: where payloads go; ``{client_id}`` is replaced.
        alerts_topic: where alerts will go (alerts issue).
        commands_topic: prefix of the topics the agent takes commands from (``<prefix>/resend``).
        resend_keep: acknowledged payloads kept on disk so the server can ask for them again (0: none).
        keep_alive: seconds between PINGREQs when idle.
        min_reconnect_delay: first reconnect back-off, seconds (full jitter).
        max_reconnect_delay: back-off cap, seconds.
        connect_timeout: seconds to wait for a CONNACK.
        drain_rate: backlog payloads sent per second after a reconnect (live ones go at once).
        max_inflight: publishes awaiting PUBACK at once.
    """

    endpoint: str = ""
    port: int = 8883
    ca: str = ""
    cert: str = ""
    key: str = ""
    insecure_local: bool = False
    protocol: str = "5"
    topic: str = "devices/{client_id}/monitoring"
    alerts_topic: str = "devices/{client_id}/alerts"
    commands_topic: str = "devices/{client_id}/commands"
    resend_keep: int = 3600
    keep_alive: int = 60
    min_reconnect_delay: float = 1.0
    max_reconnect_delay: float = 60.0
    connect_timeout: float = 10.0
    drain_rate: float = 200.0
    max_inflight: int = 32


@dataclass(frozen=True)
class Config:
    """The whole effective configuration."""

    agent: AgentSettings = field(default_factory=AgentSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    plugins: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str | None = None
    text: str = field(default="", repr=False, compare=False)

    @property
    def device_id(self) -> str:
        """The configured client id, else the host name made into a valid id."""
        return self.agent.client_id or re.sub(r"[^A-Za-z0-9_.:-]", "_", socket.gethostname())[:128]


SECTIONS: dict[str, type[Any]] = {"agent": AgentSettings, "mqtt": MqttSettings}
ENV_MAPS: dict[str, dict[str, str]] = {
    "agent": {f"EDGEMON_{f.name.upper()}": f.name for f in fields(AgentSettings)},
    "mqtt": {f"EDGEMON_MQTT_{f.name.upper()}": f.name for f in fields(MqttSettings)},
}
CHOICES = {
    "output": ("auto", "stdout", "mqtt"),
    "log_format": ("text", "json"),
    "log_level": ("debug", "info", "warning", "error"),
}


def load(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Build the effective configuration.

    Args:
        path: the TOML file; ``None`` uses ``EDGEMON_CONFIG``, else
            ``/etc/edgemon/agent.toml`` when it exists, else defaults only.
        environ: the environment (default ``os.environ``).
        overrides: ``{"agent": {...}, "mqtt": {...}}`` from CLI flags; ``None`` values are ignored.

    Raises:
        ConfigError: naming the file, line and key.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get("EDGEMON_CONFIG"):
        path = env["EDGEMON_CONFIG"]
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    parsed, raw, where = load_sections(path, env, overrides, SECTIONS, ENV_MAPS, extra=("plugins",))
    agent: AgentSettings = parsed["agent"]
    if agent.timeout == 0:
        agent = replace(agent, timeout=min(2.0, agent.interval / 2))
    agent_raw = raw.get("agent", {})
    _check_agent(agent, lambda key: where.at("agent", key) if key in agent_raw else "")
    mqtt_raw = raw.get("mqtt", {})
    check_mqtt(parsed["mqtt"], lambda key: where.at("mqtt", key) if key in mqtt_raw else "")

    plugins_raw = raw.get("plugins", {})
    if not isinstance(plugins_raw, dict) or not all(isinstance(v, dict) for v in plugins_raw.values()):
        raise ConfigError(f"{where.at('plugins', None)}[plugins.<name>] sections must be tables")
    return Config(agent=agent, mqtt=parsed["mqtt"], plugins=plugins_raw, source=where.source, text=where.text)


def load_sections(
    path: str | os.PathLike[str] | None,
    env: Mapping[str, str],
    overrides: Mapping[str, Mapping[str, Any]] | None,
    sections: Mapping[str, type[Any]],
    env_maps: Mapping[str, Mapping[str, str]],
    extra: tuple[str, ...] = (),
) -> tuple[dict[str, Any], dict[str, Any], Where]:
    """Read a TOML file into one dataclass per section, then apply variables and flags.

    Shared by the agent and the server (``edgemon_server.config``).

    Args:
        path: the TOML file, or ``None`` for defaults only.
        env: the environment.
        overrides: ``{section: {key: value}}`` from CLI flags; ``None`` values are ignored.
        sections: section name -> dataclass with defaults.
        env_maps: section name -> {variable name: key}.
        extra: other sections the caller reads itself from the returned raw table.

    Returns:
        The settings per section, the raw TOML table, and a :class:`Where` for error messages.

    Raises:
        ConfigError: naming the file, line and key.
    """
    raw: dict[str, Any] = {}
    text = ""
    source = None
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from exc
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    where = Where(source, text)
    for section in sorted(set(raw) - {*sections, *extra}):
        raise ConfigError(f"{where.at(section, None)}unknown section [{section}]")
    parsed: dict[str, Any] = {}
    for section, cls in sections.items():
        values = raw.get(section, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{where.at(section, None)}[{section}] must be a table")
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"{where.at(section, key)}unknown key {section}.{key} (known: {', '.join(sorted(known))})"
                )
        settings = _apply(cls(), section, values, functools.partial(where.at, section))
        env_map = env_maps[section]
        env_values = {key: env[var] for var, key in env_map.items() if var in env}
        names = {key: var for var, key in env_map.items()}
        settings = _apply(settings, section, env_values, lambda key, n=names: f"variable {n[key]}: ")
        flag_values = {k: v for k, v in (overrides or {}).get(section, {}).items() if v is not None}
        settings = _apply(settings, section, flag_values, lambda key: f"option --{key.replace('_', '-')}: ")
        parsed[section] = settings
    return parsed, raw, where


def _apply(base: Any, section: str, values: Mapping[str, Any], prefix: Any) -> Any:
    changes: dict[str, Any] = {}
    for f in fields(base):
        if f.name not in values:
            continue
        try:
            changes[f.name] = coerce(values[f.name], getattr(base, f.name))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{prefix(f.name)}{section}.{f.name}: {exc}") from exc
    return replace(base, **changes)


def coerce(value: Any, default: Any) -> Any:
    """Convert ``value`` (from TOML or a string from the environment) to ``default``'s type."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
        raise TypeError(f"expected true or false, got {value!r}")
    if isinstance(default, (float, int)):
        if isinstance(value, bool):
            raise TypeError(f"expected a number, got {value!r}")
        try:
            number = float(value) if isinstance(default, float) else int(value)
        except (TypeError, ValueError, OverflowError):
            kind = "a number" if isinstance(default, float) else "an integer"
            raise TypeError(f"expected {kind}, got {value!r}") from None
        if not math.isfinite(number):
            raise TypeError(f"expected a finite number, got {value!r}")
        return number
    if isinstance(default, str):
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value
    if isinstance(default, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"expected a list of strings, got {value!r}")
        return list(value)
    return value


AGENT_RANGES: dict[str, tuple[float, float]] = {
    "interval": (0.1, 86400.0),
    "buffer_max_mb": (1.0, 1_000_000.0),
    "memory_max": (1, 1_000_000),
    "startup_timeout": (0.1, 3600.0),
}
"""``[agent]`` numbers: inclusive (min, max). ``timeout`` must also be below ``interval``."""

MQTT_RANGES: dict[str, tuple[float, float]] = {
    "port": (1, 65535),
    "resend_keep": (0, 1_000_000),
    "keep_alive": (0, 65535),
    "min_reconnect_delay": (0.01, 3600.0),
    "max_reconnect_delay": (0.01, 3600.0),
    "connect_timeout": (0.1, 600.0),
    "drain_rate": (0.1, 100_000.0),
    "max_inflight": (1, 65535),
}
"""``[mqtt]`` numbers: inclusive (min, max); MQTT's keep-alive is a 16-bit field."""


def check_ranges(section: str, settings: Any, ranges: Mapping[str, tuple[float, float]], where: Any) -> None:
    """Every number of ``settings`` named in ``ranges`` is finite and within its range."""
    for key, (low, high) in ranges.items():
        value = getattr(settings, key)
        if not (math.isfinite(value) and low <= value <= high):
            raise ConfigError(f"{where(key)}{section}.{key}: must be between {low:g} and {high:g}, got {value!r}")


def _check_agent(agent: AgentSettings, where: Any) -> None:
    for key, allowed in CHOICES.items():
        value = getattr(agent, key)
        if value not in allowed:
            raise ConfigError(f"{where(key)}agent.{key}: {value!r} is not one of {', '.join(allowed)}")
    check_ranges("agent", agent, AGENT_RANGES, where)
    if not 0 < agent.timeout < agent.interval:
        raise ConfigError(
            f"{where('timeout')}agent.timeout: must be > 0 and below agent.interval "
            f"({agent.interval:g}), got {agent.timeout:g}"
        )
    if agent.client_id and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", agent.client_id):
        raise ConfigError(
            f"{where('client_id')}agent.client_id: {agent.client_id!r} may hold only letters, digits, _ . : - "
            "(it becomes an MQTT topic level)"
        )


def check_mqtt(mqtt: MqttSettings, where: Any) -> None:
    """Check the ``[mqtt]`` values; ``where(key)`` gives the file:line prefix of a key."""
    check_ranges("mqtt", mqtt, MQTT_RANGES, where)
    if not mqtt.min_reconnect_delay <= mqtt.max_reconnect_delay:
        raise ConfigError(f"{where('min_reconnect_delay')}mqtt.min_reconnect_delay: must be <= max_reconnect_delay")
    if mqtt.protocol not in ("5", "3.1.1"):
        raise ConfigError(f"{where('protocol')}mqtt.protocol: {mqtt.protocol!r} is not one of 5, 3.1.1")
    for key in ("topic", "alerts_topic", "commands_topic"):
        topic = getattr(mqtt, key)
        if "{client_id}" not in topic or any(c in topic for c in "+#"):
            raise ConfigError(f"{where(key)}mqtt.{key}: {topic!r} must contain {{client_id}} and no wildcard")


def plugin_settings(config: Config, name: str, defaults: Mapping[str, Any], validate: Any = None) -> dict[str, Any]:
    """Merge ``[plugins.<name>]`` over a plugin's defaults and the core's keys, checking each key.

    Raises:
        ConfigError: for an unknown key, a value of the wrong type, or what ``validate`` rejects.
    """
    where = Where(config.source, config.text)
    section = f"plugins.{name}"
    merged: dict[str, Any] = {**CORE_PLUGIN_KEYS, **defaults}
    for key, value in config.plugins.get(name, {}).items():
        if key not in merged:
            raise ConfigError(
                f"{where.at(section, key)}unknown key {section}.{key} (known: {', '.join(sorted(merged))})"
            )
        try:
            merged[key] = coerce(value, merged[key])
        except TypeError as exc:
            raise ConfigError(f"{where.at(section, key)}{section}.{key}: {exc}") from exc
    for key in ("interval", "timeout"):
        if not 0 <= merged[key] <= 86400:
            raise ConfigError(f"{where.at(section, key)}{section}.{key}: must be between 0 and 86400 seconds")
    if validate is not None:
        try:
            validate(merged)
        except ValueError as exc:
            raise ConfigError(f"{where.at(section, None)}{section}: {exc}") from exc
    return merged


class Where:
    """Finds the line of ``[section]`` / ``key =`` in the file text, for error messages."""

    def __init__(self, source: str | None, text: str) -> None:
        self.source = source
        self.text = text
        self.lines = text.splitlines()

    def at(self, section: str, key: str | None) -> str:
        """``"<file>:<line>: "`` of the key (or section header), ``""`` without a file."""
        if self.source is None:
            return ""
        header = re.compile(r"^\s*\[\s*" + re.escape(section).replace(r"\.", r"\s*\.\s*") + r"\s*\]")
        any_header = re.compile(r"^\s*\[")
        line_no = None
        inside = False
        for i, line in enumerate(self.lines, start=1):
            if header.match(line):
                inside = True
                if key is None:
                    line_no = i
                    break
                continue
            if inside and any_header.match(line):
                inside = False
            if inside and key is not None and re.match(r"^\s*" + re.escape(key) + r"\s*=", line):
                line_no = i
                break
        return f"{self.source}:{line_no}: " if line_no else f"{self.source}: "
