"""The MQTT collector: subscribe, queue, write in batches, acknowledge after commit.

Flow of a message::

    broker -> awscrt callback thread: take control of the PUBACK, put on a bounded queue
           -> writer thread: batch -> Store.write (one transaction) -> commit
           -> PUBACK of every message of the batch (valid or rejected)

The callback thread never waits on the database. The collector keeps a
persistent session (``REJOIN_ALWAYS``: ``REJOIN_POST_SUCCESS`` sends a clean start and the broker
drops what it queued) and acknowledges a QoS 1 message only once its batch is committed (awscrt's
``acquire_publish_acknowledgement_control``): a collector that dies between receipt and commit gets the message
again from the broker; while the database is down nothing is acknowledged.
``receive_maximum`` asks the broker to keep few messages unacknowledged in
flight; mosquitto 2.0 honours it at first but not strictly afterwards
(a one-off check: 5 asked, 30 sent after 5 PUBACKs), so the queue has its own bound
and, when full, holds the callback thread: backpressure toward the broker.

It subscribes to every device's payloads (``devices/+/monitoring``) and metric metadata
(``devices/+/meta``); the topics are the protocol's (:mod:`edgemon_protocol.topics`).

Several collectors may share the load as members of one MQTT 5 shared
subscription (``$share/<group>/devices/+/monitoring``), each with its own
client id. Shared members use **clean** sessions: a broker
keeps handing a persistent member that died its share, parked until it comes
back, while a clean member leaves the group at once and the others take over.
What a clean member held unacknowledged when it died is dropped by the
broker; the gap tracker sees the hole and asks the device to send it again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.exc import OperationalError, SQLAlchemyError

from edgemon_protocol import commands, remote, topics
from edgemon_protocol.certs import subject_cn
from edgemon_protocol.config import ConfigError
from edgemon_protocol.mqtt import (
    Handlers,
    connect_with_backoff,
    explain,
    mqtt5_client,
    mqtt311_connection,
    publish5,
    refused_codes,
    subscribe5,
)
from edgemon_protocol.payload import utc_timestamp
from edgemon_server import fleet_config, rollups
from edgemon_server.config import ServerConfig
from edgemon_server.gaps import GapTracker
from edgemon_server.notify import Notifier
from edgemon_server.store import Message, Store

log = logging.getLogger(__name__)

KINDS = (topics.MONITORING, topics.META, topics.ALERTS, topics.CONFIG)
"""What the collector takes: payloads, metric metadata, alert transitions, configuration requests and reports."""
SWEEP_EVERY = 1.0
CONFIG_EVERY = 1.0
"""Seconds between two looks for configuration to send and rollouts to move on."""
HEARTBEAT_EVERY = 5.0


@dataclass
class CollectorStats:
    """Counters since start (``/healthz`` and logs)."""

    state: str = "starting"
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    samples: int = 0
    batches: int = 0
    resend_requests: int = 0
    db_errors: int = 0
    default_partition_rows: int = 0
    """PostgreSQL: rows in ``samples_default`` at the last maintenance (should stay 0)."""
    last_commit: float | None = None
    started: float = field(default_factory=time.time)
    fatal: str | None = None


def topic_filters(group: str) -> list[str]:
    """The subscriptions: shared when ``group`` is set."""
    return [topics.subscription(kind, group) for kind in KINDS]


def client_id_for(config: ServerConfig) -> str:
    """``server.client_id``, else the certificate's CN, else ``edgemon-collector``."""
    if config.server.client_id:
        return config.server.client_id
    if config.mqtt.cert and not config.mqtt.insecure_local:
        try:
            return subject_cn(config.mqtt.cert) or "edgemon-collector"
        except (OSError, ValueError) as exc:
            raise ConfigError(f"mqtt.cert: {config.mqtt.cert}: {exc}") from exc
    return "edgemon-collector"


SILENT_EVERY = 5.0
"""Seconds between two looks for devices that went silent (or came back)."""

PRUNE_EVERY = 300.0
"""Seconds between two prunings of the dead letters (expired, over the per-device cap)."""

QUEUE_BYTES = 64 * 1024 * 1024
"""Bytes of messages queued for the writer at most; past it the broker's I/O thread waits (backpressure)."""


class ByteBoundedQueue(queue.Queue[Message]):
    """A queue bounded by message count and by the bytes of the bodies it holds.

    A count alone let 150 messages of 10 MB (a broker without a packet limit) take the collector
    to 1.6 GB during a database outage.
    """

    def __init__(self, maxsize: int, max_bytes: int) -> None:
        super().__init__(maxsize)
        self.max_bytes = max_bytes
        self.bytes = 0

    def _qsize(self) -> int:
        # Full (for put) when the count or the bytes are reached; one message is always let in.
        return self.maxsize if self.bytes >= self.max_bytes and self.queue else len(self.queue)

    def _put(self, item: Message) -> None:
        self.queue.append(item)
        self.bytes += len(item.body)

    def _get(self) -> Message:
        item: Message = self.queue.popleft()
        self.bytes -= len(item.body)
        return item

    def empty(self) -> bool:
        """Nothing queued (``qsize`` says "full" when the bytes are reached)."""
        with self.mutex:
            return not self.queue


class Collector:
    """Subscribes and stores; :meth:`start` and :meth:`stop` it."""

    def __init__(self, config: ServerConfig, store: Store) -> None:
        """Check the settings and build the client (nothing connects before :meth:`start`)."""
        self.mqtt3: Any = None
        self.config = config
        self.store = store
        store.backlog_alert = config.server.backlog_alert
        self.notifier = Notifier(store.engine, config.notify)
        self.gaps: GapTracker | None = store.gaps
        self.stats = CollectorStats()
        s = config.server
        self.queue: ByteBoundedQueue = ByteBoundedQueue(s.receive_maximum + 1000, QUEUE_BYTES)
        self.connected = threading.Event()
        self._full_logged = 0.0
        self._stop = threading.Event()
        self.on_fatal: Callable[[str], None] = lambda _reason: None
        """Called (on the writer thread) when the writer dies; the CLI makes the process exit 70."""
        self._writer = threading.Thread(target=self._write_loop, name="edgemon-writer", daemon=True)
        self.client_id = client_id_for(config)
        self.topics = topic_filters(s.shared_group)
        self.client = self._build()

    def _build(self) -> Any:
        m = self.config.mqtt
        s = self.config.server
        if m.protocol == "3.1.1":
            return self._build_311()
        if m.insecure_local:
            log.warning("MQTT without TLS to a loopback broker (insecure_local): for development only")
        handlers = Handlers(self._on_success, self._on_failure, self._on_disconnect, self._on_publish)
        shared = bool(s.shared_group)
        return mqtt5_client(
            m,
            self.client_id,
            handlers,
            persistent=not shared,
            session_expiry=s.session_expiry,
            receive_maximum=s.receive_maximum,
        )

    def _build_311(self) -> Any:
        """MQTT 3.1.1, plain TCP to a loopback demo broker (amqtt in ``make run``).

        No acknowledge-after-commit here (awscrt's 3.1.1 client acknowledges
        when the callback returns) and no shared subscriptions: what a crash
        loses in the queue comes back through the resend requests.
        """
        from awscrt import mqtt as mqtt3  # noqa: PLC0415

        m = self.config.mqtt
        if self.config.server.shared_group:
            raise ConfigError("server.shared_group needs MQTT 5 (shared subscriptions)")
        log.warning("MQTT 3.1.1 without TLS to a loopback demo broker: for development only")
        self.mqtt3 = mqtt3
        return mqtt311_connection(
            m,
            self.client_id,
            on_connection_interrupted=lambda **_kw: self._on_disconnect(None),
            on_connection_resumed=lambda **_kw: self._subscribe_311(),
        )

    def _start_311(self) -> None:
        def failed(exc: BaseException) -> None:
            log.error("collector cannot connect; retrying", extra={"reason": repr(exc)})

        if connect_with_backoff(self.client, self.config.mqtt, self._stop, failed):
            self._subscribe_311()

    def _subscribe_311(self) -> None:
        self.stats.state = "connected"
        self.connected.set()

        def on_message(topic: str, payload: bytes, **_kw: Any) -> None:
            msg = Message(topic, bytes(payload), time.time())
            self.queue.put(msg)

        for topic in self.topics:
            future, _packet = self.client.subscribe(topic, self.mqtt3.QoS.AT_LEAST_ONCE, callback=on_message)
            future.add_done_callback(lambda _f, t=topic: log.info("subscribed", extra={"topic": t}))

    # --- awscrt threads -------------------------------------------------------------------------

    def _on_publish(self, data: Any) -> None:
        packet = data.publish_packet
        acquire = data.acquire_publish_acknowledgement_control
        handle = acquire() if acquire is not None else None  # QoS 1: PUBACK only after the commit
        msg = Message(str(packet.topic), bytes(packet.payload or b""), time.time(), handle)
        try:
            self.queue.put_nowait(msg)
        except queue.Full:
            # A broker that ignores our receive maximum (or QoS 0 floods): hold its I/O thread,
            # which is backpressure toward the broker. Logged once a minute at most.
            now = time.monotonic()
            if now - self._full_logged > 60:
                self._full_logged = now
                log.warning(
                    "ingest queue full: the database is slower than the broker; applying backpressure",
                    extra={"reason": f"{len(self.queue.queue)} messages, {self.queue.bytes} bytes queued"},
                )
            self.queue.put(msg)

    def _on_success(self, data: Any) -> None:
        present = bool(getattr(data.connack_packet, "session_present", False))
        self.stats.state = "connected"
        self.connected.set()
        log.info(
            "collector connected",
            extra={"reason": f"{self.config.mqtt.endpoint}:{self.config.mqtt.port} session_present={present}"},
        )
        subscribe5(self.client, self.topics, self._subscribed)

    def _subscribed(self, future: Any) -> None:
        refused = refused_codes(future)
        if refused is not None:
            log.error("subscription refused", extra={"topic": " ".join(self.topics), "reason": refused})
        else:
            log.info("subscribed", extra={"topic": " ".join(self.topics)})

    def _on_failure(self, data: Any) -> None:
        self.stats.state = "disconnected"
        log.error("collector cannot connect; retrying", extra={"reason": explain(data.exception)})

    def _on_disconnect(self, data: Any) -> None:
        self.connected.clear()
        if self.stats.state not in ("stopped", "failed"):
            self.stats.state = "disconnected"
            log.warning("collector disconnected", extra={"reason": repr(getattr(data, "exception", None))})

    # --- writer thread --------------------------------------------------------------------------

    def _next_batch(self) -> list[Message]:
        """Block for one message, then linger for more (group commit).

        A batch closes at ``batch_rows`` samples or ``batch_ms`` after its first message, whichever
        comes first.

        Lingering is what keeps a steady fleet cheap: at 100 payloads/s, closing on an empty queue
        commits (and fsyncs) one or two payloads at a time, each touching ~86 B-tree pages; a
        200 ms window commits ~20 together for the same pages. The cost is up to ``batch_ms`` of
        added publish-to-commit lag. A stop ends the linger at once.
        """
        try:
            first = self.queue.get(timeout=SWEEP_EVERY)
        except queue.Empty:
            return []
        batch = [first]
        rows = len(first.body) // 20  # ~20 bytes of JSON per leaf: a cheap estimate before parsing
        deadline = time.monotonic() + self.config.server.batch_ms / 1000
        while rows < self.config.server.batch_rows and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                msg = self.queue.get(timeout=min(left, 0.05))
            except queue.Empty:
                continue
            batch.append(msg)
            rows += len(msg.body) // 20
        return batch

    def _write_loop(self) -> None:
        last_sweep = 0.0
        last_beat = 0.0
        last_prune = time.monotonic()
        last_silent = 0.0
        last_config = 0.0
        batch: list[Message] = []
        delay = 0.5
        while not (self._stop.is_set() and self.queue.empty() and not batch):
            if not batch:
                batch = self._next_batch()
            if batch:
                try:
                    result = self.store.write(batch)
                except OperationalError as exc:
                    self.stats.db_errors += 1
                    log.error(
                        "database unavailable; batch kept, not acknowledged",
                        extra={"reason": str(exc.orig).splitlines()[0][:300] if exc.orig else repr(exc)},
                    )
                    if self._stop.is_set():
                        return  # unacknowledged: the broker sends it again to the next run
                    self._stop.wait(delay)
                    delay = min(30.0, delay * 2)
                    continue
                except Exception as exc:  # noqa: BLE001 - the writer itself is broken: fail loudly, never silently
                    self._die(exc)
                    return
                delay = 0.5
                for msg in batch:
                    if msg.ack is not None:
                        self.client.invoke_publish_acknowledgement(msg.ack)
                st = self.stats
                st.received += len(batch)
                st.stored += result.stored
                st.duplicates += result.duplicates
                st.rejected += result.rejected
                st.samples += result.samples
                st.batches += 1
                st.last_commit = time.time()
                batch = []
            now = time.monotonic()
            if now - last_sweep >= SWEEP_EVERY:
                last_sweep = now
                try:
                    self._ask_for_gaps()
                except Exception as exc:  # noqa: BLE001 - asking for resends is best effort; storing goes on
                    log.error("could not ask for missing payloads", extra={"reason": repr(exc)[:300]})
            if now - last_config >= CONFIG_EVERY:
                last_config = now
                try:
                    self._push_configs()
                except Exception as exc:  # noqa: BLE001 - configuration is sent again at the next try or connect
                    log.error("could not send configuration", extra={"reason": repr(exc)[:300]})
            if now - last_silent >= SILENT_EVERY:
                last_silent = now
                try:
                    for event in self.store.sweep_silent(time.time(), self.config.server.silent_factor):
                        log.warning(
                            f"device {'silent' if event['state'] == 'firing' else 'back'}",
                            extra={"device": event["device_id"], "rule": event["rule"], "reason": event["message"]},
                        )
                except SQLAlchemyError as exc:
                    log.warning("silent devices not checked", extra={"reason": str(exc).splitlines()[0][:200]})
            if now - last_prune >= PRUNE_EVERY:
                last_prune = now
                try:
                    pruned = self.store.prune_rejects(time.time())
                    if pruned:
                        log.info("dead letters pruned", extra={"reason": f"{pruned} rows (expired or over the cap)"})
                except SQLAlchemyError as exc:
                    log.warning("dead letters not pruned", extra={"reason": str(exc).splitlines()[0][:200]})
            if now - last_beat >= HEARTBEAT_EVERY:
                last_beat = now
                try:
                    self.store.heartbeat(self.client_id, self.stats.started, asdict(self.stats))
                except SQLAlchemyError as exc:
                    log.debug("heartbeat not written", extra={"reason": str(exc).splitlines()[0][:200]})

    def _die(self, exc: BaseException) -> None:
        """The writer cannot go on (a bug, not one message: those become rejects). Make it visible.

        Nothing of the batch is acknowledged (the broker sends it again to the next run); the state
        is ``failed`` (``/healthz`` says 503) and ``on_fatal`` lets the process exit non-zero so
        that its supervisor restarts it.
        """
        reason = f"{type(exc).__name__}: {exc}"[:500]
        self.stats.state = "failed"
        self.stats.fatal = reason
        log.critical("collector writer failed; stopping", extra={"reason": reason}, exc_info=exc)
        self._stop.set()
        self.on_fatal(reason)

    def _push_configs(self) -> None:
        """Move rollouts on, then send each device a desired configuration version newer than it has."""
        for change in fleet_config.advance(self.store.engine, round(time.time() * 1000)):
            log.info("configuration", extra={"reason": str(change)[:300]})
        if not self.connected.is_set():
            return
        with self.store.engine.begin() as conn:
            for row in fleet_config.due(conn):
                expires = utc_timestamp(row["expires_at"] / 1000) if row["expires_at"] else None
                body = remote.encode_desired(row["version"], row["document"], expires)
                self._publish(topics.command(row["device_id"], remote.COMMAND), body)
                fleet_config.mark_sent(conn, row["device_id"], row["version"])
                log.info(
                    "configuration sent", extra={"device": row["device_id"], "reason": f"version {row['version']}"}
                )

    def _publish(self, topic: str, body: bytes) -> None:
        if self.config.mqtt.protocol == "3.1.1":
            self.client.publish(topic, body, self.mqtt3.QoS.AT_LEAST_ONCE)
        else:
            publish5(self.client, topic, body)

    def _ask_for_gaps(self) -> None:
        if self.gaps is None or not self.connected.is_set():
            return
        due = self.gaps.due(time.time())
        lost = [(g.device, g.first, g.last, why) for g, why in self.gaps.take_lost()]
        for event in self.store.payloads_lost(lost, time.time()):
            log.warning(
                "payloads lost", extra={"device": event["device_id"], "rule": event["rule"], "reason": event["message"]}
            )
        for gap in due:
            topic = topics.command(gap.device, commands.RESEND)
            self._publish(topic, commands.encode_resend(gap.first, gap.last))
            self.stats.resend_requests += 1
            log.info(
                "asked a device for missing payloads",
                extra={"device": gap.device, "reason": f"seq {gap.first}..{gap.last}, ask {gap.attempts}"},
            )

    # --- lifecycle ------------------------------------------------------------------------------

    def _maintain_loop(self) -> None:
        """Rollups and retention every ``[retention] every``, beside the writer (never in its way)."""
        while not self._stop.wait(self.config.maintain_every):
            try:
                report = rollups.maintain(self.store.engine, self.config.retention)
            except SQLAlchemyError as exc:
                log.warning(
                    "maintenance failed; tried again next round", extra={"reason": str(exc).splitlines()[0][:300]}
                )
                continue
            self.stats.default_partition_rows = report.get("partitions_default", 0)
            if any(report.values()):
                log.info("maintenance", extra={"reason": ", ".join(f"{k} {v}" for k, v in report.items() if v)})

    def start(self) -> None:
        """Start the writer, the maintenance, the notifier, and connect."""
        self._writer.start()
        threading.Thread(target=self._maintain_loop, name="edgemon-maintain", daemon=True).start()
        self.notifier.start()
        if self.config.mqtt.protocol == "3.1.1":
            threading.Thread(target=self._start_311, name="edgemon-mqtt311", daemon=True).start()
        else:
            self.client.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Let the writer store and acknowledge what is queued, then disconnect.

        What arrives after the writer is done is not acknowledged: the broker
        keeps it in this collector's session for the next start.
        """
        self._stop.set()
        self._writer.join(timeout)
        self.notifier.stop()
        if self.stats.state != "failed":
            self.stats.state = "stopped"
        if self.config.mqtt.protocol == "3.1.1":
            self.client.disconnect()
        else:
            self.client.stop()
