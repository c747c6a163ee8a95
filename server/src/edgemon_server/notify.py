"""Notifications: alert events to receivers, exactly once per (event, receiver), through an outbox.

Flow::

    alert_events --(enqueue: routes, silences)--> notifications (outbox row: pending | silenced)
    notifications --(one sender thread per receiver: POST with a timeout, back-off)--> sent | failed

The outbox is a table, so a restart neither loses nor repeats a notification: a row is ``pending``
(or ``sending``, claimed by one sender for the length of a lease: two collectors never send it both)
until its receiver answered 2xx, and the key of each send (``Idempotency-Key``, and ``id`` in the
body) lets a receiver drop the one repeat a kill between its answer and our commit can cause. A
receiver that is down, slow or answers 500 only delays its own rows (retried at 5 s, doubling to
10 minutes, given up after a day); ingest and the other receivers go on. A silenced event is recorded
as ``silenced``, not sent; every silence has an end. A device that is silent (``device_silent``
firing) has its other alerts held back: the silence is the news, not its stale alerts.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from edgemon_server import alert_state
from edgemon_server.db import Base
from edgemon_server.notify_config import NotifyConfig, Receiver, load_apprise

log = logging.getLogger(__name__)

EVENTS = Base.metadata.tables["alert_events"]
OUTBOX = Base.metadata.tables["notifications"]
SILENCES = Base.metadata.tables["silences"]
STATE = Base.metadata.tables["alert_state"]

DIGEST_QUIET_S = 30.0
"""A device's late transitions go out as a digest once none arrived for this long (its backlog is in)."""

RETRY_FIRST, RETRY_MAX, GIVE_UP_S = 5.0, 600.0, 86400.0
"""Back-off of a failed send: 5 s, doubling, at most 10 minutes; given up after a day."""


# -- silences -------------------------------------------------------------------------------


def matches(matchers: Mapping[str, str], event: Mapping[str, Any]) -> bool:
    """Every matcher's glob matches the event's field (device, rule, severity, key)."""
    fields = {"device": event["device_id"], "rule": event["rule"], "severity": event["severity"], "key": event["key"]}
    return all(fnmatch.fnmatchcase(str(fields.get(name, "")), glob) for name, glob in matchers.items())


def add_silence(engine: Engine, matchers: Mapping[str, str], ends: float, comment: str, now: float) -> int:
    """Store a silence; returns its id.

    Raises:
        ValueError: no matcher, an unknown field, or an end not in the future.
    """
    if not matchers:
        raise ValueError("a silence needs at least one --match (it would mute everything)")
    unknown = set(matchers) - {"device", "rule", "severity", "key"}
    if unknown:
        raise ValueError(f"unknown match field {sorted(unknown)[0]!r} (device, rule, severity, key)")
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


# -- the outbox -------------------------------------------------------------------------------


class Notifier:
    """Enqueues new alert events and sends the outbox; :meth:`start` and :meth:`stop` it."""

    def __init__(self, engine: Engine, config: NotifyConfig, clock: Callable[[], float] = time.time) -> None:
        """Nothing runs until :meth:`start` (tests call :meth:`enqueue` and :meth:`send_due` themselves)."""
        self.engine = engine
        self.config = config
        self.clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.sent = 0
        self.failed = 0

    # enqueue ------------------------------------------------------------------------------

    def enqueue_summary(self) -> int:
        """Queue this period's fleet summary for each of its receivers (once per period, whatever restarts)."""
        if not self.config.summary_every or not self.config.summary_receivers:
            return 0
        now_ms = round(self.clock() * 1000)
        period = int(now_ms // (self.config.summary_every * 1000))
        rows = [
            {
                "event_id": -period,
                "receiver": r,
                "status": "summary",
                "attempts": 0,
                "next_at": now_ms,
                "created": now_ms,
            }
            for r in self.config.summary_receivers
        ]
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        with self.engine.begin() as conn:  # RETURNING: what was inserted (a driver's rowcount may not say)
            done = conn.execute(insert(OUTBOX).on_conflict_do_nothing().returning(OUTBOX.c.id), rows).all()
        return len(done)

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

    def enqueue(self) -> int:
        """Turn alert events not yet considered into outbox rows; returns how many rows were added."""
        self.enqueue_summary()
        if not self.config.routes:
            return 0
        now_ms = round(self.clock() * 1000)
        with self.engine.begin() as conn:
            done = conn.execute(select(func.max(OUTBOX.c.event_id))).scalar()
            if done is None:
                # The first time notifications run: start from now. Months of history must not arrive
                # as a storm because someone just configured a receiver.
                latest = conn.execute(select(func.max(EVENTS.c.id))).scalar() or 0
                conn.execute(
                    OUTBOX.insert().values(
                        event_id=latest, receiver="", status="unrouted", attempts=0, next_at=now_ms, created=now_ms
                    )
                )
                return 0
            events = [
                dict(r._mapping)
                for r in conn.execute(select(EVENTS).where(EVENTS.c.id > done).order_by(EVENTS.c.id).limit(5000))
            ]
            if not events:
                return 0
            silences = active_silences(conn, now_ms)
            silent = alert_state.silent_devices(conn, sorted({e["device_id"] for e in events}))
            rows = []
            now = now_ms / 1000
            for event in events:
                late = now_ms - event["at"] > self.config.late_after * 1000
                for receiver, muted_now in self._receivers_for(event, now):
                    silenced = any(matches(s["matchers"], event) for s in silences) or (
                        event["device_id"] in silent and event["rule"] != alert_state.SILENT_RULE
                    )
                    status = "silenced" if silenced else "muted" if muted_now else "digest" if late else "pending"
                    rows.append(
                        {
                            "event_id": event["id"],
                            "receiver": receiver,
                            "status": status,
                            "attempts": 0,
                            "next_at": now_ms,
                            "created": now_ms,
                        }
                    )
                if not rows or rows[-1]["event_id"] != event["id"]:
                    # No route wants it: a placeholder keeps the cursor (max event_id) moving.
                    rows.append(
                        {
                            "event_id": event["id"],
                            "receiver": "",
                            "status": "unrouted",
                            "attempts": 0,
                            "next_at": now_ms,
                            "created": now_ms,
                        }
                    )
            # Another collector's notifier may have queued the same events: each (event, receiver) once.
            insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
            conn.execute(insert(OUTBOX).on_conflict_do_nothing(), rows)
        return sum(1 for r in rows if r["status"] == "pending")

    def _receivers_for(self, event: Mapping[str, Any], now: float) -> list[tuple[str, bool]]:
        """The receivers the routes choose, each with whether every route choosing it is muted now."""
        out: dict[str, bool] = {}
        for route in self.config.routes:
            if event["state"] == "resolved" and not route.send_resolved:
                continue
            if matches(route.match, event):
                muted = any(self.config.time_intervals[m].contains(now) for m in route.mute_time_intervals)
                for r in route.receivers:
                    out[r] = out.get(r, True) and muted
        return list(out.items())

    # send -----------------------------------------------------------------------------------

    def send_due(self, receiver: str) -> int:
        """Send this receiver's due rows, oldest first; returns how many were delivered."""
        target = self.config.receivers[receiver]
        now = self.clock()
        with self.engine.connect() as conn:
            due = conn.execute(
                select(OUTBOX, EVENTS)
                .join(EVENTS, EVENTS.c.id == OUTBOX.c.event_id)
                .where(
                    OUTBOX.c.receiver == receiver,
                    OUTBOX.c.status.in_(("pending", "sending")),  # "sending" past its lease: its sender died
                    OUTBOX.c.next_at <= round(now * 1000),
                )
                .order_by(OUTBOX.c.id)
                .limit(100)
            ).all()
        delivered = 0
        for row in due:
            note = dict(row._mapping)
            outbox_id = note["id"]
            if not self._claim(note, target, now):
                continue  # another notifier (a second collector) has it
            try:
                deliver(target, message(note, outbox_id))
            except Exception as exc:  # noqa: BLE001 - whatever the receiver does, its row is retried
                self._failed(note, outbox_id, f"{type(exc).__name__}: {exc}"[:500], now)
                break  # keep the order: this receiver's later rows wait for this one
            with self.engine.begin() as conn:
                conn.execute(
                    update(OUTBOX)
                    .where(OUTBOX.c.id == outbox_id)
                    .values(status="sent", sent_at=round(self.clock() * 1000), attempts=note["attempts"] + 1)
                )
            delivered += 1
            self.sent += 1
        return delivered

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
            with self.engine.begin() as conn:
                claimed = conn.execute(
                    update(OUTBOX).where(OUTBOX.c.id.in_(ids), OUTBOX.c.status == "digest").values(status="sending")
                ).rowcount
            if claimed != len(ids):
                continue  # another notifier took some of them
            body = digest(device, items)
            try:
                deliver(target, body)
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

    def _claim(self, note: Mapping[str, Any], target: Receiver, now: float) -> bool:
        """Take a row for one send: it becomes ``sending`` with a lease past the receiver's timeout."""
        lease = round((now + target.timeout + 30) * 1000)
        with self.engine.begin() as conn:
            done = conn.execute(
                update(OUTBOX)
                .where(
                    OUTBOX.c.id == note["id"], OUTBOX.c.status == note["status"], OUTBOX.c.next_at == note["next_at"]
                )
                .values(status="sending", next_at=lease)
            )
        return done.rowcount == 1

    def _failed(self, note: Mapping[str, Any], outbox_id: int, reason: str, now: float) -> None:
        attempts = note["attempts"] + 1
        give_up = now * 1000 - note["created"] > GIVE_UP_S * 1000
        delay = min(RETRY_MAX, RETRY_FIRST * 2 ** (attempts - 1))
        with self.engine.begin() as conn:
            conn.execute(
                update(OUTBOX)
                .where(OUTBOX.c.id == outbox_id)
                .values(
                    status="failed" if give_up else "pending",
                    attempts=attempts,
                    next_at=round((now + delay) * 1000),
                    last_error=reason,
                )
            )
        self.failed += 1
        level = logging.ERROR if give_up or attempts == 1 else logging.DEBUG
        log.log(
            level,
            "notification given up" if give_up else "notification not delivered; retrying with back-off",
            extra={"device": note["device_id"], "rule": note["rule"], "reason": f"{note['receiver']}: {reason}"},
        )

    # threads --------------------------------------------------------------------------------

    def start(self) -> None:
        """One enqueue thread, and one sender thread per receiver (a slow one delays only itself)."""
        if not self.config.routes and not self.config.summary_every:
            return
        self._threads = [threading.Thread(target=self._loop, args=(None,), name="edgemon-notify", daemon=True)]
        self._threads += [
            threading.Thread(target=self._loop, args=(name,), name=f"edgemon-notify-{name}", daemon=True)
            for name in self.config.receivers
        ]
        for thread in self._threads:
            thread.start()

    def _loop(self, receiver: str | None) -> None:
        while not self._stop.wait(1.0):
            try:
                if receiver is None:
                    self.enqueue()
                else:
                    self.send_due(receiver)
                    self.send_digests(receiver)
                    self.send_summaries(receiver)
            except Exception as exc:  # noqa: BLE001 - a database hiccup: the next second tries again
                log.warning("notifications: will retry", extra={"reason": f"{type(exc).__name__}: {exc}"[:300]})

    def stop(self) -> None:
        """Stop the threads (a send in flight finishes within its timeout)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


# -- receivers ---------------------------------------------------------------------------------


def message(note: Mapping[str, Any], key: int | str) -> dict[str, Any]:
    """The generic JSON body (documented in DESIGN.md): what happened, where, when, and a key."""
    return {
        "id": str(key),
        "device": note["device_id"],
        "rule": note["rule"],
        "key": note["key"],
        "severity": note["severity"],
        "state": note["state"],
        "at": alert_state_time(note["at"]),
        "value": note["value"],
        "message": note["message"],
    }


def alert_state_time(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC."""
    from edgemon_protocol.payload import utc_timestamp  # noqa: PLC0415

    return utc_timestamp(ms / 1000)


def text(body: Mapping[str, Any]) -> str:
    """One line for people (Slack, ntfy)."""
    icon = {"resolved": "resolved", "firing": "FIRING"}.get(body["state"], body["state"])
    return f"[{icon} {body['severity']}] {body['device']}: {body['rule']} on {body['key']}: {body['message']}"


def deliver(receiver: Receiver, body: Mapping[str, Any]) -> None:
    """Send one notification; raise on anything but a 2xx answer within the timeout."""
    headers = {"Idempotency-Key": str(body["id"]), "User-Agent": "edgemon-server"}
    if receiver.kind == "apprise":
        sender = load_apprise().Apprise()  # the optional extra (checked when the configuration was read)
        sender.add(receiver.url)
        if not sender.notify(title=f"edgemon: {body['rule']} {body['state']}", body=text(body)):
            raise OSError(f"apprise could not deliver to {urlsplit(receiver.url).scheme}://")
        return
    if receiver.kind == "slack":
        data = json.dumps({"text": text(body)}).encode()
        url, headers["Content-Type"] = receiver.url, "application/json"
    elif receiver.kind == "ntfy":
        parts = urlsplit(receiver.url)
        url = urlunsplit(("https" if parts.scheme == "ntfys" else "http", parts.netloc, parts.path, "", ""))
        data = text(body).encode()
        headers["Title"] = f"edgemon: {body['rule']} {body['state']}"
        headers["Priority"] = {"critical": "5", "warning": "4"}.get(str(body["severity"]), "3")
    else:
        data = json.dumps(body).encode()
        url, headers["Content-Type"] = receiver.url, "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=receiver.timeout) as response:
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status}")


def digest(device: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """One message for an outage's worth of transitions of one device (documented in DESIGN.md)."""
    transitions = [
        {
            "rule": i["rule"],
            "key": i["key"],
            "severity": i["severity"],
            "state": i["state"],
            "at": alert_state_time(i["at"]),
            "message": i["message"],
        }
        for i in sorted(items, key=lambda i: (i["at"], i["id"]))
    ]
    fired = sum(t["state"] == "firing" for t in transitions)
    resolved = sum(t["state"] == "resolved" for t in transitions)
    return {
        "id": f"digest-{items[0]['id']}-{items[-1]['id']}",
        "device": device,
        "rule": "digest",
        "key": device,
        "severity": max((t["severity"] for t in transitions), key=["info", "warning", "critical"].index),
        "state": "digest",
        "at": transitions[-1]["at"],
        "value": None,
        "message": f"while offline: {fired} fired, {resolved} resolved "
        f"({transitions[0]['at']} to {transitions[-1]['at']})",
        "transitions": transitions,
    }


def fleet_summary(conn: Any, start_ms: int, end_ms: int, key: int) -> dict[str, Any]:
    """The periodic summary: the fleet now, and what its alerts did in the period (documented in DESIGN.md)."""
    devices = alert_state.DEVICES
    total, received, span = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(devices.c.received), 0),
            func.coalesce(func.sum(devices.c.max_seq - devices.c.first_seq + 1), 0),
        )
    ).one()
    silent = len(alert_state.silent_devices(conn))
    counts = dict(
        conn.execute(
            select(EVENTS.c.state, func.count())
            .where(EVENTS.c.received >= start_ms, EVENTS.c.received < end_ms)
            .group_by(EVENTS.c.state)
        ).all()
    )
    firing = dict(
        conn.execute(
            select(STATE.c.severity, func.count()).where(STATE.c.state == "firing").group_by(STATE.c.severity)
        ).all()
    )
    top = conn.execute(
        select(STATE.c.device_id, func.count().label("n"))
        .where(STATE.c.state == "firing")
        .group_by(STATE.c.device_id)
        .order_by(func.count().desc(), STATE.c.device_id)
        .limit(5)
    ).all()
    received, span = int(received), int(span)  # SUM is a Decimal on PostgreSQL
    completeness = 100.0 * received / span if span else 100.0
    worst = next((s for s in ("critical", "warning", "info") if firing.get(s)), "info")
    return {
        "id": f"summary-{key}",
        "device": "fleet",
        "rule": "summary",
        "key": "fleet",
        "severity": worst,
        "state": "summary",
        "at": alert_state_time(end_ms),
        "value": None,
        "message": (
            f"{total} devices, {silent} silent; in the period {counts.get('firing', 0)} alerts fired and "
            f"{counts.get('resolved', 0)} resolved; firing now: {firing.get('critical', 0)} critical, "
            f"{firing.get('warning', 0)} warning; payloads complete: {completeness:.1f} %"
        ),
        "summary": {
            "from": alert_state_time(start_ms),
            "to": alert_state_time(end_ms),
            "devices": int(total),
            "silent": silent,
            "fired": int(counts.get("firing", 0)),
            "resolved": int(counts.get("resolved", 0)),
            "firing": {s: int(firing.get(s, 0)) for s in ("critical", "warning", "info")},
            "top_devices": [{"device": d, "firing": int(n)} for d, n in top],
            "payload_completeness_percent": round(completeness, 2),
        },
    }


def test_message(receiver: str) -> dict[str, Any]:
    """The body ``edgemon-server notify test`` sends."""
    return {
        "id": f"test-{int(time.time())}",
        "device": "edgemon-server",
        "rule": "notify_test",
        "key": receiver,
        "severity": "info",
        "state": "firing",
        "at": alert_state_time(round(time.time() * 1000)),
        "value": None,
        "message": f"a test message to receiver {receiver!r}",
    }
