"""Server configuration: a TOML file (``--config``), then ``EDGEMON_*`` variables, then flags.

The ``[mqtt]`` section and its ``EDGEMON_MQTT_*`` variables are the protocol's connection keys
(:class:`edgemon_protocol.mqtt.MqttSettings`, the same as the agent's); ``[server]`` is below. Example::

    [server]
    database_url = "postgresql+psycopg://edgemon@db/edgemon"
    shared_group = "collectors"     # several collectors split the load

    [mqtt]
    endpoint = "broker.example.net"
    ca = "/etc/edgemon/ca.pem"
    cert = "/etc/edgemon/collector.crt"
    key = "/etc/edgemon/collector.key"
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edgemon_protocol.alerting import parse_duration
from edgemon_protocol.config import ConfigError, load_sections
from edgemon_protocol.mqtt import MQTT_RANGES, REMOVED, MqttSettings, check_mqtt
from edgemon_server import notify_config
from edgemon_server.notify_config import NotifyConfig


@dataclass(frozen=True)
class ServerSettings:
    """The ``[server]`` section (variables ``EDGEMON_<KEY>``).

    Attributes:
        database_url: SQLAlchemy URL; default a SQLite file under ``./var/``.
        shared_group: join ``$share/<group>/devices/+/<kind>``; empty: plain subscriptions.
        http_bind: ``host:port`` of the HTTP API.
        client_id: MQTT client id; default the certificate's CN. Each collector needs its own
            (the broker keeps one persistent session per id).
        session_expiry: seconds the broker keeps this collector's session (and its unacknowledged
            messages) while it is away.
        receive_maximum: QoS 1 messages the broker may have in flight to us; also bounds the queue.
        batch_rows: a write transaction closes after this many samples...
        batch_ms: ...or this many milliseconds after its first message.
        max_payload_kb: larger payloads are rejected.
        max_depth: deepest nesting of ``metrics``.
        max_leaves: most leaves in one payload.
        max_future_s: a ``ts`` further ahead of the server's clock is rejected.
        resend_after: seconds a hole in a device's ``seq`` may stay open before the device is asked
            to send the range again (0: never ask).
        api_token: bearer token required by ``/api`` (required when ``http_bind`` is not loopback).
        api_token_file: file holding the token (first line), instead of ``api_token``.
        cors_origins: origins allowed to call the API from a browser (comma-separated).
        rate_limit: per client address, Flask-Limiter syntax; empty: off.
        online_factor: a device is online if seen within this many of its intervals.
        backlog_alert: a device that reports this many payloads waiting to be sent (its
            ``agent.transport.buffered``) gets a ``send_backlog`` alert, resolved at 10 (0: off).
        silent_factor: a device that sent nothing for this many of its intervals (at least 30 s) gets a
            ``device_silent`` alert (critical), resolved when it reports again.
        dashboard_dir: the built dashboard to serve at ``/`` (default: the one in the package).
        log_format: ``text`` or ``json``.
        log_level: ``debug``, ``info``, ``warning`` or ``error``.
    """

    database_url: str = "sqlite:///var/edgemon.db"
    shared_group: str = ""
    http_bind: str = "127.0.0.1:8000"
    client_id: str = ""
    session_expiry: int = 86400
    receive_maximum: int = 1000
    batch_rows: int = 20000
    batch_ms: int = 200
    max_payload_kb: int = 256
    max_depth: int = 8
    max_leaves: int = 4096
    max_future_s: float = 300.0
    resend_after: float = 10.0
    api_token: str = field(default="", repr=False)
    api_token_file: str = ""
    cors_origins: list[str] = field(default_factory=list)
    rate_limit: str = "600 per minute"
    online_factor: float = 3.0
    silent_factor: float = 5.0
    backlog_alert: int = 100
    dashboard_dir: str = ""
    log_format: str = "text"
    log_level: str = "info"


@dataclass(frozen=True)
class Retention:
    """How long each tier is kept, in seconds (0: forever); from ``[retention]``."""

    raw: float = 14 * 86400.0
    rollup_5m: float = 180 * 86400.0
    rollup_1h: float = 5 * 365 * 86400.0


@dataclass(frozen=True)
class RetentionSettings:
    """The ``[retention]`` section: how long data is kept (durations such as ``14d``; ``0``: forever).

    Attributes:
        raw: raw samples (never dropped before their buckets are rolled up).
        rollup_5m: five-minute rollups.
        rollup_1h: hourly rollups.
        every: how often ``edgemon-server run`` (and ``collect``) rolls up and applies retention.
    """

    raw: str = "14d"
    rollup_5m: str = "180d"
    rollup_1h: str = "1825d"
    every: str = "5m"


@dataclass(frozen=True)
class ServerConfig:
    """The whole server configuration."""

    server: ServerSettings = field(default_factory=ServerSettings)
    mqtt: MqttSettings = field(default_factory=lambda: MqttSettings(endpoint=""))
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    source: str | None = None
    retention: Retention = field(default_factory=Retention)
    maintain_every: float = 300.0
    """Seconds between two maintenance rounds (rollups and retention)."""


SECTIONS: dict[str, type[Any]] = {"server": ServerSettings, "mqtt": MqttSettings, "retention": RetentionSettings}
ENV_MAPS = {
    "server": {f"EDGEMON_{f.name.upper()}": f.name for f in fields(ServerSettings)},
    "mqtt": {f"EDGEMON_MQTT_{f.name.upper()}": f.name for f in fields(MqttSettings)},
    "retention": {f"EDGEMON_RETENTION_{f.name.upper()}": f.name for f in fields(RetentionSettings)},
}


def load(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> ServerConfig:
    """Build the effective configuration.

    Raises:
        ConfigError: naming the file, line and key.
    """
    env = os.environ if environ is None else environ
    parsed, raw, where = load_sections(path, env, overrides, SECTIONS, ENV_MAPS, extra=("notify",), removed=REMOVED)
    server: ServerSettings = parsed["server"]
    server_raw = raw.get("server", {})

    def at(key: str) -> str:
        return where.at("server", key) if key in server_raw else ""

    check_mqtt(parsed["mqtt"], lambda key: where.at("mqtt", key) if key in raw.get("mqtt", {}) else "", MQTT_RANGES)
    if server.log_format not in ("text", "json"):
        raise ConfigError(f"{at('log_format')}server.log_format: {server.log_format!r} is not one of text, json")
    if server.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{at('log_level')}server.log_level: {server.log_level!r} is not a level")
    if server.shared_group and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", server.shared_group):
        raise ConfigError(f"{at('shared_group')}server.shared_group: {server.shared_group!r}: letters, digits, _ . -")
    if not re.fullmatch(r"\[?[A-Za-z0-9_.:-]*\]?:\d{1,5}", server.http_bind):
        raise ConfigError(f"{at('http_bind')}server.http_bind: {server.http_bind!r} is not host:port")
    for key in ("receive_maximum", "batch_rows", "batch_ms", "max_payload_kb", "max_depth", "max_leaves"):
        if getattr(server, key) < 1:
            raise ConfigError(f"{at(key)}server.{key}: must be >= 1")
    if not 1 <= server.receive_maximum <= 65535:
        raise ConfigError(f"{at('receive_maximum')}server.receive_maximum: must be 1..65535")
    if server.online_factor <= 0:
        raise ConfigError(f"{at('online_factor')}server.online_factor: must be > 0")
    if not 1 <= server.silent_factor <= 10_000:
        raise ConfigError(f"{at('silent_factor')}server.silent_factor: must be between 1 and 10000")
    if server.rate_limit and not re.fullmatch(r"\d+\s*(/|per)\s*\d*\s*(second|minute|hour|day)s?", server.rate_limit):
        raise ConfigError(f"{at('rate_limit')}server.rate_limit: {server.rate_limit!r} is not like '600 per minute'")
    if "://" not in server.database_url:
        raise ConfigError(f"{at('database_url')}server.database_url: {server.database_url!r} is not a URL")
    notify = notify_config.parse(raw.get("notify"), where, env)
    kept: RetentionSettings = parsed["retention"]
    seconds: dict[str, float] = {}
    for key in ("raw", "rollup_5m", "rollup_1h", "every"):
        prefix = where.at("retention", key) if key in raw.get("retention", {}) else ""
        try:
            seconds[key] = parse_duration(getattr(kept, key))
        except ValueError as exc:
            raise ConfigError(f"{prefix}retention.{key}: {exc}") from None
        if key == "raw" and 0 < seconds[key] < 3600:
            raise ConfigError(f"{prefix}retention.raw: at least 1h (or 0: forever)")
        if key == "every" and not 10 <= seconds[key] <= 86400:
            raise ConfigError(f"{prefix}retention.every: between 10s and 1d")
    return ServerConfig(
        server=server,
        mqtt=parsed["mqtt"],
        notify=notify,
        source=where.source,
        retention=Retention(seconds["raw"], seconds["rollup_5m"], seconds["rollup_1h"]),
        maintain_every=seconds["every"],
    )


MIN_TOKEN = 16
"""Shortest API token accepted (a guessable one is no protection)."""


def api_token(server: ServerSettings) -> str:
    """The API token from ``api_token`` or ``api_token_file``.

    Raises:
        ConfigError: an unreadable or empty token file, or a token under 16 characters.
    """
    where = "server.api_token"
    token = server.api_token
    if server.api_token_file:
        where = f"server.api_token_file: {server.api_token_file}"
        try:
            lines = Path(server.api_token_file).read_text(encoding="utf-8").strip().splitlines()
        except OSError as exc:
            raise ConfigError(f"server.api_token_file: cannot read {server.api_token_file}: {exc.strerror}") from exc
        if not lines or not lines[0].strip():
            raise ConfigError(f"server.api_token_file: {server.api_token_file} is empty")
        token = lines[0].strip()
    if token and (len(token) < MIN_TOKEN or token != token.strip()):
        raise ConfigError(
            f"{where}: a token must be at least {MIN_TOKEN} characters without surrounding spaces "
            "(e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return token


def split_bind(bind: str) -> tuple[str, int]:
    """``"host:port"`` -> (host, port); ``[::1]:8000`` works too."""
    host, _, port = bind.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (to create its directory), else ``None``."""
    match = re.match(r"sqlite(\+\w+)?:///(?P<path>[^?]+)", url)
    if match is None or match["path"] == ":memory:":
        return None
    return Path(match["path"])
