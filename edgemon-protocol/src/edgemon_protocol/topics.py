"""The MQTT topics of edgemon, fixed by the protocol (not configurable per device).

A device publishes under ``devices/<id>/`` and takes commands from ``devices/<id>/commands/#``::

    devices/<id>/monitoring        device -> server  one payload per cycle (QoS 1)
    devices/<id>/meta              device -> server  metric metadata: units, kinds, headlines (QoS 1)
    devices/<id>/alerts            device -> server  alert transitions
    devices/<id>/config            device -> server  remote configuration: get, report (:mod:`edgemon_protocol.remote`)
    devices/<id>/commands/<name>   server -> device  ``resend`` (see :mod:`edgemon_protocol.commands`),
                                                     ``config`` (a configuration version)

A broker's policy (a Mosquitto ACL, an AWS IoT policy) lets each device use only its own
``devices/<id>/`` levels; :func:`device_acl` writes that rule once for both.
"""

from __future__ import annotations

from typing import NamedTuple

from edgemon_protocol.ids import DEVICE_ID_RE

ROOT = "devices"
MONITORING = "monitoring"
META = "meta"
ALERTS = "alerts"
CONFIG = "config"
COMMANDS = "commands"
UPLINK = (MONITORING, META, ALERTS, CONFIG)
"""What a device publishes, each to ``devices/<id>/<kind>``."""


def monitoring(device: str) -> str:
    """Where ``device`` publishes its payloads."""
    return f"{ROOT}/{device}/{MONITORING}"


def meta(device: str) -> str:
    """Where ``device`` publishes its metric metadata."""
    return f"{ROOT}/{device}/{META}"


def alerts(device: str) -> str:
    """Where ``device`` will publish alert transitions."""
    return f"{ROOT}/{device}/{ALERTS}"


def config(device: str) -> str:
    """Where ``device`` asks for its configuration and reports what it did with it."""
    return f"{ROOT}/{device}/{CONFIG}"


def commands(device: str) -> str:
    """The prefix of the commands ``device`` takes (``<prefix>/<name>``)."""
    return f"{ROOT}/{device}/{COMMANDS}"


def command_filter(device: str) -> str:
    """What ``device`` subscribes to: every command addressed to it."""
    return f"{commands(device)}/#"


def command(device: str, name: str) -> str:
    """The topic of command ``name`` to ``device``."""
    return f"{commands(device)}/{name}"


def subscription(kind: str, group: str = "") -> str:
    """The server's filter for every device's ``kind``; an MQTT 5 shared subscription when ``group`` is set."""
    plain = f"{ROOT}/+/{kind}"
    return f"$share/{group}/{plain}" if group else plain


class Topic(NamedTuple):
    """A device's uplink topic, taken apart."""

    device: str
    kind: str


def parse(topic: str) -> Topic | None:
    """``devices/<id>/<kind>`` of a valid id and an uplink kind, else ``None``."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != ROOT or parts[2] not in UPLINK or not DEVICE_ID_RE.fullmatch(parts[1]):
        return None
    return Topic(parts[1], parts[2])


def command_name(device: str, topic: str) -> str | None:
    """The command name of ``devices/<device>/commands/<name>``, else ``None``."""
    prefix = commands(device) + "/"
    return topic[len(prefix) :] if topic.startswith(prefix) else None


def device_acl(who: str = "%u") -> list[str]:
    """A Mosquitto ACL pattern block: a device (``%u``: its certificate's CN) uses only its own topics."""
    lines = [f"pattern write {t}" for t in (monitoring(who), meta(who), alerts(who), config(who))]
    return [*lines, f"pattern read {command_filter(who)}"]


def collector_acl() -> list[str]:
    """A Mosquitto ACL topic block for a collector: read every device's uplink, send commands."""
    lines = [f"topic read {subscription(kind)}" for kind in UPLINK]
    return [*lines, f"topic write {ROOT}/+/{COMMANDS}/#"]
