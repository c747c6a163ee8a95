"""Periodic sends of the notifier: reminders of what still fires, outage digests, fleet summaries.

A mixin of :class:`edgemon_server.notify.Notifier` (the outbox and its claims live there); each
method sends what is due for one receiver and returns how many messages went.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, tuple_, update

from edgemon_server import alert_state
from edgemon_server.db import Base
from edgemon_server.notify_config import NotifyConfig, Route
from edgemon_server.notify_deliver import deliver
from edgemon_server.notify_messages import digest, fleet_summary, repeat_message
from edgemon_server.silences import active_silences, matches

log = logging.getLogger(__name__)

EVENTS = Base.metadata.tables["alert_events"]
OUTBOX = Base.metadata.tables["notifications"]
GROUPS = Base.metadata.tables["notify_groups"]
STATE = Base.metadata.tables["alert_state"]

DIGEST_QUIET_S = 30.0
"""A device's late transitions go out as a digest once none arrived for this long (its backlog is in)."""

RETRY_FIRST, RETRY_MAX, GIVE_UP_S = 5.0, 600.0, 86400.0
"""Back-off of a failed send: 5 s, doubling, at most 10 minutes; given up after a day."""

FIELD = {"device": "device_id", "rule": "rule", "severity": "severity", "key": "key"}
"""A ``group_by`` label and the event's column it reads."""


def group_of(index: int, route: Route, event: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The group an event falls in on route ``index``: a short key, and its labels (``group_by`` values)."""
    labels = {label: str(event[FIELD[label]]) for label in route.group_by}
    digest_ = hashlib.blake2b("\x1f".join(f"{k}={v}" for k, v in labels.items()).encode(), digest_size=8)
    return f"r{index}:{digest_.hexdigest()}", labels


def route_of(config: NotifyConfig, group_key: str) -> tuple[int, Route] | None:
    """The route a group key was made on (``None`` when the configuration no longer has it)."""
    head = group_key.partition(":")[0]
    index = int(head[1:]) if head[1:].isdigit() else -1
    return (index, config.routes[index]) if 0 <= index < len(config.routes) else None


class TakenError(Exception):
    """Raised inside a claim's transaction to roll it back: another notifier took some of the rows."""


class PeriodicSends:
    """Reminders, digests and summaries (needs ``engine``, ``config`` and ``clock``)."""

    engine: Engine
    config: NotifyConfig
    clock: Callable[[], float]

    def send_repeats(self, receiver: str) -> int:
        """Remind this receiver of groups whose alerts still fire ``repeat_interval`` after their last send."""
        target = self.config.receivers[receiver]
        now = self.clock()
        now_ms = round(now * 1000)
        with self.engine.connect() as conn:
            groups = conn.execute(
                select(GROUPS).where(GROUPS.c.receiver == receiver, GROUPS.c.repeat_at <= now_ms)
            ).all()
        sent = 0
        for group in groups:
            found = route_of(self.config, group.group_key)
            with self.engine.begin() as conn:
                firing = still_firing(conn, receiver, group.group_key) if found else []
                mine = GROUPS.c.id == group.id, GROUPS.c.repeat_at == group.repeat_at
                if found is None or not firing:
                    conn.execute(delete(GROUPS).where(*mine))  # the route is gone, or nothing fires: closed
                    continue
                index, route = found
                silences = active_silences(conn, now_ms)
                silent = alert_state.silent_devices(conn, sorted({i["device_id"] for i in firing}))
                items = [
                    i
                    for i in firing
                    if not any(matches(s["matchers"], i) for s in silences)
                    and (i["device_id"] not in silent or i["rule"] == alert_state.SILENT_RULE)
                ]
                muted = any(self.config.time_intervals[m].contains(now) for m in route.mute_time_intervals)
                if not items or muted:  # silenced or muted for now: ask again later
                    conn.execute(update(GROUPS).where(*mine).values(repeat_at=now_ms + 60_000))
                    continue
                lease = now_ms + round((target.timeout + 30) * 1000)
                if conn.execute(update(GROUPS).where(*mine).values(repeat_at=lease)).rowcount != 1:
                    continue  # another notifier has it
            key = f"repeat-{group.id}-{group.last_sent}-{group.repeats + 1}"
            try:
                deliver(target, repeat_message(items, group_of(index, route, items[0])[1], key))
            except Exception as exc:  # noqa: BLE001 - the reminder is tried again in a minute
                with self.engine.begin() as conn:
                    conn.execute(update(GROUPS).where(GROUPS.c.id == group.id).values(repeat_at=now_ms + 60_000))
                log.warning(
                    "reminder not delivered; retrying in a minute",
                    extra={"device": items[0]["device_id"], "reason": f"{receiver}: {type(exc).__name__}: {exc}"},
                )
                continue
            with self.engine.begin() as conn:
                conn.execute(
                    update(GROUPS)
                    .where(GROUPS.c.id == group.id)
                    .values(
                        last_sent=now_ms,
                        repeats=group.repeats + 1,
                        repeat_at=now_ms + round(route.repeat_interval * 1000),
                    )
                )
            sent += 1
        return sent

    # digests and summaries --------------------------------------------------------------------

    def send_digests(self, receiver: str) -> int:
        """Send late transitions (an outage's backlog) as one message per device once they stopped coming."""
        target = self.config.receivers[receiver]
        now = self.clock()
        now_ms = round(now * 1000)
        with self.engine.connect() as conn:
            rows = [
                dict(r._mapping)
                for r in conn.execute(
                    select(OUTBOX, EVENTS)
                    .join(EVENTS, EVENTS.c.id == OUTBOX.c.event_id)
                    .where(OUTBOX.c.receiver == receiver, OUTBOX.c.status == "digest")
                    .order_by(OUTBOX.c.id)
                )
            ]
        by_device: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_device.setdefault(row["device_id"], []).append(row)
        delivered = 0
        for device, items in by_device.items():
            if (
                now_ms - max(i["created"] for i in items) < DIGEST_QUIET_S * 1000
                or min(i["next_at"] for i in items) > now_ms
            ):
                continue  # still arriving, or backing off
            ids = [i["id"] for i in items]
            try:
                with self.engine.begin() as conn:
                    claimed = conn.execute(
                        update(OUTBOX).where(OUTBOX.c.id.in_(ids), OUTBOX.c.status == "digest").values(status="sending")
                    ).rowcount
                    if claimed != len(ids):
                        raise TakenError
            except TakenError:
                continue  # another notifier took some of them
            try:
                deliver(target, digest(device, items))
            except Exception as exc:  # noqa: BLE001 - back to the digest, retried later
                delay = min(RETRY_MAX, RETRY_FIRST * 2 ** items[0]["attempts"])
                with self.engine.begin() as conn:
                    conn.execute(
                        update(OUTBOX)
                        .where(OUTBOX.c.id.in_(ids))
                        .values(
                            status="digest",
                            attempts=items[0]["attempts"] + 1,
                            next_at=round((now + delay) * 1000),
                            last_error=f"{type(exc).__name__}: {exc}"[:500],
                        )
                    )
                continue
            with self.engine.begin() as conn:
                conn.execute(update(OUTBOX).where(OUTBOX.c.id.in_(ids)).values(status="sent", sent_at=now_ms))
            delivered += 1
        return delivered

    def send_summaries(self, receiver: str) -> int:
        """Send this receiver's queued summaries (each covers the period before it was queued)."""
        target = self.config.receivers[receiver]
        now = self.clock()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(OUTBOX).where(
                    OUTBOX.c.receiver == receiver,
                    OUTBOX.c.status.in_(("summary", "sending")),
                    OUTBOX.c.event_id < 0,
                    OUTBOX.c.next_at <= round(now * 1000),
                )
            ).all()
        sent = 0
        for row in rows:
            with self.engine.begin() as conn:
                claimed = conn.execute(
                    update(OUTBOX)
                    .where(OUTBOX.c.id == row.id, OUTBOX.c.status == row.status, OUTBOX.c.next_at == row.next_at)
                    .values(status="sending", next_at=round((now + target.timeout + 30) * 1000))
                ).rowcount
                if claimed != 1:
                    continue
                body = fleet_summary(conn, row.created - round(self.config.summary_every * 1000), row.created, row.id)
            try:
                deliver(target, body)
            except Exception as exc:  # noqa: BLE001 - back to the queue with back-off
                delay = min(RETRY_MAX, RETRY_FIRST * 2**row.attempts)
                with self.engine.begin() as conn:
                    conn.execute(
                        update(OUTBOX)
                        .where(OUTBOX.c.id == row.id)
                        .values(
                            status="summary",
                            attempts=row.attempts + 1,
                            next_at=round((now + delay) * 1000),
                            last_error=f"{type(exc).__name__}: {exc}"[:500],
                        )
                    )
                continue
            with self.engine.begin() as conn:
                conn.execute(
                    update(OUTBOX).where(OUTBOX.c.id == row.id).values(status="sent", sent_at=round(now * 1000))
                )
            sent += 1
        return sent


def still_firing(conn: Connection, receiver: str, key: str) -> list[dict[str, Any]]:
    """The alerts of a group whose last notification to ``receiver`` said firing, and that fire still."""
    rows = conn.execute(
        select(EVENTS)
        .join(OUTBOX, EVENTS.c.id == OUTBOX.c.event_id)
        .where(OUTBOX.c.receiver == receiver, OUTBOX.c.group_key == key, OUTBOX.c.status == "sent")
        .order_by(OUTBOX.c.id.desc())
        .limit(1000)
    ).all()
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        latest.setdefault((row.device_id, row.fingerprint), dict(row._mapping))
    told = [e for e in latest.values() if e["state"] == "firing"]
    if not told:
        return []
    now_firing = set(
        conn.execute(
            select(STATE.c.device_id, STATE.c.fingerprint).where(
                tuple_(STATE.c.device_id, STATE.c.fingerprint).in_([(e["device_id"], e["fingerprint"]) for e in told]),
                STATE.c.state == "firing",
            )
        ).all()
    )
    return sorted((e for e in told if (e["device_id"], e["fingerprint"]) in now_firing), key=lambda e: e["id"])
