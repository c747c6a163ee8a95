"""Remote configuration on the server: layers, compiled versions, rollouts, and what devices report.

One writer, whole documents: ``edgemon-server config push`` sets a layer (the fleet's; a group's:
device ids matching a glob, or devices with a tag, ``tag:site=berlin``; a device's) and compiles, for
each device it reaches, the merge of its layers (fleet < groups, by name < device) into one document.
A document that differs from the device's newest becomes a new version
(numbers only grow, every version is kept) and the device's ``desired_version``. The collector sends
a device every desired version newer than the one it has: at once when it is connected, and when it
next asks (``get`` on every connection), so no change is lost to an offline period and no stale
intermediate version is applied.

A rollout with a canary share gives the new layer to those devices first (their compile sees the
rollout's document); :func:`advance` then aborts it (the canaries get a version of the old
document: a rollback is a new version, so it reaches a device like any other) when a canary rejects
or rolls it back, falls silent, or does not apply it in twice the wait; or, once the wait is over
and every canary applied it, sets the layer and compiles the rest of its devices.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, or_, select, update

from edgemon_protocol import remote
from edgemon_protocol.config import Where
from edgemon_server import alert_state
from edgemon_server import queries as q
from edgemon_server.db import Base, insert_for

log = logging.getLogger(__name__)

LAYERS = Base.metadata.tables["config_layers"]
VERSIONS = Base.metadata.tables["config_versions"]
DEVICE_CONFIG = Base.metadata.tables["device_config"]
ROLLOUTS = Base.metadata.tables["config_rollouts"]
DEVICES = Base.metadata.tables["devices"]
SCOPES = ("fleet", "group", "device", "override")
"""Layers in the order they apply; an ``override`` (a push with an end) comes last, and when it ends
its devices go back to what the other layers say."""


def _device_row(conn: Connection, device: str) -> None:
    """Make sure ``device_config`` has a row for ``device``."""
    conn.execute(
        insert_for(conn.dialect.name)(DEVICE_CONFIG).values(device_id=device, sent_version=0).on_conflict_do_nothing()
    )


# -- compiling -----------------------------------------------------------------------------------


def layers_for(conn: Connection, device: str, now_ms: int) -> list[dict[str, Any]]:
    """The layers that apply to ``device`` now, in order: fleet, groups by name, device.

    For the canary devices of a rollout, the rollout's document stands in for its layer.
    """
    rows = [
        dict(r._mapping)
        for r in conn.execute(select(LAYERS).where(or_(LAYERS.c.expires_at.is_(None), LAYERS.c.expires_at > now_ms)))
    ]
    tags = q.device_tags(conn, [device]).get(device, {})
    chosen = {(r["scope"], r["name"]): r for r in rows if reaches(r["match"], device, tags)}
    for rollout in conn.execute(select(ROLLOUTS).where(ROLLOUTS.c.state == "canary")):
        if device in rollout.canary:
            chosen[(rollout.scope, rollout.name)] = {
                "scope": rollout.scope,
                "name": rollout.name,
                "document": rollout.document,
                "expires_at": rollout.expires_at,
                "rollout_id": rollout.id,
            }
    return sorted(chosen.values(), key=lambda r: (SCOPES.index(r["scope"]), r["name"]))


def compile_for(conn: Connection, device: str, now_ms: int, rollout_id: int | None = None) -> int | None:
    """Compile ``device``'s document; a new version when it differs from its newest. Returns that version."""
    layers = layers_for(conn, device, now_ms)
    document = remote.merge(*(layer["document"] for layer in layers))
    expiries = [layer["expires_at"] for layer in layers if layer.get("expires_at")]
    expires = min(expiries) if expiries else None
    rollout_id = rollout_id or next((layer["rollout_id"] for layer in layers if layer.get("rollout_id")), None)
    latest = conn.execute(
        select(VERSIONS.c.version, VERSIONS.c.hash, VERSIONS.c.expires_at)
        .where(VERSIONS.c.device_id == device)
        .order_by(VERSIONS.c.version.desc())
        .limit(1)
    ).first()
    hash_ = remote.digest(document)
    if latest is None and not document:
        return None  # no remote configuration for this device: its local file is all it has
    if latest is not None and latest.hash == hash_ and latest.expires_at == expires:
        return None
    version = conn.execute(
        VERSIONS.insert()
        .values(
            device_id=device,
            document=document,
            hash=hash_,
            expires_at=expires,
            rollout_id=rollout_id,
            created=now_ms,
        )
        .returning(VERSIONS.c.version)
    ).scalar_one()
    _device_row(conn, device)
    conn.execute(update(DEVICE_CONFIG).where(DEVICE_CONFIG.c.device_id == device).values(desired_version=version))
    return int(version)


def reaches(match: str, device: str, tags: dict[str, str]) -> bool:
    """Whether a layer's ``match`` takes in a device: a glob on its id, or ``tag:name=value`` (a glob value)."""
    if match.startswith("tag:"):
        name, _, value = match[4:].partition("=")
        return name in tags and fnmatch.fnmatchcase(tags[name], value)
    return fnmatch.fnmatchcase(device, match)


def devices_matching(conn: Connection, match: str) -> list[str]:
    """Known devices (with payloads, or that asked for their configuration) that ``match`` takes in."""
    known = {r[0] for r in conn.execute(select(DEVICES.c.id))}
    known |= {r[0] for r in conn.execute(select(DEVICE_CONFIG.c.device_id))}
    tags = q.device_tags(conn) if match.startswith("tag:") else {}
    return sorted(d for d in known if reaches(match, d, tags.get(d, {})))


def canary_share(devices: Sequence[str], percent: float) -> list[str]:
    """A stable share of ``devices`` (at least one): the same devices for the same ids, spread by hash."""
    if percent <= 0 or len(devices) <= 1:
        return []
    count = max(1, math.ceil(len(devices) * percent / 100))
    return sorted(devices, key=lambda d: hashlib.sha256(d.encode()).hexdigest())[:count]


# -- pushing ---------------------------------------------------------------------------------------


def push(
    engine: Engine,
    scope: str,
    name: str,
    document: Mapping[str, Any],
    *,
    where: Where,
    match: str | None = None,
    canary_percent: float = 0.0,
    wait_s: float = 900.0,
    abort_on_rejects: int = 1,
    expires_at: int | None = None,
    now_ms: int,
) -> dict[str, Any]:
    """Stage a layer: to a canary share first, or to all its devices at once. Returns the rollout.

    Raises:
        ConfigError: a document the agent would refuse (naming the file and line).
        ValueError: a bad scope, or a group without a ``match`` the first time.
    """
    doc = remote.check_document(dict(document), where)
    if scope not in SCOPES[:3]:
        raise ValueError(f"scope must be one of {', '.join(SCOPES[:3])}")
    with engine.begin() as conn:
        if scope == "fleet":
            name, match = "", "*"
        elif scope == "device":
            match = name
        elif match is None:
            match = conn.execute(
                select(LAYERS.c.match).where(LAYERS.c.scope == "group", LAYERS.c.name == name)
            ).scalar()
            if match is None:
                raise ValueError(f"group {name!r} is new: give --match GLOB (the device ids it holds)")
        targets = devices_matching(conn, match) if scope != "device" else [name]
        if expires_at is not None:  # an override: on top of every layer, gone when it ends
            scope, name = "override", f"{scope}:{name}"
        canary = canary_share(targets, canary_percent)
        rollout: dict[str, Any] = {
            "scope": scope,
            "name": name,
            "match": match,
            "document": doc,
            "expires_at": expires_at,
            "canary": canary,
            "wait_s": wait_s,
            "abort_on_rejects": abort_on_rejects,
            "state": "canary" if canary else "complete",
            "reason": f"canary: {len(canary)} of {len(targets)} devices" if canary else f"{len(targets)} devices",
            "created": now_ms,
            "updated": now_ms,
        }
        rollout["id"] = conn.execute(ROLLOUTS.insert().values(**rollout).returning(ROLLOUTS.c.id)).scalar_one()
        if not canary:
            _set_layer(conn, scope, name, match, doc, expires_at, now_ms)
        for device in canary or targets:
            compile_for(conn, device, now_ms, rollout["id"])
    return rollout


def _set_layer(
    conn: Connection, scope: str, name: str, match: str, document: Any, expires_at: int | None, now_ms: int
) -> None:
    values = {"match": match, "document": document, "expires_at": expires_at, "updated": now_ms}
    conn.execute(
        insert_for(conn.dialect.name)(LAYERS)
        .values(scope=scope, name=name, **values)
        .on_conflict_do_update(index_elements=["scope", "name"], set_=values)
    )


def advance(engine: Engine, now_ms: int) -> list[dict[str, Any]]:
    """Move canary rollouts on (abort or complete) and drop expired layers; returns what changed."""
    changed = []
    with engine.begin() as conn:
        for rollout in [dict(r._mapping) for r in conn.execute(select(ROLLOUTS).where(ROLLOUTS.c.state == "canary"))]:
            verdict = _judge(conn, rollout, now_ms)
            if verdict is None:
                continue
            state, reason = verdict
            conn.execute(
                update(ROLLOUTS)
                .where(ROLLOUTS.c.id == rollout["id"])
                .values(state=state, reason=reason, updated=now_ms)
            )
            if state == "complete":
                _set_layer(
                    conn,
                    rollout["scope"],
                    rollout["name"],
                    rollout["match"],
                    rollout["document"],
                    rollout["expires_at"],
                    now_ms,
                )
                targets = (
                    devices_matching(conn, rollout["match"]) if rollout["scope"] != "device" else [rollout["name"]]
                )
                for device in targets:
                    compile_for(conn, device, now_ms, rollout["id"])
            else:
                for device in rollout["canary"]:  # back to what they had: a new version of the old document
                    compile_for(conn, device, now_ms)
            changed.append({"id": rollout["id"], "state": state, "reason": reason})
            (log.warning if state == "aborted" else log.info)(
                f"configuration rollout {state}", extra={"reason": f"rollout {rollout['id']}: {reason}"}
            )
        expired = conn.execute(select(LAYERS).where(LAYERS.c.expires_at <= now_ms)).all()
        for layer in expired:
            conn.execute(LAYERS.delete().where(LAYERS.c.id == layer.id))
            for device in devices_matching(conn, layer.match):
                compile_for(conn, device, now_ms)
            changed.append({"layer": f"{layer.scope} {layer.name}".strip(), "state": "expired"})
    return changed


def _judge(conn: Connection, rollout: Mapping[str, Any], now_ms: int) -> tuple[str, str] | None:
    """``(state, reason)`` when a canary rollout is over, else ``None``."""
    canary = list(rollout["canary"])
    versions = dict(
        conn.execute(
            select(VERSIONS.c.device_id, VERSIONS.c.version).where(VERSIONS.c.rollout_id == rollout["id"])
        ).all()
    )
    reports = {r.device_id: r for r in conn.execute(select(DEVICE_CONFIG).where(DEVICE_CONFIG.c.device_id.in_(canary)))}
    rejected = [
        d
        for d in canary
        if d in reports
        and reports[d].reported_version == versions.get(d)
        and reports[d].status in ("rejected", "rolled_back")
    ]
    if rollout["abort_on_rejects"] > 0 and len(rejected) >= rollout["abort_on_rejects"]:
        first = reports[rejected[0]]
        return "aborted", f"{len(rejected)} canary device(s) refused it; {rejected[0]}: {first.status}: {first.error}"
    silent = sorted(alert_state.silent_devices(conn, canary))
    if silent:
        return "aborted", f"canary device(s) silent: {', '.join(silent[:5])}"
    applied = [d for d in canary if d in reports and (reports[d].applied_version or 0) >= versions.get(d, 1 << 62)]
    waited = now_ms - rollout["created"]
    if waited >= rollout["wait_s"] * 1000 and len(applied) == len(canary):
        return "complete", f"the {len(canary)} canary device(s) applied it; sent to the rest"
    if waited >= 2 * rollout["wait_s"] * 1000:
        missing = sorted(set(canary) - set(applied))
        return "aborted", f"canary device(s) did not apply it in twice the wait: {', '.join(missing[:5])}"
    return None


# -- devices ---------------------------------------------------------------------------------------


def handle(conn: Connection, device: str, message: Mapping[str, Any], now_ms: int) -> None:
    """A device's ``get`` or ``report`` (:func:`edgemon_protocol.remote.parse_uplink`), in the write transaction."""
    _device_row(conn, device)
    row = conn.execute(select(DEVICE_CONFIG).where(DEVICE_CONFIG.c.device_id == device)).one()
    if message["type"] == "get":
        if row.desired_version is None:
            compile_for(conn, device, now_ms)  # a device new to remote configuration: the fleet's layers
            row = conn.execute(select(DEVICE_CONFIG).where(DEVICE_CONFIG.c.device_id == device)).one()
        sent = int(message.get("have", 0))
        if message.get("rejected") and message["rejected"] == row.desired_version:
            sent = max(sent, int(message["rejected"]))  # it refused this one already: not again
        conn.execute(update(DEVICE_CONFIG).where(DEVICE_CONFIG.c.device_id == device).values(sent_version=sent))
        return
    values: dict[str, Any] = {
        "status": message["status"],
        "reported_version": message["version"],
        "error": message.get("error") or None,
        "reported_at": now_ms,
    }
    if message["status"] == "applied":
        values["applied_version"] = message["version"]
    elif message["status"] in ("rejected", "rolled_back"):
        values["sent_version"] = max(row.sent_version, message["version"])
        log.warning(
            f"configuration {message['status'].replace('_', ' ')}",
            extra={"device": device, "reason": f"v{message['version']}: {message.get('error', '')}"[:300]},
        )
    conn.execute(update(DEVICE_CONFIG).where(DEVICE_CONFIG.c.device_id == device).values(**values))


def due(conn: Connection, limit: int = 500) -> list[dict[str, Any]]:
    """Versions to send: each device whose desired version is newer than the one it has or was sent."""
    rows = conn.execute(
        select(DEVICE_CONFIG.c.device_id, VERSIONS)
        .join(VERSIONS, VERSIONS.c.version == DEVICE_CONFIG.c.desired_version)
        .where(DEVICE_CONFIG.c.desired_version > DEVICE_CONFIG.c.sent_version)
        .limit(limit)
    ).all()
    return [dict(r._mapping) for r in rows]


def mark_sent(conn: Connection, device: str, version: int) -> None:
    """Remember that ``version`` went to ``device`` (its next ``get`` says what it has)."""
    conn.execute(
        update(DEVICE_CONFIG)
        .where(DEVICE_CONFIG.c.device_id == device, DEVICE_CONFIG.c.sent_version < version)
        .values(sent_version=version)
    )


def status(conn: Connection, devices: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Each device's desired and applied version and its last report (drift: applied != desired)."""
    query = select(DEVICE_CONFIG).order_by(DEVICE_CONFIG.c.device_id)
    if devices is not None:
        query = query.where(DEVICE_CONFIG.c.device_id.in_(devices))
    out = []
    for r in conn.execute(query):
        out.append(
            {
                "device": r.device_id,
                "desired_version": r.desired_version,
                "applied_version": r.applied_version,
                "status": r.status,
                "error": r.error,
                "reported_at": r.reported_at,
                "drift": r.desired_version is not None and r.applied_version != r.desired_version,
            }
        )
    return out


def rollouts(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The newest rollouts first."""
    rows = conn.execute(select(ROLLOUTS).order_by(ROLLOUTS.c.id.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]
