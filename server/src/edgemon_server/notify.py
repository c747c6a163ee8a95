"""Notifications: alert events to receivers, exactly once per (event, receiver), through an outbox.

Flow::

    alert_events --enqueue: routes, silences, mutes, groups--> notifications (one row per event and receiver)
    pending rows of one (receiver, group) --flush when the group is due: one message--> sent
    notify_groups --what still fires, every repeat_interval--> a reminder
    late rows of one device --once its backlog stopped coming--> one digest
    [notify.summary] --once per period--> the fleet summary

The outbox is a table, so a restart neither loses nor repeats a notification: rows are ``pending``
(or ``sending``, claimed together as one *batch* by one sender for the length of a lease: two
collectors never send them both) until their receiver answered 2xx. A send carries its batch's key
(``Idempotency-Key``, ``id`` in the body, a mail's ``Message-ID``), and a retry sends the same batch
with the same key, so a receiver can drop the one repeat a kill between its answer and our commit can
cause. A receiver that is down, slow or answers 500 delays only its own rows (retried at 5 s,
doubling to 10 minutes, given up after a day); ingest and the other receivers go on.

Grouping follows Alertmanager: alerts with the same values of a route's ``group_by`` form a group; a
new group waits ``group_wait`` for more of its alerts, then sends what changed at most every
``group_interval``, and reminds of what still fires every ``repeat_interval``; a group whose alerts
all resolved is closed. A silenced event is recorded as ``silenced``, not sent (every silence has an
end); a device that is silent (``device_silent`` firing) has its other alerts held back: the silence
is the news, not its stale alerts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, update

from edgemon_server import alert_state, queries
from edgemon_server.db import Base, insert_for
from edgemon_server.notify_config import NotifyConfig, Receiver, Route
from edgemon_server.notify_deliver import deliver
from edgemon_server.notify_messages import group_message
from edgemon_server.notify_periodic import (
    GIVE_UP_S,
    RETRY_FIRST,
    RETRY_MAX,
    PeriodicSends,
    TakenError,
    group_of,
    route_of,
    still_firing,
)
from edgemon_server.silences import active_silences, matches

log = logging.getLogger(__name__)

EVENTS = Base.metadata.tables["alert_events"]
OUTBOX = Base.metadata.tables["notifications"]
GROUPS = Base.metadata.tables["notify_groups"]
STATE = Base.metadata.tables["alert_state"]


class Notifier(PeriodicSends):
    """Enqueues new alert events and sends the outbox; :meth:`start` and :meth:`stop` it."""

    def __init__(self, engine: Engine, config: NotifyConfig, clock: Callable[[], float] = time.time) -> None:
        """Nothing runs until :meth:`start` (tests call :meth:`enqueue` and :meth:`send` themselves)."""
        self.engine = engine
        self.config = config
        self.clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.sent = 0
        self.failed = 0

    # enqueue ------------------------------------------------------------------------------

    def enqueue(self) -> int:
        """Turn alert events not yet considered into outbox rows; returns how many are to be sent."""
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
                conn.execute(OUTBOX.insert().values(self._row(latest, "", "unrouted", now_ms)))
                return 0
            events = [
                dict(r._mapping)
                for r in conn.execute(select(EVENTS).where(EVENTS.c.id > done).order_by(EVENTS.c.id).limit(5000))
            ]
            if not events:
                return 0
            silences = active_silences(conn, now_ms)
            devices = sorted({e["device_id"] for e in events})
            silent = alert_state.silent_devices(conn, devices)
            tags = queries.device_tags(conn, devices)
            for event in events:
                event["tags"] = tags.get(event["device_id"], {})  # routes and silences may match on them
            due: dict[tuple[str, str], int] = {}
            rows = []
            for event in events:
                late = now_ms - event["at"] > self.config.late_after * 1000
                chosen = self._receivers_for(event, now_ms / 1000)
                for receiver, (index, route, muted_now) in chosen.items():
                    silenced = any(matches(s["matchers"], event) for s in silences) or (
                        event["device_id"] in silent and event["rule"] != alert_state.SILENT_RULE
                    )
                    status = "silenced" if silenced else "muted" if muted_now else "digest" if late else "pending"
                    row = self._row(event["id"], receiver, status, now_ms)
                    if status == "pending":
                        row["group_key"] = group_of(index, route, event)[0]
                        row["next_at"] = self._group_due(conn, receiver, row["group_key"], route, now_ms, due)
                    rows.append(row)
                if not chosen:  # no route wants it: a placeholder keeps the cursor (max event_id) moving
                    rows.append(self._row(event["id"], "", "unrouted", now_ms))
            # Another collector's notifier may have queued the same events: each (event, receiver) once.
            conn.execute(insert_for(self.engine.dialect.name)(OUTBOX).on_conflict_do_nothing(), rows)
        return sum(1 for r in rows if r["status"] == "pending")

    @staticmethod
    def _row(event_id: int, receiver: str, status: str, now_ms: int) -> dict[str, Any]:
        return {
            "event_id": event_id,
            "receiver": receiver,
            "status": status,
            "attempts": 0,
            "next_at": now_ms,
            "created": now_ms,
            "group_key": None,
            "batch": None,
        }

    def _receivers_for(self, event: Mapping[str, Any], now: float) -> dict[str, tuple[int, Route, bool]]:
        """The receivers the routes choose, each with the first route choosing it (its grouping applies).

        The flag says whether every route choosing the receiver is muted now.
        """
        out: dict[str, tuple[int, Route, bool]] = {}
        for index, route in enumerate(self.config.routes):
            if event["state"] == "resolved" and not route.send_resolved:
                continue
            if matches(route.match, event):
                muted = any(self.config.time_intervals[m].contains(now) for m in route.mute_time_intervals)
                for r in route.receivers:
                    first = out.get(r)
                    out[r] = (index, route, muted) if first is None else (first[0], first[1], first[2] and muted)
        return out

    def _group_due(
        self, conn: Connection, receiver: str, key: str, route: Route, now_ms: int, due: dict[tuple[str, str], int]
    ) -> int:
        """When a new row of this group is sent.

        ``group_wait`` after a new group began, else at the group's next ``group_interval`` after its
        last notification.
        """
        if (receiver, key) not in due:
            last = conn.execute(
                select(GROUPS.c.last_sent).where(GROUPS.c.receiver == receiver, GROUPS.c.group_key == key)
            ).scalar()
            if last is None:
                due[(receiver, key)] = now_ms + round(route.group_wait * 1000)
            else:
                due[(receiver, key)] = max(now_ms, last + round(route.group_interval * 1000))
        return due[(receiver, key)]

    def enqueue_summary(self) -> int:
        """Queue this period's fleet summary for each of its receivers (once per period, whatever restarts)."""
        if not self.config.summary_every or not self.config.summary_receivers:
            return 0
        now_ms = round(self.clock() * 1000)
        period = int(now_ms // (self.config.summary_every * 1000))
        rows = [self._row(-period, r, "summary", now_ms) for r in self.config.summary_receivers]
        with self.engine.begin() as conn:  # RETURNING: what was inserted (a driver's rowcount may not say)
            done = conn.execute(
                insert_for(self.engine.dialect.name)(OUTBOX).on_conflict_do_nothing().returning(OUTBOX.c.id), rows
            )
            return len(done.all())

    # send -----------------------------------------------------------------------------------

    def send(self, receiver: str) -> int:
        """Everything due for one receiver: group flushes, digests, reminders, summaries; how many went."""
        return (
            self.send_due(receiver)
            + self.send_digests(receiver)
            + self.send_repeats(receiver)
            + self.send_summaries(receiver)
        )

    def send_due(self, receiver: str) -> int:
        """Flush this receiver's due groups, oldest first, one message each; returns how many went."""
        target = self.config.receivers[receiver]
        now = self.clock()
        now_ms = round(now * 1000)
        with self.engine.connect() as conn:
            due = conn.execute(
                select(OUTBOX)
                .where(
                    OUTBOX.c.receiver == receiver,
                    OUTBOX.c.status.in_(("pending", "sending")),  # "sending" past its lease: its sender died
                    OUTBOX.c.next_at <= now_ms,
                )
                .order_by(OUTBOX.c.id)
                .limit(100)
            ).all()
        delivered = 0
        seen: set[int] = set()
        for row in due:
            if row.id in seen:
                continue
            items = self._claim(dict(row._mapping), target, now)
            if not items:
                continue  # another notifier (a second collector) has it
            seen.update(i["id"] for i in items)
            batch = items[0]["batch"]
            found = route_of(self.config, items[0]["group_key"] or "")
            labels = group_of(*found, items[0])[1] if found else {}
            before: list[dict[str, Any]] = []
            if items[0]["group_key"]:
                with self.engine.connect() as conn:
                    before = still_firing(conn, receiver, items[0]["group_key"])
            try:
                deliver(target, group_message(items, labels, batch, before))
            except Exception as exc:  # noqa: BLE001 - whatever the receiver does, its rows are retried
                self._failed(items, f"{type(exc).__name__}: {exc}"[:500], now)
                break  # keep the order: this receiver's later rows wait for these
            with self.engine.begin() as conn:
                conn.execute(
                    update(OUTBOX)
                    .where(OUTBOX.c.batch == batch, OUTBOX.c.receiver == receiver)
                    .values(status="sent", sent_at=round(self.clock() * 1000), attempts=items[0]["attempts"] + 1)
                )
                if found and items[0]["group_key"]:
                    self._flushed(conn, receiver, items[0]["group_key"], found[1], now_ms)
            delivered += 1
            self.sent += 1
        return delivered

    def _claim(self, note: dict[str, Any], target: Receiver, now: float) -> list[dict[str, Any]]:
        """Take the rows that go out with ``note`` (its batch, or its group's pending rows) for one send.

        They become ``sending`` with a lease past the receiver's timeout, all in one statement, so
        another notifier takes all of them or none. Returns them with their events, oldest first.
        """
        try:
            return self._take(note, round((now + target.timeout + 30) * 1000))
        except TakenError:
            return []

    def _take(self, note: dict[str, Any], lease: int) -> list[dict[str, Any]]:
        receiver = note["receiver"]
        with self.engine.begin() as conn:
            if note["batch"] is not None:  # sent (or tried) before: the same rows again, under the same key
                batch = note["batch"]
                claimed = conn.execute(
                    update(OUTBOX)
                    .where(
                        OUTBOX.c.receiver == receiver,
                        OUTBOX.c.batch == batch,
                        OUTBOX.c.status == note["status"],
                        OUTBOX.c.next_at == note["next_at"],
                    )
                    .values(status="sending", next_at=lease)
                ).rowcount
                if claimed == 0:
                    return []
            else:
                mates = select(OUTBOX.c.id).where(
                    OUTBOX.c.receiver == receiver,
                    OUTBOX.c.status == "pending",
                    OUTBOX.c.batch.is_(None),
                )
                if note["group_key"] is None:
                    mates = mates.where(OUTBOX.c.id == note["id"])
                else:
                    mates = mates.where(OUTBOX.c.group_key == note["group_key"])
                ids = [r[0] for r in conn.execute(mates.order_by(OUTBOX.c.id).limit(500))]
                if note["id"] not in ids:
                    return []
                batch = min(ids)
                claimed = conn.execute(
                    update(OUTBOX)
                    .where(OUTBOX.c.id.in_(ids), OUTBOX.c.status == "pending", OUTBOX.c.batch.is_(None))
                    .values(status="sending", next_at=lease, batch=batch)
                ).rowcount
                if claimed != len(ids):
                    raise TakenError  # another notifier took some of them: it sends them
            items = conn.execute(
                select(OUTBOX, EVENTS)
                .join(EVENTS, EVENTS.c.id == OUTBOX.c.event_id)
                .where(OUTBOX.c.receiver == receiver, OUTBOX.c.batch == batch)
                .order_by(OUTBOX.c.id)
            ).all()
            return [dict(i._mapping) for i in items]

    def _failed(self, items: Sequence[Mapping[str, Any]], reason: str, now: float) -> None:
        first = items[0]
        attempts = first["attempts"] + 1
        give_up = now * 1000 - first["created"] > GIVE_UP_S * 1000
        delay = min(RETRY_MAX, RETRY_FIRST * 2 ** (attempts - 1))
        with self.engine.begin() as conn:
            conn.execute(
                update(OUTBOX)
                .where(OUTBOX.c.receiver == first["receiver"], OUTBOX.c.batch == first["batch"])
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
            extra={"device": first["device_id"], "rule": first["rule"], "reason": f"{first['receiver']}: {reason}"},
        )

    # groups and reminders -------------------------------------------------------------------

    def _flushed(self, conn: Connection, receiver: str, key: str, route: Route, now_ms: int) -> None:
        """After a group's notification: remember when (for ``group_interval``).

        A group none of whose alerts fires any more is closed: its next alert starts a new one.
        """
        if not still_firing(conn, receiver, key):
            conn.execute(delete(GROUPS).where(GROUPS.c.receiver == receiver, GROUPS.c.group_key == key))
            return
        values = {"last_sent": now_ms, "repeat_at": now_ms + round(route.repeat_interval * 1000), "repeats": 0}
        insert = insert_for(self.engine.dialect.name)(GROUPS).values(receiver=receiver, group_key=key, **values)
        conn.execute(insert.on_conflict_do_update(index_elements=["receiver", "group_key"], set_=values))

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
                    self.send(receiver)
            except Exception as exc:  # noqa: BLE001 - a database hiccup: the next second tries again
                log.warning("notifications: will retry", extra={"reason": f"{type(exc).__name__}: {exc}"[:300]})

    def stop(self) -> None:
        """Stop the threads (a send in flight finishes within its timeout)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
