"""The forwarder: moves payloads from the disk buffer to the broker, and serves the server's resend commands.

It survives any error in an iteration (logged once per reason, with back-off), keeps acknowledgements
the disk refused for the next try, and writes ``status.json`` for ``edgemon-agent status``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgemon.buffer import Buffer, Entry
from edgemon.config import MqttSettings
from edgemon.connection import Connection, Connection311
from edgemon_protocol import topics
from edgemon_protocol.commands import RESEND, parse_resend
from edgemon_protocol.mqtt import NOT_AUTHORIZED, is_aws_endpoint

log = logging.getLogger(__name__)

STATUS_EVERY = 5.0
"""Seconds between rewrites of ``status.json`` (more often costs measurable CPU on a small board)."""


class Forwarder:
    """Moves payloads from the buffer to the broker and deletes them on PUBACK.

    Live payloads (stored while connected) are published at once; the backlog
    is published oldest first at ``drain_rate`` per second, so a long outage
    neither floods the broker nor delays fresh data. At most ``max_inflight``
    publishes await their PUBACK.
    """

    def __init__(
        self, buffer: Buffer, connection: Connection | Connection311, settings: MqttSettings, status_path: Path
    ) -> None:
        """Wire the forwarder to a buffer and a connection; :meth:`start` starts its thread."""
        self.buffer = buffer
        self.conn = connection
        self.status = connection.status
        self.aws = is_aws_endpoint(settings.endpoint)
        self.rate = 0.0
        self.set_drain_rate(settings.drain_rate)
        self.max_inflight = settings.max_inflight
        self.status_path = status_path
        self._live: deque[Entry] = deque()
        self._inflight: set[int] = set()
        self._done: deque[tuple[int, int, Future[Any]]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._retry_at = 0.0
        self._failure_delay = 1.0
        self._logged: set[str] = set()
        self._resends: deque[bytes] = deque()
        self._acked: list[int] = []
        """Acknowledged by the broker, not yet removed from the buffer."""
        self._iteration_failures = 0
        self._thread = threading.Thread(target=self._loop, name="edgemon-forwarder", daemon=True)
        connection.on_change = self._wake.set
        connection.on_command = self.command

    def set_drain_rate(self, rate: float) -> None:
        """Backlog payloads per second from now on (AWS IoT Core: at most 90, under its 100/s per connection)."""
        self.rate = min(rate, 90.0) if self.aws else rate

    def command(self, name: str, body: bytes) -> None:
        """A command from the server (on an awscrt thread: queued for the forwarder thread)."""
        if name == RESEND:
            self._resends.append(body)
            self._wake.set()
            return
        log.warning("unknown command ignored", extra={"reason": f"command {name!r}"})

    def _resend(self) -> None:
        while self._resends:
            body = self._resends[0]
            try:
                first, last = parse_resend(body)
            except ValueError as exc:
                self._resends.popleft()
                log.warning("bad resend command ignored", extra={"reason": str(exc)})
                continue
            seqs = self.buffer.requeue(first, last)  # a disk error leaves the command queued for the next try
            self._resends.popleft()
            missing = (last - first + 1) - len(set(seqs))
            log.info(
                "server asked for payloads again",
                extra={"reason": f"seq {first}..{last}: {len(seqs)} requeued, {missing} no longer kept"},
            )

    def start(self) -> None:
        """Start the forwarder thread."""
        self._thread.start()

    def notify(self, entry: Entry) -> None:
        """A new payload was stored; if connected it is sent at once (from memory: no read of the buffer)."""
        if self.conn.connected.is_set():
            self._live.append(entry)
        self._wake.set()

    def _loop(self) -> None:
        tokens = 0.0
        last = time.monotonic()
        last_status = 0.0
        while not self._stop.is_set():
            # Event-driven: woken by a new payload, a PUBACK or a connection change. It
            # polls (for the drain rate and the back-off) only while a backlog waits.
            backlog = len(self.buffer) > len(self._inflight) + len(self._live) + len(self._acked)
            self._wake.wait(0.05 if backlog or self._acked else STATUS_EVERY)
            self._wake.clear()
            now = time.monotonic()
            tokens = min(self.rate, tokens + (now - last) * self.rate)  # burst of at most one second
            last = now
            if now - last_status >= STATUS_EVERY:
                self.write_status()
                last_status = now
            try:
                tokens = self._step(tokens)
                self._iteration_failures = 0
            except Exception as exc:
                self._iteration_failures += 1
                reason = f"{type(exc).__name__}: {exc}"
                self.status.last_error, self.status.last_error_at = reason, time.time()
                if reason not in self._logged:
                    self._logged.add(reason)
                    log.error("forwarder error; retrying with back-off", extra={"reason": reason}, exc_info=True)
                self._stop.wait(min(30.0, 0.1 * 2 ** min(self._iteration_failures, 9)))

    def _step(self, tokens: float) -> float:
        """One iteration: complete PUBACKs, serve resend commands, send live payloads and the backlog."""
        self._complete()
        self._resend()
        if not self.conn.connected.is_set() or time.monotonic() < self._retry_at:
            self._live.clear()
            return tokens
        busy = self._inflight | set(self._acked)
        while self._live and len(self._inflight) < self.max_inflight:
            entry = self._live.popleft()
            if entry.id not in busy:
                self._send(entry.id, entry.seq, entry.topic, entry.body)
        room = min(int(tokens), self.max_inflight - len(self._inflight))
        if len(self.buffer) <= len(self._inflight) + len(self._acked):
            return tokens
        for entry in self.buffer.oldest(room, exclude=busy | self._inflight):
            self._send(entry.id, entry.seq, entry.topic, entry.body)
            tokens -= 1
        return tokens

    def _send(self, entry_id: int, seq: int, topic: str, body: bytes) -> None:
        self._inflight.add(entry_id)
        self.status.published += 1
        try:
            future = self.conn.publish(topic, body)
        except Exception as exc:  # noqa: BLE001 - an SDK error on submit is a failed publish, retried later
            future = Future()
            future.set_exception(exc)

        payload = topic.endswith("/" + topics.MONITORING)

        def done(f: Future[Any]) -> None:  # runs on an awscrt thread: hand over, never touch the buffer here
            self._done.append((entry_id, seq if payload else -seq, f))
            self._wake.set()

        future.add_done_callback(done)

    def _complete(self) -> None:
        while self._done:
            entry_id, seq, future = self._done.popleft()
            self._inflight.discard(entry_id)
            reason = self._failure(future)
            if reason is None:
                self._acked.append(entry_id)
                self.status.acked += 1
                self.status.acked_seq = max(self.status.acked_seq, seq)  # alert transitions are negative here
                continue
            self.status.failed += 1
            self.status.last_error, self.status.last_error_at = reason, time.time()
            if reason not in self._logged:
                self._logged.add(reason)
                log.error("publish failed; payload kept in the buffer", extra={"seq": abs(seq), "reason": reason})
            self._retry_at = time.monotonic() + self._failure_delay
            self._failure_delay = min(30.0, self._failure_delay * 2)
        if self._acked:
            # A failed ack (a locked or full disk) keeps the ids here, out of the sending lanes, and is
            # retried next iteration: nothing acknowledged is published again for it.
            self.buffer.ack(list(self._acked))
            self._acked.clear()
            self._failure_delay = 1.0

    @staticmethod
    def _failure(future: Future[Any]) -> str | None:
        exc = future.exception()
        if exc is not None:
            return f"{getattr(exc, 'name', type(exc).__name__)}: {getattr(exc, 'message', exc)}"
        puback = getattr(future.result(), "puback", None)
        code = getattr(puback, "reason_code", 0)
        if code is not None and int(code) >= 128:
            if int(code) == NOT_AUTHORIZED:
                return (
                    f"not authorized: the broker refused the publish (MQTT 5 reason code {NOT_AUTHORIZED}, "
                    "NOT_AUTHORIZED); its policy/ACL must allow this client to publish to devices/<client id>/#, "
                    "and on a CN-keyed broker the client id must equal the certificate's CN"
                )
            return f"broker refused the publish: {getattr(code, 'name', code)} ({int(code)})"
        return None

    def write_status(self) -> None:
        """Write ``status.json`` atomically for ``edgemon-agent status`` (a full disk is logged, not raised)."""
        self.status.updated = time.time()
        self.status.buffer = self.buffer.health()
        tmp = self.status_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(asdict(self.status)))
            os.replace(tmp, self.status_path)
        except OSError as exc:
            reason = f"status.json: {type(exc).__name__}: {exc.strerror or exc}"
            if reason not in self._logged:
                self._logged.add(reason)
                log.error("cannot write status file", extra={"path": str(self.status_path), "reason": reason})

    def drain(self, timeout: float) -> bool:
        """Wait until the buffer is empty (for tests and a clean stop); True when it is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.buffer) == 0:
                return True
            time.sleep(0.02)
        return len(self.buffer) == 0

    def stop(self) -> None:
        """Stop the thread and write a last status."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.status.state = "stopped"
        self.write_status()
