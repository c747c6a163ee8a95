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
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edgemon_protocol import mqtt as wire
from edgemon_protocol import remote
from edgemon_protocol import thresholds as rules
from edgemon_protocol.alerting import Threshold
from edgemon_protocol.config import ConfigError, Where, check_ranges, coerce, load_sections
from edgemon_protocol.ids import DEVICE_ID_RE, device_id_from
from edgemon_protocol.meta import check_tags

__all__ = [
    "AgentSettings",
    "Config",
    "ConfigError",
    "MqttSettings",
    "RemoteSettings",
    "coerce",
    "load",
    "plugin_settings",
]

DEFAULT_CONFIG = Path("/etc/edgemon/agent.toml")
CORE_PLUGIN_KEYS = {"enabled": True, "interval": 0.0, "timeout": 0.0}
"""Keys the core understands in every ``[plugins.<name>]`` section (0 = the agent's value)."""


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
        tags: free-form ``name = "value"`` pairs the server filters and groups devices by
            (``{site = "berlin", line = "3"}``; ``EDGEMON_TAGS="site=berlin,line=3"``).
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
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MqttSettings(wire.MqttSettings):
    """The agent's ``[mqtt]`` section: the protocol's connection keys, and how the agent sends.

    Topics are fixed by the protocol (``devices/<client id>/monitoring`` etc.); the keys ``topic``,
    ``alerts_topic`` and ``commands_topic`` of earlier versions are refused with a clear error.

    Attributes:
        resend_keep: acknowledged payloads kept on disk so the server can ask for them again (0: none).
        drain_rate: backlog payloads sent per second after a reconnect (live ones go at once).
        max_inflight: publishes awaiting PUBACK at once.
    """

    resend_keep: int = 3600
    drain_rate: float = 200.0
    max_inflight: int = 32


@dataclass(frozen=True)
class RemoteSettings:
    """The ``[remote_config]`` section: what configuration from the server may change on this device.

    Attributes:
        enabled: take configuration from the server (only in MQTT mode).
        allow: what a remote document may set: sections or keys (``agent.interval``, ``plugins``,
            ``plugins.disk``, ``alerts``). The MQTT settings, certificates, the state directory and
            the client id can never be set remotely.
        lock: keys a remote document may not change even where ``allow`` lets it (``plugins.gpu-nvml``).
        confirm_within: seconds after applying a version within which a payload must be acknowledged;
            otherwise the agent rolls back to the last good version and says so.
    """

    enabled: bool = True
    allow: list[str] = field(default_factory=lambda: list(remote.ALLOW_DEFAULT))
    lock: list[str] = field(default_factory=list)
    confirm_within: float = 600.0


@dataclass(frozen=True)
class Config:
    """The whole effective configuration."""

    agent: AgentSettings = field(default_factory=AgentSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    plugins: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    thresholds: tuple[Threshold, ...] = rules.DEFAULTS
    """The threshold rules in effect: the shipped ones and ``[[alerts.threshold]]``.

    (:mod:`edgemon_protocol.thresholds`)
    """
    source: str | None = None
    text: str = field(default="", repr=False, compare=False)
    remote: RemoteSettings = field(default_factory=RemoteSettings)
    remote_version: int = 0
    """The remote configuration version applied over the file (0: the file alone)."""

    @property
    def device_id(self) -> str:
        """The configured client id, else the host name made into a valid id."""
        return self.agent.client_id or device_id_from(socket.gethostname())


SECTIONS: dict[str, type[Any]] = {"agent": AgentSettings, "mqtt": MqttSettings, "remote_config": RemoteSettings}
ENV_MAPS: dict[str, dict[str, str]] = {
    "agent": {f"EDGEMON_{f.name.upper()}": f.name for f in fields(AgentSettings)},
    "mqtt": {f"EDGEMON_MQTT_{f.name.upper()}": f.name for f in fields(MqttSettings)},
    "remote_config": {f"EDGEMON_REMOTE_CONFIG_{f.name.upper()}": f.name for f in fields(RemoteSettings)},
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
    remote_doc: Mapping[str, Any] | None = None,
    remote_version: int = 0,
) -> Config:
    """Build the effective configuration.

    Args:
        path: the TOML file; ``None`` uses ``EDGEMON_CONFIG``, else
            ``/etc/edgemon/agent.toml`` when it exists, else defaults only.
        environ: the environment (default ``os.environ``).
        overrides: ``{"agent": {...}, "mqtt": {...}}`` from CLI flags; ``None`` values are ignored.
        remote_doc: a remote configuration document (:mod:`edgemon_protocol.remote`, checked), laid
            over the file, the variables and the flags: what it sets wins; what it leaves out keeps
            the local value, so the file stays the floor.
        remote_version: that document's version.

    Raises:
        ConfigError: naming the file, line and key.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get("EDGEMON_CONFIG"):
        path = env["EDGEMON_CONFIG"]
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    parsed, raw, where = load_sections(
        path, env, overrides, SECTIONS, ENV_MAPS, extra=("plugins", "alerts"), removed=wire.REMOVED
    )
    agent: AgentSettings = parsed["agent"]
    layer = remote_doc or {}
    if layer.get("agent"):
        changes: dict[str, Any] = {k: v if k == "tags" else float(v) for k, v in layer["agent"].items()}
        agent = replace(agent, **changes)
    agent = replace(agent, tags=_tags(agent.tags, where.at("agent", "tags") if "tags" in raw.get("agent", {}) else ""))
    if agent.timeout == 0:
        agent = replace(agent, timeout=min(2.0, agent.interval / 2))
    agent_raw = raw.get("agent", {})
    _check_agent(agent, lambda key: where.at("agent", key) if key in agent_raw else "")
    mqtt_raw = raw.get("mqtt", {})
    mqtt_settings: MqttSettings = parsed["mqtt"]
    if "drain_rate" in layer.get("mqtt", {}):  # the one MQTT key the protocol lets a server change
        mqtt_settings = replace(mqtt_settings, drain_rate=float(layer["mqtt"]["drain_rate"]))
    check_mqtt(mqtt_settings, lambda key: where.at("mqtt", key) if key in mqtt_raw else "")

    plugins_raw = raw.get("plugins", {})
    if not isinstance(plugins_raw, dict) or not all(isinstance(v, dict) for v in plugins_raw.values()):
        raise ConfigError(f"{where.at('plugins', None)}[plugins.<name>] sections must be tables")
    alerts_raw = raw.get("alerts")
    if layer:
        plugins_raw = remote.merge(plugins_raw, layer.get("plugins", {}))
        alerts_raw = remote.merge(alerts_raw or {}, layer["alerts"]) if "alerts" in layer else alerts_raw
    user, defaults = rules.thresholds(alerts_raw, where)
    settings: RemoteSettings = parsed["remote_config"]
    if settings.confirm_within < 10:
        raise ConfigError(f"{where.at('remote_config', 'confirm_within')}remote_config.confirm_within: at least 10 s")
    return Config(
        agent=agent,
        mqtt=mqtt_settings,
        plugins=plugins_raw,
        thresholds=tuple(rules.effective(user, defaults)),
        source=where.source,
        text=where.text,
        remote=settings,
        remote_version=remote_version if layer else 0,
    )


AGENT_RANGES: dict[str, tuple[float, float]] = {
    "interval": (0.1, 86400.0),
    "buffer_max_mb": (1.0, 1_000_000.0),
    "memory_max": (1, 1_000_000),
    "startup_timeout": (0.1, 3600.0),
}
"""``[agent]`` numbers: inclusive (min, max). ``timeout`` must also be below ``interval``."""

MQTT_RANGES: dict[str, tuple[float, float]] = {
    **wire.MQTT_RANGES,
    "resend_keep": (0, 1_000_000),
    "drain_rate": (0.1, 100_000.0),
    "max_inflight": (1, 65535),
}
"""``[mqtt]`` numbers: inclusive (min, max)."""


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
    if agent.client_id and not DEVICE_ID_RE.fullmatch(agent.client_id):
        raise ConfigError(
            f"{where('client_id')}agent.client_id: {agent.client_id!r} may hold only letters, digits, _ . : - "
            "(it becomes an MQTT topic level)"
        )


def _tags(value: Any, where: str) -> dict[str, str]:
    """``[agent] tags`` (a table, or ``site=berlin,line=3`` from ``EDGEMON_TAGS``), checked."""
    if isinstance(value, str):
        pairs = [p.partition("=") for p in value.split(",") if p.strip()]
        value = {k.strip(): v.strip() for k, _, v in pairs}
    try:
        return check_tags(value)
    except ValueError as exc:
        raise ConfigError(f"{where}agent.tags: {exc}") from None


def check_mqtt(mqtt: MqttSettings, where: Any) -> None:
    """Check the ``[mqtt]`` values; ``where(key)`` gives the file:line prefix of a key."""
    wire.check_mqtt(mqtt, where, MQTT_RANGES)


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
