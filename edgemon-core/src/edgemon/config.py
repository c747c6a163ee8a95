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

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

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
        output: ``stdout`` (JSON lines) for now.
        log_format: ``text`` or ``json`` (one JSON object per line).
        log_level: ``debug``, ``info``, ``warning`` or ``error``.
    """

    client_id: str = ""
    interval: float = 10.0
    timeout: float = 0.0
    state_dir: str = field(default_factory=_default_state_dir)
    output: str = "stdout"
    log_format: str = "text"
    log_level: str = "info"


@dataclass(frozen=True)
class Config:
    """The whole effective configuration."""

    agent: AgentSettings = field(default_factory=AgentSettings)
    plugins: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str | None = None
    text: str = field(default="", repr=False, compare=False)

    @property
    def device_id(self) -> str:
        """The configured client id, else the host name made into a valid id."""
        return self.agent.client_id or re.sub(r"[^A-Za-z0-9_.:-]", "_", socket.gethostname())[:128]


ENV_MAP = {
    "EDGEMON_CLIENT_ID": "client_id",
    "EDGEMON_INTERVAL": "interval",
    "EDGEMON_TIMEOUT": "timeout",
    "EDGEMON_STATE_DIR": "state_dir",
    "EDGEMON_OUTPUT": "output",
    "EDGEMON_LOG_FORMAT": "log_format",
    "EDGEMON_LOG_LEVEL": "log_level",
}
CHOICES = {
    "output": ("stdout",),
    "log_format": ("text", "json"),
    "log_level": ("debug", "info", "warning", "error"),
}


def load(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective configuration.

    Args:
        path: the TOML file; ``None`` uses ``EDGEMON_CONFIG``, else
            ``/etc/edgemon/agent.toml`` when it exists, else defaults only.
        environ: the environment (default ``os.environ``).
        overrides: ``[agent]`` keys from CLI flags; ``None`` values are ignored.

    Raises:
        ConfigError: naming the file, line and key.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get("EDGEMON_CONFIG"):
        path = env["EDGEMON_CONFIG"]
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
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

    where = _Where(source, text)
    unknown = set(raw) - {"agent", "plugins"}
    for section in sorted(unknown):
        raise ConfigError(f"{where.at(section, None)}unknown section [{section}]")
    agent_raw = raw.get("agent", {})
    if not isinstance(agent_raw, dict):
        raise ConfigError(f"{where.at('agent', None)}[agent] must be a table")
    agent = _parse_agent(agent_raw, where, "file")
    env_values = {ENV_MAP[k]: v for k, v in env.items() if k in ENV_MAP}
    agent = _apply(agent, env_values, lambda key: f"environment variable {_env_name(key)}: ")
    flag_values = {k: v for k, v in (overrides or {}).items() if v is not None}
    agent = _apply(agent, flag_values, lambda key: f"option --{key.replace('_', '-')}: ")
    if agent.timeout == 0:
        agent = replace(agent, timeout=min(2.0, agent.interval / 2))
    _check_agent(agent, lambda key: where.at("agent", key) if key in agent_raw else "")

    plugins_raw = raw.get("plugins", {})
    if not isinstance(plugins_raw, dict) or not all(isinstance(v, dict) for v in plugins_raw.values()):
        raise ConfigError(f"{where.at('plugins', None)}[plugins.<name>] sections must be tables")
    return Config(agent=agent, plugins=plugins_raw, source=source, text=text)


def _env_name(key: str) -> str:
    return next(k for k, v in ENV_MAP.items() if v == key)


def _parse_agent(values: Mapping[str, Any], where: _Where, _origin: str) -> AgentSettings:
    known = {f.name for f in fields(AgentSettings)}
    for key in values:
        if key not in known:
            raise ConfigError(f"{where.at('agent', key)}unknown key agent.{key} (known: {', '.join(sorted(known))})")
    return _apply(AgentSettings(), values, lambda key: where.at("agent", key))


def _apply(base: AgentSettings, values: Mapping[str, Any], prefix: Any) -> AgentSettings:
    changes: dict[str, Any] = {}
    for f in fields(AgentSettings):
        if f.name not in values:
            continue
        value = values[f.name]
        default = getattr(base, f.name)
        try:
            changes[f.name] = coerce(value, default)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{prefix(f.name)}agent.{f.name}: {exc}") from exc
    return replace(base, **changes)


def coerce(value: Any, default: Any) -> Any:
    """Convert ``value`` (from TOML or a string from the environment) to ``default``'s type."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
        raise TypeError(f"expected true or false, got {value!r}")
    if isinstance(default, float | int):
        if isinstance(value, bool):
            raise TypeError(f"expected a number, got {value!r}")
        try:
            number = float(value) if isinstance(default, float) else int(value)
        except (TypeError, ValueError):
            raise TypeError(f"expected a number, got {value!r}") from None
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


def _check_agent(agent: AgentSettings, where: Any) -> None:
    for key, allowed in CHOICES.items():
        value = getattr(agent, key)
        if value not in allowed:
            raise ConfigError(f"{where(key)}agent.{key}: {value!r} is not one of {', '.join(allowed)}")
    if not agent.interval > 0:
        raise ConfigError(f"{where('interval')}agent.interval: must be > 0, got {agent.interval:g}")
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


def plugin_settings(config: Config, name: str, defaults: Mapping[str, Any], validate: Any = None) -> dict[str, Any]:
    """Merge ``[plugins.<name>]`` over a plugin's defaults and the core's keys, checking each key.

    Raises:
        ConfigError: for an unknown key, a value of the wrong type, or what ``validate`` rejects.
    """
    where = _Where(config.source, config.text)
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
        if merged[key] < 0:
            raise ConfigError(f"{where.at(section, key)}{section}.{key}: must be >= 0")
    if validate is not None:
        try:
            validate(merged)
        except ValueError as exc:
            raise ConfigError(f"{where.at(section, None)}{section}: {exc}") from exc
    return merged


class _Where:
    """Finds the line of ``[section]`` / ``key =`` in the file text, for error messages."""

    def __init__(self, source: str | None, text: str) -> None:
        self.source = source
        self.lines = text.splitlines()

    def at(self, section: str, key: str | None) -> str:
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
