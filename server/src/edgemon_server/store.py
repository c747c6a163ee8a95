"""Batched, idempotent writes of validated payloads, with SQLAlchemy Core.

One call of :meth:`Store.write` is one transaction for a batch of MQTT
messages. Valid payloads become rows of ``samples``; invalid ones rows of
``rejects``; a bad message never affects the others of its batch. Writes are
idempotent: ``payloads`` (device, seq, ts) is inserted with ``ON CONFLICT DO
NOTHING ... RETURNING``, and only the payloads it returns (the new ones) are
written as samples, themselves inserted with ``ON CONFLICT DO NOTHING``. A
broker redelivery or an agent replay is thus counted as a duplicate and stored
once.

The ingest path never builds ORM objects per sample (``add_all`` of ORM objects
runs at about 0.04x of the driver's speed); the ORM models only define the schema.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Connection, Engine, bindparam, case, func, select, update
from sqlalchemy.exc import OperationalError

from edgemon_protocol import topics
from edgemon_protocol.payload import MAX_SEQ
from edgemon_server import alert_state, fleet_config, rollups
from edgemon_server.db import Base, insert_for
from edgemon_server.gaps import GapTracker
from edgemon_server.validate import (
    Accepted,
    Described,
    Limits,
    RejectedError,
    device_of,
    escape,
    parse,
    parse_config,
    parse_meta,
    parse_transition,
)

log = logging.getLogger(__name__)

DEVICES = Base.metadata.tables["devices"]
SERIES = Base.metadata.tables["series"]
SAMPLES = Base.metadata.tables["samples"]
PAYLOADS = Base.metadata.tables["payloads"]
REJECTS = Base.metadata.tables["rejects"]
REJECT_LOGS = 20
"""Log lines about one device's rejects per minute at most (the rest are counted, then summarised)."""
REJECTS_KEEP_DAYS = 7.0
"""Dead letters are kept this long (enough to find and fix the sender)."""
REJECTS_PER_DEVICE = 1000
"""Dead letters kept per device at most (the newest): one device cannot fill the database with garbage."""
COLLECTORS = Base.metadata.tables["collectors"]
META = Base.metadata.tables["metric_meta"]
META_SUFFIX = "/" + topics.META
ALERTS_SUFFIX = "/" + topics.ALERTS
CONFIG_SUFFIX = "/" + topics.CONFIG
KEEP_BYTES = 1024
"""How much of a rejected payload the dead-letter table keeps."""


@dataclass
class Message:
    """One MQTT message as received."""

    topic: str
    body: bytes
    received: float
    ack: Any = None
    """awscrt's acknowledgement handle (QoS 1), sent back only after the commit."""


@dataclass
class Seen:
    """A seq of a device that arrived (stored or rejected)."""

    device_id: str
    seq: int


def rejected_seq(msg: Message) -> int | None:
    """The ``seq`` of a rejected message, when its JSON has a plausible one (best effort, never raises)."""
    if len(msg.body) > 1024 * 1024:
        return None
    try:
        doc = json.loads(msg.body)
    except (ValueError, RecursionError):
        return None
    seq = doc.get("seq") if isinstance(doc, dict) else None
    if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= MAX_SEQ:
        return seq
    return None


@dataclass
class Result:
    """What one batch did."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    samples: int = 0
    described: int = 0
    """Metric metadata documents stored."""
    alert_events: int = 0
    """Alert transitions stored (from the payloads' active sets)."""

    def __iadd__(self, other: Result) -> Result:
        self.described += other.described
        self.alert_events += other.alert_events
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.samples += other.samples
        return self


class Store:
    """Writes batches of messages; keeps per-process caches of series ids and attributes."""

    def __init__(self, engine: Engine, limits: Limits | None = None, gaps: GapTracker | None = None) -> None:
        """Bind to ``engine`` (already migrated)."""
        self.engine = engine
        self.limits = limits or Limits()
        self.gaps = gaps
        self._insert = insert_for(engine.dialect.name)
        self._series: dict[tuple[str, str], int] = {}
        self.max_cached_series = 1_000_000
        self._attrs: dict[str, dict[str, str]] = {}
        self._devices: set[str] = set()
        self._reject_logs: dict[str, tuple[float, int, int]] = {}
        self.backlog_alert = alert_state.BACKLOG_DEFAULT
        """Payloads waiting on a device that raise ``send_backlog`` (0: off; ``server.backlog_alert``)."""

    def write(self, messages: Sequence[Message], now: float | None = None) -> Result:
        """Validate and store ``messages`` in one transaction; returns the counts.

        If the database refuses the batch for a reason other than being
        unavailable, the messages are written one by one so that only the
        offending one ends in ``rejects`` (with the database's error).

        Raises:
            OperationalError: the database is unavailable; nothing was committed.
        """
        now = time.time() if now is None else now
        accepted: list[Accepted] = []
        described: list[Described] = []
        transitions: list[dict[str, Any]] = []
        configs: list[tuple[str, dict[str, Any]]] = []
        rejects: list[tuple[Message, str]] = []
        for msg in messages:
            try:
                if msg.topic.endswith(CONFIG_SUFFIX):
                    configs.append(parse_config(msg.topic, msg.body))
                    continue
                if msg.topic.endswith(META_SUFFIX):
                    described.append(parse_meta(msg.topic, msg.body, self.limits, now))
                    continue
                if msg.topic.endswith(ALERTS_SUFFIX):
                    transitions.append(parse_transition(msg.topic, msg.body, self.limits, now))
                    continue
                accepted.append(parse(msg.topic, msg.body, self.limits, now))
            except RejectedError as exc:
                rejects.append((msg, escape(exc.reason)))
            except Exception as exc:
                reason = escape(f"validation failed unexpectedly: {type(exc).__name__}: {exc}")
                log.error("validation error", extra={"topic": escape(msg.topic, 200), "reason": reason}, exc_info=True)
                rejects.append((msg, reason))
        try:
            result = self._transaction(accepted, rejects, now, described, transitions, configs)
        except OperationalError:
            self._forget()
            raise
        except Exception as exc:  # noqa: BLE001 - DBAPIError, or what a driver raises unwrapped for one value
            self._forget()
            if len(messages) == 1:
                orig = getattr(exc, "orig", None) or exc
                reason = escape(f"database refused it: {type(orig).__name__}: {str(orig).splitlines()[0][:300]}")
                try:
                    result = self._transaction([], [(messages[0], reason)], now)
                except OperationalError:
                    raise
                except Exception:
                    log.error("reject stored without its payload", extra={"reason": reason}, exc_info=True)
                    bare = Message(escape(messages[0].topic, 200), b"", messages[0].received, messages[0].ack)
                    result = self._transaction([], [(bare, reason.encode("ascii", "replace").decode())], now)
            else:
                result = Result()
                for msg in messages:
                    result += self.write([msg], now)
                return result
        for msg, reason in rejects:
            self._log_reject(msg, reason)
        return result

    def _log_reject(self, msg: Message, reason: str) -> None:
        """At most ``REJECT_LOGS`` lines per device a minute, then one line saying how many were not logged."""
        device = device_of(msg.topic) or "?"
        now = time.monotonic()
        window, logged, quiet = self._reject_logs.get(device, (now, 0, 0))
        if now - window >= 60:
            if quiet:
                log.warning(
                    "payload rejects not logged", extra={"device": device, "reason": f"{quiet} in the last minute"}
                )
            window, logged, quiet = now, 0, 0
        if logged >= REJECT_LOGS:
            self._reject_logs[device] = (window, logged, quiet + 1)
            return
        self._reject_logs[device] = (window, logged + 1, quiet)
        log.warning("payload rejected", extra={"device": device, "topic": escape(msg.topic, 200), "reason": reason})

    def _transaction(
        self,
        accepted: list[Accepted],
        rejects: list[tuple[Message, str]],
        now: float,
        described: Sequence[Described] = (),
        transitions: Sequence[dict[str, Any]] = (),
        configs: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> Result:
        result = Result(rejected=len(rejects), described=len(described))
        now_ms = round(now * 1000)
        new: list[Accepted] = []
        seqs = [rejected_seq(m) for m, _ in rejects]
        with self.engine.begin() as conn:
            if accepted:
                new = self._payloads(conn, accepted, now_ms)
                result.stored = len(new)
                result.duplicates = len(accepted) - len(new)
                result.samples = self._samples(conn, new)
                rollups.mark_late(conn, new, now_ms, self._insert)  # before this commits: no rollup misses it
                result.alert_events = alert_state.apply_payloads(conn, new, now_ms, self._insert)
                result.alert_events += alert_state.backlog(conn, new, self.backlog_alert, now_ms, self._insert)
                self._update_devices(conn, accepted, new, now_ms)
            for doc in described:
                self._describe(conn, doc, now_ms)
            if transitions:
                result.alert_events += alert_state.apply_transitions(conn, transitions, now_ms, self._insert)
            for device, message in configs:
                fleet_config.handle(conn, device, message, now_ms)
            if rejects:
                conn.execute(
                    REJECTS.insert(),
                    [
                        {
                            "received": round(m.received * 1000),
                            "device_id": device_of(m.topic),
                            "topic": escape(m.topic, 1024),
                            "reason": reason,
                            "size": len(m.body),
                            "payload": m.body[:KEEP_BYTES],
                            "seq": seq,
                        }
                        for (m, reason), seq in zip(rejects, seqs, strict=True)
                    ],
                )
        if self.gaps is not None:
            self.gaps.observe(new, now)
            # A rejected seq is not missing: it is never asked for again.
            seen = [
                Seen(d, q)
                for (m, _), q in zip(rejects, seqs, strict=True)
                if (d := device_of(m.topic)) and q is not None
            ]
            self.gaps.observe(seen, now)
        return result

    def _describe(self, conn: Connection, doc: Described, now_ms: int) -> None:
        """Keep the newest document of each device (by its own ``ts``): a late older one changes nothing."""
        old = conn.execute(select(META.c.ts).where(META.c.device_id == doc.device)).scalar()
        row = {"ts": doc.ts, "received": now_ms, "entries": doc.entries, "tags": doc.tags}
        if old is None:
            conn.execute(META.insert().values(device_id=doc.device, **row))
        elif doc.ts >= old:
            conn.execute(META.update().where(META.c.device_id == doc.device).values(**row))

    def payloads_lost(self, lost: list[tuple[str, int, int, str]], now: float) -> list[dict[str, Any]]:
        """The server's ``payloads_lost`` alert for gaps given up (one transaction); the new events."""
        if not lost:
            return []
        with self.engine.begin() as conn:
            return alert_state.payloads_lost(conn, lost, round(now * 1000), self._insert)

    def sweep_silent(self, now: float, factor: float) -> list[dict[str, Any]]:
        """The server's own alert: ``device_silent`` fired or resolved (one transaction); the events."""
        with self.engine.begin() as conn:
            return alert_state.sweep_silent(conn, round(now * 1000), factor, self._insert)

    def prune_rejects(
        self, now: float, keep_days: float = REJECTS_KEEP_DAYS, per_device: int = REJECTS_PER_DEVICE
    ) -> int:
        """Expire dead letters older than ``keep_days`` and keep the newest ``per_device`` of each device.

        One device sending garbage once wrote 4,350 dead letters in 140 s; each costs up to 4 KB.
        Returns the number of rows deleted. The per-device cap is applied to the devices that have
        more than ``per_device`` (found through the ``(device_id, received)`` index).
        """
        deleted = 0
        with self.engine.begin() as conn:
            cutoff = round((now - keep_days * 86400) * 1000)
            deleted += conn.execute(REJECTS.delete().where(REJECTS.c.received < cutoff)).rowcount or 0
            crowded = conn.execute(
                select(REJECTS.c.device_id).group_by(REJECTS.c.device_id).having(func.count() > per_device).limit(100)
            ).scalars()
            for device in list(crowded):
                keep_from = conn.execute(
                    select(REJECTS.c.id)
                    .where(REJECTS.c.device_id == device)
                    .order_by(REJECTS.c.id.desc())
                    .offset(per_device - 1)
                    .limit(1)
                ).scalar()
                if keep_from is not None:
                    deleted += (
                        conn.execute(
                            REJECTS.delete().where(REJECTS.c.device_id == device, REJECTS.c.id < keep_from)
                        ).rowcount
                        or 0
                    )
        return deleted

    def heartbeat(self, collector_id: str, started: float, stats: dict[str, Any]) -> None:
        """Upsert this collector's heartbeat row (for ``/healthz`` of other processes)."""
        now_ms = round(time.time() * 1000)
        row = {
            "id": collector_id,
            "host": socket.gethostname()[:255],
            "pid": os.getpid(),
            "started": round(started * 1000),
            "updated": now_ms,
            "stats": stats,
        }
        stmt = self._insert(COLLECTORS).values(row)
        stmt = stmt.on_conflict_do_update(
            index_elements=[COLLECTORS.c.id],
            set_={"host": stmt.excluded.host, "pid": stmt.excluded.pid, "started": stmt.excluded.started,
                  "updated": stmt.excluded.updated, "stats": stmt.excluded.stats},
        )  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def _forget(self) -> None:
        """After a rollback the caches may name rows that were never committed."""
        self._series.clear()
        self._attrs.clear()
        self._devices.clear()

    def _payloads(self, conn: Connection, accepted: list[Accepted], now_ms: int) -> list[Accepted]:
        fresh = sorted({p.device_id for p in accepted} - self._devices)
        if fresh:
            first = {p.device_id: p for p in reversed(accepted)}
            conn.execute(
                self._insert(DEVICES).on_conflict_do_nothing(),
                [
                    {
                        "id": d,
                        "first_seen": now_ms,
                        "last_seen": now_ms,
                        "last_ts": first[d].ts_ms,
                        "last_seq": first[d].seq,
                        "interval": first[d].interval,
                        "attributes": {},
                        "received": 0,
                        "duplicates": 0,
                    }
                    for d in fresh
                ],
            )
        by_key: dict[tuple[str, int, int], Accepted] = {}
        for p in accepted:
            by_key.setdefault((p.device_id, p.seq, p.ts_ms), p)  # a repeat inside the batch is a duplicate
        rows = [{"device_id": d, "seq": s, "ts": t, "received": now_ms} for d, s, t in by_key]
        # executemany with RETURNING: SQLAlchemy batches it into multi-row INSERTs ("insertmanyvalues")
        # and caches the statement; only the rows actually inserted (the new payloads) come back.
        stmt = (
            self._insert(PAYLOADS)
            .on_conflict_do_nothing()
            .returning(PAYLOADS.c.device_id, PAYLOADS.c.seq, PAYLOADS.c.ts)
        )
        inserted = [by_key[(d, s, t)] for d, s, t in conn.execute(stmt, rows)]
        self._devices.update(fresh)
        return inserted

    def _samples(self, conn: Connection, payloads: list[Accepted]) -> int:
        """The hot statement, at the driver's speed.

        SQLite: ``executemany`` of tuples (no per-row dict). PostgreSQL: one
        ``INSERT ... SELECT FROM unnest(arrays)`` per batch instead of one
        round trip per row.
        """
        ids = self._series_ids(conn, payloads)
        series = [ids[(p.device_id, key)] for p in payloads for key in p.samples]
        times = [p.ts_ms for p in payloads for _ in p.samples]
        values = [value for p in payloads for value in p.samples.values()]
        if not series:
            return 0
        if self.engine.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "INSERT INTO samples (series_id, ts, value) "
                "SELECT * FROM unnest(%s::integer[], %s::bigint[], %s::double precision[]) "
                "ON CONFLICT (series_id, ts) DO NOTHING",
                (series, times, values),
            )
        else:
            conn.exec_driver_sql(  # in primary-key order: each insert lands next to the previous one
                "INSERT INTO samples (series_id, ts, value) VALUES (?, ?, ?) ON CONFLICT (series_id, ts) DO NOTHING",
                sorted(zip(series, times, values, strict=True)),
            )
        self._latest(conn, series, times, values)
        return len(series)

    def _latest(self, conn: Connection, series: list[int], times: list[int], values: list[float]) -> None:
        """Move each series' ``last_ts``/``last_value`` forward (late samples never move it back)."""
        newest: dict[int, tuple[int, float]] = {}
        for sid, ts, value in zip(series, times, values, strict=True):
            if sid not in newest or ts >= newest[sid][0]:
                newest[sid] = (ts, value)
        ids = sorted(newest)  # one order for every writer: no deadlock between two collectors
        if self.engine.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "UPDATE series s SET last_ts = v.ts, last_value = v.value "
                "FROM unnest(%s::integer[], %s::bigint[], %s::double precision[]) AS v(id, ts, value) "
                "WHERE s.id = v.id AND (s.last_ts IS NULL OR s.last_ts <= v.ts)",
                (ids, [newest[i][0] for i in ids], [newest[i][1] for i in ids]),
            )
        else:
            conn.exec_driver_sql(
                "UPDATE series SET last_ts = ?, last_value = ? WHERE id = ? AND (last_ts IS NULL OR last_ts <= ?)",
                [(newest[i][0], newest[i][1], i, newest[i][0]) for i in ids],
            )

    def _series_ids(self, conn: Connection, payloads: Iterable[Accepted]) -> dict[tuple[str, str], int]:
        if len(self._series) > self.max_cached_series:
            # Bounded memory for large fleets (about 150 bytes an entry): start over; the next
            # batches re-read the ids they need, one indexed SELECT per device.
            self._series.clear()
        missing: dict[str, set[str]] = defaultdict(set)
        for p in payloads:
            for key in p.samples:
                if (p.device_id, key) not in self._series:
                    missing[p.device_id].add(key)
        if missing:
            conn.execute(
                self._insert(SERIES).on_conflict_do_nothing(),
                [{"device_id": d, "key": k} for d, keys in missing.items() for k in sorted(keys)],
            )
            for device, keys in missing.items():
                query = select(SERIES.c.id, SERIES.c.key).where(
                    SERIES.c.device_id == device, SERIES.c.key.in_(sorted(keys))
                )
                for series_id, key in conn.execute(query):
                    self._series[(device, sys.intern(key))] = series_id  # one copy of "cpu-percent" per fleet
        return self._series

    def _update_devices(self, conn: Connection, accepted: list[Accepted], new: list[Accepted], now_ms: int) -> None:
        latest: dict[str, Accepted] = {}
        for p in accepted:
            if p.device_id not in latest or p.ts_ms > latest[p.device_id].ts_ms:
                latest[p.device_id] = p
        counts: dict[str, int] = defaultdict(int)
        low: dict[str, int] = {}
        high: dict[str, int] = {}
        for p in new:
            counts[p.device_id] += 1
            low[p.device_id] = min(p.seq, low.get(p.device_id, p.seq))
            high[p.device_id] = max(p.seq, high.get(p.device_id, p.seq))
        totals: dict[str, int] = defaultdict(int)
        for p in accepted:
            totals[p.device_id] += 1
        d = DEVICES.c
        stmt = (
            update(DEVICES)
            .where(d.id == bindparam("b_id"))
            .values(
                last_seen=bindparam("b_now"),
                received=d.received + bindparam("b_new"),
                duplicates=d.duplicates + bindparam("b_dup"),
                last_seq=case((d.last_ts <= bindparam("b_ts"), bindparam("b_seq")), else_=d.last_seq),
                interval=case((d.last_ts <= bindparam("b_ts"), bindparam("b_interval")), else_=d.interval),
                last_ts=case((d.last_ts < bindparam("b_ts"), bindparam("b_ts")), else_=d.last_ts),
                first_seq=case(
                    (
                        bindparam("b_low", type_=BigInteger) < func.coalesce(d.first_seq, bindparam("b_low")),
                        bindparam("b_low"),
                    ),
                    else_=func.coalesce(d.first_seq, bindparam("b_low")),
                ),
                max_seq=case(
                    (
                        bindparam("b_high", type_=BigInteger) > func.coalesce(d.max_seq, bindparam("b_high")),
                        bindparam("b_high"),
                    ),
                    else_=func.coalesce(d.max_seq, bindparam("b_high")),
                ),
            )
        )
        conn.execute(
            stmt,
            [
                {
                    "b_id": device,
                    "b_now": now_ms,
                    "b_new": counts[device],
                    "b_dup": totals[device] - counts[device],
                    "b_ts": p.ts_ms,
                    "b_seq": p.seq,
                    "b_interval": p.interval,
                    "b_low": low.get(device),
                    "b_high": high.get(device),
                }
                for device, p in latest.items()
            ],
        )
        for device, p in latest.items():
            self._merge_attributes(conn, device, p.attributes)

    def _merge_attributes(self, conn: Connection, device: str, attributes: dict[str, str]) -> None:
        known = self._attrs.get(device)
        if known is not None and all(known.get(k) == v for k, v in attributes.items()):
            return
        stored = conn.execute(select(DEVICES.c.attributes).where(DEVICES.c.id == device)).scalar_one()
        merged = {**(stored or {}), **attributes}
        if merged != stored:
            conn.execute(update(DEVICES).where(DEVICES.c.id == device).values(attributes=merged))
        self._attrs[device] = merged
