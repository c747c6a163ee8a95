"""Silences: alerts their matchers match are not notified until the silence ends (every silence ends).

A matcher is a glob on one of the alert's fields (``device``, ``rule``, ``severity``, ``key``); all of a
silence's matchers must match. ``edgemon-server silence add|list|expire`` and ``GET /api/v1/silences``
are built on these functions.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, select, update

from edgemon_server.db import Base

SILENCES = Base.metadata.tables["silences"]
FIELDS = ("device", "rule", "severity", "key")


def matches(matchers: Mapping[str, str], event: Mapping[str, Any]) -> bool:
    """Every matcher's glob matches the event's field (device, rule, severity, key, or ``tag.<name>``).

    A ``tag.<name>`` matcher needs the event's device to have that tag (``event["tags"]``).
    """
    fields = {"device": event["device_id"], "rule": event["rule"], "severity": event["severity"], "key": event["key"]}
    tags = event.get("tags") or {}
    for name, glob in matchers.items():
        if name.startswith("tag."):
            if name[4:] not in tags or not fnmatch.fnmatchcase(tags[name[4:]], glob):
                return False
        elif not fnmatch.fnmatchcase(str(fields.get(name, "")), glob):
            return False
    return True


def add_silence(engine: Engine, matchers: Mapping[str, str], ends: float, comment: str, now: float) -> int:
    """Store a silence; returns its id.

    Raises:
        ValueError: no matcher, an unknown field, or an end not in the future.
    """
    if not matchers:
        raise ValueError("a silence needs at least one --match (it would mute everything)")
    unknown = {m for m in matchers if m not in FIELDS and not m.startswith("tag.")}
    if unknown:
        raise ValueError(f"unknown match field {sorted(unknown)[0]!r} (device, rule, severity, key, tag.<name>)")
    if ends <= now:
        raise ValueError("--until must be in the future: every silence ends")
    with engine.begin() as conn:
        row = conn.execute(
            SILENCES.insert().values(
                matchers=dict(matchers),
                starts=round(now * 1000),
                ends=round(ends * 1000),
                comment=comment,
                created=round(now * 1000),
            )
        )
        key = row.inserted_primary_key
        assert key is not None
        return int(key[0])


def expire_silence(engine: Engine, silence_id: int, now: float) -> bool:
    """End a silence now; ``False`` when there is no such active silence."""
    with engine.begin() as conn:
        done = conn.execute(
            update(SILENCES)
            .where(SILENCES.c.id == silence_id, SILENCES.c.ends > round(now * 1000))
            .values(ends=round(now * 1000))
        )
        return done.rowcount == 1


def active_silences(conn: Any, now_ms: int) -> list[dict[str, Any]]:
    """Silences in force now."""
    rows = conn.execute(
        select(SILENCES).where(SILENCES.c.starts <= now_ms, SILENCES.c.ends > now_ms).order_by(SILENCES.c.id)
    )
    return [dict(r._mapping) for r in rows]
