"""Remote configuration: the documents the server sends a device, and what the device says back.

A document is the agent's own TOML vocabulary as a JSON object, limited to what may change remotely::

    {"agent": {"interval": 5, "timeout": 2, "tags": {"site": "berlin"}},
     "plugins": {"disk": {"enabled": true, "interval": 60, "exclude_mounts": ["/snap/*"]}},
     "alerts": {"defaults": true, "threshold": [{"metric": "disk-usage-*-percent", "above": 80}]}}

The MQTT endpoint, certificates, the state directory and the client id are never in one. Both ends
check a document with :func:`check_document` (the server before it stores a version, the device
before it applies one; a plugin's own keys are checked by the device, which knows the plugin).

Messages (JSON), on the topics of :mod:`edgemon_protocol.topics`::

    devices/<id>/config           device -> server  {"type": "get", "have": 3, "rejected": 0}
                                                    {"type": "report", "version": 3, "hash": "...",
                                                     "status": "applied", "error": "", "at": "..."}
    devices/<id>/commands/config  server -> device  {"version": 4, "hash": "...", "document": {...},
                                                     "expires_at": null}

A device asks on every connection with the version it has (and the newest it rejected); the server
answers only when it has a newer one, and pushes new versions to connected devices. Versions only
grow, so a device never applies an older one than it has.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from edgemon_protocol.commands import CONFIG
from edgemon_protocol.config import ConfigError, Where
from edgemon_protocol.meta import check_tags
from edgemon_protocol.thresholds import thresholds

AGENT_KEYS = {"interval": (0.1, 86400.0), "timeout": (0.0, 86400.0)}
"""``[agent]`` keys a document may set, with their ranges (``timeout`` must also stay below ``interval``)."""
PLUGIN_CORE_KEYS = {"enabled": bool, "interval": float, "timeout": float}
STATUSES = ("applied", "rejected", "rolled_back", "expired")
"""What a device reports of a version: applied; rejected (its reason; nothing changed); rolled back
(no payload was acknowledged after it was applied); expired (its ``expires_at`` passed: reverted)."""
MAX_BYTES = 64 * 1024
"""A document and its envelope at most (an AWS IoT shadow holds 8 KB; a message 128 KB)."""
COMMAND = CONFIG
"""The command name (``devices/<id>/commands/config``) a version travels under."""
MQTT_KEYS = {"drain_rate": (0.1, 100_000.0)}
"""The one MQTT setting a server may change: how fast a backlog drains (payloads/s) after an outage,
so that a fleet coming back at once does not overload the broker or the collectors."""
ALLOW_DEFAULT = ("agent.interval", "agent.timeout", "agent.tags", "mqtt.drain_rate", "plugins", "alerts")
"""What a device lets remote documents change unless its ``[remote_config] allow`` says otherwise."""


def digest(document: Mapping[str, Any]) -> str:
    """The hash of a document (canonical JSON, SHA-256, 16 hex digits)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def check_document(document: Any, where: Where) -> dict[str, Any]:
    """Check a document; returns it. Errors name the file and line where ``where`` has a file text.

    Raises:
        ConfigError: a section or key that may not change remotely, a value out of range, a bad rule.
    """
    if not isinstance(document, dict):
        raise ConfigError(f"{where.at('', None)}a document is a table")
    for section in document:
        if section not in ("agent", "mqtt", "plugins", "alerts"):
            raise ConfigError(
                f"{where.at(section, None)}[{section}] cannot be changed remotely (agent, mqtt.drain_rate, plugins, "
                "alerts can)"
            )
    mqtt = document.get("mqtt", {})
    if not isinstance(mqtt, dict):
        raise ConfigError(f"{where.at('mqtt', None)}[mqtt] must be a table")
    for key, value in mqtt.items():
        if key not in MQTT_KEYS:
            raise ConfigError(
                f"{where.at('mqtt', key)}mqtt.{key} cannot be changed remotely (only drain_rate: the broker, "
                "certificates and client id stay the device's)"
            )
        low, high = MQTT_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ConfigError(
                f"{where.at('mqtt', key)}mqtt.{key}: a number between {low:g} and {high:g}, got {value!r}"
            )
    agent = document.get("agent", {})
    if not isinstance(agent, dict):
        raise ConfigError(f"{where.at('agent', None)}[agent] must be a table")
    for key, value in agent.items():
        if key == "tags":
            try:
                check_tags(value)
            except ValueError as exc:
                raise ConfigError(f"{where.at('agent', key)}agent.tags: {exc}") from None
            continue
        if key not in AGENT_KEYS:
            raise ConfigError(
                f"{where.at('agent', key)}agent.{key} cannot be changed remotely "
                f"({', '.join(sorted(AGENT_KEYS))}, tags can)"
            )
        low, high = AGENT_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ConfigError(
                f"{where.at('agent', key)}agent.{key}: a number of seconds between {low:g} and {high:g}, got {value!r}"
            )
    if "timeout" in agent and "interval" in agent and not 0 < agent["timeout"] < agent["interval"]:
        raise ConfigError(f"{where.at('agent', 'timeout')}agent.timeout: must be > 0 and below agent.interval")
    plugins = document.get("plugins", {})
    if not isinstance(plugins, dict) or not all(isinstance(v, dict) for v in plugins.values()):
        raise ConfigError(f"{where.at('plugins', None)}[plugins.<name>] sections must be tables")
    for name, section in plugins.items():
        at = functools.partial(where.at, f"plugins.{name}")
        for key, kind in PLUGIN_CORE_KEYS.items():
            if key not in section:
                continue
            value = section[key]
            if kind is bool and not isinstance(value, bool):
                raise ConfigError(f"{at(key)}plugins.{name}.{key}: true or false")
            if kind is float and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 86400
            ):
                raise ConfigError(f"{at(key)}plugins.{name}.{key}: a number of seconds between 0 and 86400")
        for key, value in section.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{at(key)}plugins.{name}.{key}: not a finite number")
    thresholds(document.get("alerts"), where)
    if len(json.dumps(document)) > MAX_BYTES:
        raise ConfigError(f"{where.at('', None)}over {MAX_BYTES // 1024} KiB")
    return document


def allowed(document: Mapping[str, Any], allow: tuple[str, ...], lock: tuple[str, ...]) -> str | None:
    """Why a device does not take ``document`` (a key outside ``allow`` or inside ``lock``), else ``None``.

    Entries are ``section`` or ``section.key`` (``plugins.disk``, ``plugins.disk.interval``).
    """
    for path in _paths(document):
        if not any(path == a or path.startswith(a + ".") for a in allow):
            return f"{path} is not allowed by this device's [remote_config] allow ({', '.join(allow) or 'nothing'})"
        if any(path == lk or path.startswith(lk + ".") for lk in lock):
            return f"{path} is locked by this device's [remote_config] lock"
    return None


def _paths(document: Mapping[str, Any]) -> list[str]:
    out = [f"agent.{key}" for key in document.get("agent", {})]
    out.extend(f"mqtt.{key}" for key in document.get("mqtt", {}))
    for name, section in document.get("plugins", {}).items():
        out.extend(f"plugins.{name}.{key}" for key in section)
    for key in document.get("alerts", {}):
        out.append(f"alerts.{key}")
    return out


def merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Layers merged in order, later ones winning: tables merge key by key; lists and values replace."""
    out: dict[str, Any] = {}
    for layer in layers:
        _merge_into(out, layer)
    return out


def _merge_into(out: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            _merge_into(out[key], value)
        else:
            out[key] = json.loads(json.dumps(value))  # a copy: later layers never alias earlier ones


# -- messages ----------------------------------------------------------------------------------


def encode_desired(version: int, document: Mapping[str, Any], expires_at: str | None = None) -> bytes:
    """The message that carries a version to its device."""
    body = {"version": version, "hash": digest(document), "document": document, "expires_at": expires_at}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def parse_desired(body: bytes) -> tuple[int, str, dict[str, Any], str | None]:
    """``(version, hash, document, expires_at)`` of a desired message.

    Raises:
        ConfigError: malformed, a hash that does not match, or a document :func:`check_document` refuses.
    """
    if len(body) > MAX_BYTES + 1024:
        raise ConfigError("remote configuration: message too large")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"remote configuration: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError("remote configuration: not a JSON object")
    version, hash_, document, expires = doc.get("version"), doc.get("hash"), doc.get("document"), doc.get("expires_at")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError("remote configuration: version must be a positive integer")
    if expires is not None and not isinstance(expires, str):
        raise ConfigError("remote configuration: expires_at must be a time or null")
    document = check_document(document, Where(f"remote configuration v{version}", ""))
    if hash_ != digest(document):
        raise ConfigError(f"remote configuration v{version}: the hash does not match the document")
    return version, str(hash_), document, expires


def encode_get(have: int, rejected: int = 0) -> bytes:
    """A device's request for a newer version than ``have`` (not ``rejected`` again)."""
    return json.dumps({"type": "get", "have": have, "rejected": rejected}).encode()


def encode_report(version: int, hash_: str, status: str, error: str, at: str) -> bytes:
    """A device's report of what it did with a version."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    body = {"type": "report", "version": version, "hash": hash_, "status": status, "error": error[:1000], "at": at}
    return json.dumps(body, ensure_ascii=False).encode()


def parse_uplink(body: bytes) -> dict[str, Any]:
    """A ``get`` or ``report`` from a device, checked.

    Raises:
        ValueError: with the reason.
    """
    if len(body) > 4096:
        raise ValueError("config message over 4 KiB")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"config message is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("type") not in ("get", "report"):
        raise ValueError('config message: "type" must be "get" or "report"')
    for key in ("have", "rejected") if doc["type"] == "get" else ("version",):
        value = doc.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"config message: {key} must be a non-negative integer")
    if doc["type"] == "report":
        if doc.get("status") not in STATUSES:
            raise ValueError(f"config report: status must be one of {', '.join(STATUSES)}")
        if not isinstance(doc.get("error", ""), str) or not isinstance(doc.get("hash", ""), str):
            raise ValueError("config report: error and hash are strings")
    return doc
