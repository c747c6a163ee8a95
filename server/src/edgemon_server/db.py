"""The database schema (SQLAlchemy 2 typed models) and engine set-up.

All times are integer **milliseconds since the epoch, UTC**. The schema is
created and changed only by the alembic migrations in
``edgemon_server/migrations`` (``edgemon-server db upgrade``); a test checks
that autogenerate finds no difference between these models and them.

Tables:

- ``devices``: one row per device: first/last seen (server clock), the
  latest payload's ``ts``, ``seq`` and interval, its attributes (the latest
  string leaves), counters (payloads received, duplicates) and the lowest
  and highest ``seq`` stored (missing = the span minus received).
- ``series``: one row per (device, flat metric key).
- ``samples``: (series, ts) -> value; the primary key makes writes
  idempotent and is the index every read uses (``WITHOUT ROWID`` on SQLite).
- ``rollups_5m`` / ``rollups_1h``: (series, bucket) -> count, sum, min, max, last; ``rollup_dirty``
  marks the buckets late payloads touched, ``rollup_state`` how far each tier has gone.
- ``payloads``: (device, seq, ts) of every stored payload: duplicates are
  found here and holes in ``seq`` (missing payloads) are counted from it.
- ``rejects``: the dead-letter table.
- ``metric_meta``: each device's latest metric metadata document (units, kinds, headlines), as
  ``[[pattern, {unit, kind, description, headline}], ...]`` in the device's order (first match wins).
- ``alert_state`` / ``alert_events``: each device's alerts now, and every transition (stored once).
- ``silences`` / ``notifications``: muted alerts (each with an end), and the delivery outbox.
- ``notify_groups``: each (receiver, notification group) with an open alert: when it was last
  notified and when its reminder is due.
- ``config_layers`` / ``config_versions`` / ``device_config`` / ``config_rollouts``: remote
  configuration: the fleet, group and device layers, every compiled version of each device's
  document, each device's desired, sent and applied version, and staged rollouts.
- ``collectors``: a heartbeat per running collector (its counters), so that
  ``/healthz`` of an API process shows the collectors of other processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Double,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from edgemon_server.config import sqlite_path

INSERTS: dict[str, Any] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
"""Each supported dialect's ``insert`` (with ``on_conflict_do_nothing`` / ``on_conflict_do_update``)."""


def insert_for(dialect: str) -> Any:
    """The ``insert`` of a dialect (``engine.dialect.name``).

    Raises:
        ValueError: not SQLite or PostgreSQL.
    """
    if dialect not in INSERTS:
        raise ValueError(f"unsupported database {dialect!r}: use SQLite or PostgreSQL")
    return INSERTS[dialect]


class Base(DeclarativeBase):
    """Declarative base of the edgemon tables."""


class Device(Base):
    """A device, created by its first valid payload."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    first_seen: Mapped[int] = mapped_column(BigInteger)
    last_seen: Mapped[int] = mapped_column(BigInteger)
    last_ts: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    interval: Mapped[float] = mapped_column(Double)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    duplicates: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seq: Mapped[int | None] = mapped_column(BigInteger)
    """Lowest and highest ``seq`` stored: with ``received``, the number of missing payloads is
    ``max_seq - first_seq + 1 - received``, in O(1) instead of a scan of ``payloads``."""
    max_seq: Mapped[int | None] = mapped_column(BigInteger)


class Series(Base):
    """One metric of one device."""

    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("device_id", "key", name="uq_series_device_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(1024))
    last_ts: Mapped[int | None] = mapped_column(BigInteger)
    """Time of the newest sample (ms), kept by the writer in the transaction that stores it."""
    last_value: Mapped[float | None] = mapped_column(Double)
    """Its value: ``latest``, headlines, the fleet query and ``/metrics`` read it instead of seeking
    ``samples`` (on PostgreSQL, one seek per day partition)."""


class Sample(Base):
    """One value of one series at one time."""

    __tablename__ = "samples"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 - SQLAlchemy's declarative form

    series_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("series.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    value: Mapped[float] = mapped_column(Double)


class _RollupColumns:
    """The columns of a rollup tier: (series, bucket start in ms) -> count, sum, min, max, last value."""

    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012

    @declared_attr
    def series_id(cls) -> Mapped[int]:  # noqa: N805 - declared_attr's first argument is the class
        return mapped_column(
            Integer, ForeignKey("series.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
        )

    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer)
    sum: Mapped[float] = mapped_column(Double)
    min: Mapped[float] = mapped_column(Double)
    max: Mapped[float] = mapped_column(Double)
    last: Mapped[float] = mapped_column(Double)


class Rollup5m(_RollupColumns, Base):
    """Five minutes of one series."""

    __tablename__ = "rollups_5m"


class Rollup1h(_RollupColumns, Base):
    """An hour of one series."""

    __tablename__ = "rollups_1h"


class RollupDirty(Base):
    """A five-minute bucket of a device that a late payload touched after it may have been rolled up."""

    __tablename__ = "rollup_dirty"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012

    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)


class RollupState(Base):
    """How far each rollup tier has gone: every bucket before ``cursor`` is rolled up (or marked dirty)."""

    __tablename__ = "rollup_state"

    tier: Mapped[str] = mapped_column(String(8), primary_key=True)
    cursor: Mapped[int] = mapped_column(BigInteger)


class Payload(Base):
    """That a payload was stored: the key of duplicate and gap detection."""

    __tablename__ = "payloads"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012

    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    received: Mapped[int] = mapped_column(BigInteger)


class Reject(Base):
    """A message that was not stored as samples, and why."""

    __tablename__ = "rejects"
    __table_args__ = (
        Index("ix_rejects_device_received", "device_id", "received"),
        Index("ix_rejects_device_seq", "device_id", "seq"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received: Mapped[int] = mapped_column(BigInteger, index=True)
    device_id: Mapped[str | None] = mapped_column(String(128))
    topic: Mapped[str] = mapped_column(String(1024))
    reason: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    seq: Mapped[int | None] = mapped_column(BigInteger)
    """The payload's ``seq`` when it could be read: a rejected seq is not missing, and never asked for again."""


class MetricMeta(Base):
    """A device's metric metadata document (``devices/<id>/meta``), replaced by each newer one.

    No foreign key: a device may describe its metrics before its first payload is stored.
    """

    __tablename__ = "metric_meta"

    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    ts: Mapped[int] = mapped_column(BigInteger)
    """The document's time on the device's clock (an older one arriving late is ignored)."""
    received: Mapped[int] = mapped_column(BigInteger)
    entries: Mapped[list[Any]] = mapped_column(JSON)
    tags: Mapped[dict[str, str] | None] = mapped_column(JSON)
    """The device's tags (``[agent] tags``), sent with its metadata."""


class AlertState(Base):
    """A device's alert now (one row per rule and key): pending, firing or resolved.

    ``source`` is ``device`` (the device's own rules, from its payloads) or ``server`` (what the
    server judges about the device, such as ``device_silent``). Times are the device's clock for
    device alerts and the server's for server alerts.
    """

    __tablename__ = "alert_state"
    __table_args__ = (Index("ix_alert_state_state", "state", "device_id"),)

    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(16), primary_key=True)
    rule: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(256))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    since: Mapped[int] = mapped_column(BigInteger)
    changed: Mapped[int] = mapped_column(BigInteger)
    updated: Mapped[int] = mapped_column(BigInteger)
    """The time of the payload (or sweep) that last said so: an older payload changes nothing."""
    value: Mapped[float | None] = mapped_column(Double)
    message: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))


class AlertEvent(Base):
    """One transition of an alert: ``pending``, ``firing`` (also an escalation) or ``resolved``; stored once."""

    __tablename__ = "alert_events"
    __table_args__ = (
        UniqueConstraint("device_id", "fingerprint", "state", "severity", "at", name="uq_alert_events_transition"),
        Index("ix_alert_events_device_id", "device_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128))
    fingerprint: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(256))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float | None] = mapped_column(Double)
    message: Mapped[str] = mapped_column(Text)
    received: Mapped[int] = mapped_column(BigInteger)


class Silence(Base):
    """A silence: alerts its ``matchers`` match are not notified between ``starts`` and ``ends``.

    Matchers are globs on device, rule, severity, key (``{"device": "press-*", "rule": "disk_full"}``);
    every silence ends.
    """

    __tablename__ = "silences"
    __table_args__ = (Index("ix_silences_ends", "ends"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    matchers: Mapped[dict[str, Any]] = mapped_column(JSON)
    starts: Mapped[int] = mapped_column(BigInteger)
    ends: Mapped[int] = mapped_column(BigInteger)
    comment: Mapped[str] = mapped_column(Text)
    created: Mapped[int] = mapped_column(BigInteger)


class Notification(Base):
    """One alert event for one receiver: the outbox (exactly one row per event and receiver)."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("event_id", "receiver", name="uq_notifications_event_receiver"),
        Index("ix_notifications_due", "status", "next_at"),
        Index("ix_notifications_group", "receiver", "group_key", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(Integer)
    receiver: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    """``pending`` (to send, at ``next_at``), ``sent``, ``silenced``, or ``failed`` (gave up)."""
    attempts: Mapped[int] = mapped_column(Integer)
    next_at: Mapped[int] = mapped_column(BigInteger)
    created: Mapped[int] = mapped_column(BigInteger)
    sent_at: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    group_key: Mapped[str | None] = mapped_column(String(64))
    """The notification group (route and the values of its ``group_by``) a ``pending`` row is sent with."""
    batch: Mapped[int | None] = mapped_column(Integer)
    """The rows claimed for one send share this (the smallest id among them): a retry sends the same set."""


class NotifyGroup(Base):
    """A notification group of one receiver with alerts open: its timing and reminders."""

    __tablename__ = "notify_groups"
    __table_args__ = (UniqueConstraint("receiver", "group_key", name="uq_notify_groups_receiver_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    receiver: Mapped[str] = mapped_column(String(64))
    group_key: Mapped[str] = mapped_column(String(64))
    last_sent: Mapped[int] = mapped_column(BigInteger)
    repeat_at: Mapped[int] = mapped_column(BigInteger)
    """When the group's alerts still firing are sent again (a lease while that send is in flight)."""
    repeats: Mapped[int] = mapped_column(Integer)


class ConfigLayer(Base):
    """One layer of remote configuration: the fleet's, a group's (devices matching a glob) or a device's."""

    __tablename__ = "config_layers"
    __table_args__ = (UniqueConstraint("scope", "name", name="uq_config_layers_scope_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(16))
    """``fleet``, ``group`` or ``device``; later scopes win."""
    name: Mapped[str] = mapped_column(String(128))
    """The group's name or the device id; empty for the fleet."""
    match: Mapped[str] = mapped_column(String(256))
    """The device ids a group's layer applies to (a glob); the device id or ``*`` otherwise."""
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    """An override's end: the layer is dropped then, and its devices get a version without it."""
    updated: Mapped[int] = mapped_column(BigInteger)


class ConfigVersion(Base):
    """One compiled document of one device; versions only grow, and every one is kept."""

    __tablename__ = "config_versions"
    __table_args__ = (Index("ix_config_versions_device", "device_id", "version"),)

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    hash: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    rollout_id: Mapped[int | None] = mapped_column(Integer)
    created: Mapped[int] = mapped_column(BigInteger)


class DeviceConfig(Base):
    """A device's configuration: the version it should have, the one sent, and what it reported."""

    __tablename__ = "device_config"

    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    desired_version: Mapped[int | None] = mapped_column(Integer)
    sent_version: Mapped[int] = mapped_column(Integer, default=0)
    """The newest version the device has or was sent (its ``get`` resets it to what it has)."""
    applied_version: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str | None] = mapped_column(String(16))
    """The device's last report: ``applied``, ``rejected``, ``rolled_back`` or ``expired``."""
    reported_version: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    reported_at: Mapped[int | None] = mapped_column(BigInteger)


class ConfigRollout(Base):
    """A push of one layer: to a canary share first, then to the rest, or aborted."""

    __tablename__ = "config_rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    match: Mapped[str] = mapped_column(String(256))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    canary: Mapped[list[str]] = mapped_column(JSON)
    """The devices that get it first (empty: everyone at once)."""
    wait_s: Mapped[float] = mapped_column(Double)
    abort_on_rejects: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    """``canary`` (waiting on the canary devices), ``complete`` or ``aborted``."""
    reason: Mapped[str] = mapped_column(Text)
    created: Mapped[int] = mapped_column(BigInteger)
    updated: Mapped[int] = mapped_column(BigInteger)


class CollectorHeartbeat(Base):
    """A running collector's last heartbeat (written every few seconds)."""

    __tablename__ = "collectors"

    id: Mapped[str] = mapped_column(String(256), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started: Mapped[int] = mapped_column(BigInteger)
    updated: Mapped[int] = mapped_column(BigInteger)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and its directory created.

    SQLite runs with ``synchronous=FULL``: the collector acknowledges a message
    to the broker only after its commit, so a commit must survive power loss. New files get
    ``auto_vacuum=INCREMENTAL`` (retention hands pages back in short steps) and the WAL is
    truncated to 64 MB whenever a checkpoint resets it.
    """
    path = sqlite_path(url)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file only
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA journal_size_limit=67108864")  # a reset WAL shrinks back to 64 MB
            cur.close()

    return engine
