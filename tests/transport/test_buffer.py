"""The store-and-forward buffer: bounded, durable, ordered, and it never loses an unacknowledged payload."""

from __future__ import annotations

import logging
import sqlite3

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from edgemon.buffer import Buffer


def test_buffer_full_drops_oldest_counts_and_keeps_newest(tmp_path, caplog):
    buf = Buffer(tmp_path / "b.db", max_bytes=1000)
    with caplog.at_level(logging.WARNING, logger="edgemon"):
        for seq in range(1, 31):
            buf.append("t", seq, b"x" * 100)
    assert len(buf) == 10
    assert buf.size_bytes == 1000
    assert buf.dropped == 20
    assert [e.seq for e in buf.oldest(100)] == list(range(21, 31))
    assert "send buffer full" in caplog.text
    reasons = [r.reason for r in caplog.records if r.getMessage().startswith("send buffer full")]
    assert reasons[0] == "1 dropped (seq 1..1); bound 1000 bytes"  # each drop logged with the seqs it dropped
    assert len(reasons) == 20
    buf.close()
    reopened = Buffer(tmp_path / "b.db", max_bytes=1000)
    assert reopened.dropped == 20, "the drop counter is persisted"
    assert len(reopened) == 10


def test_a_payload_larger_than_the_bound_is_still_kept_alone(tmp_path):
    buf = Buffer(tmp_path / "b.db", max_bytes=10)
    buf.append("t", 1, b"a" * 5)
    buf.append("t", 2, b"b" * 50)
    assert [e.seq for e in buf.oldest(5)] == [2]
    assert buf.dropped == 1


def test_corrupt_file_is_moved_aside(tmp_path, caplog):
    path = tmp_path / "buffer.db"
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.ERROR, logger="edgemon"):
        buf = Buffer(path)
    assert len(buf) == 0
    buf.append("t", 1, b"{}")
    aside = list(tmp_path.glob("buffer.db.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not")
    assert "moved aside" in caplog.text
    assert str(aside[0]) in caplog.records[0].path


def test_survives_reopen_without_close(tmp_path):
    buf = Buffer(tmp_path / "b.db")
    for seq in range(5):
        buf.append("t", seq, b"p")
    buf.ack([e.id for e in buf.oldest(2)])
    # no close(): like kill -9, the committed state is on disk
    other = Buffer(tmp_path / "b.db")
    assert [e.seq for e in other.oldest(10)] == [2, 3, 4]


def test_oldest_skips_inflight(tmp_path):
    buf = Buffer(tmp_path / "b.db")
    ids = [buf.append("t", seq, b"p") for seq in range(5)]
    assert [e.seq for e in buf.oldest(2, exclude={ids[0], ids[1]})] == [2, 3]
    assert buf.oldest_age() is not None
    assert sqlite3.connect(tmp_path / "b.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


class BufferMachine(RuleBasedStateMachine):
    """Enqueue / ack / crash-restart / drain: never lose an unacknowledged payload, never reorder."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = 0
        self.model: list[int] = []  # seqs not yet acknowledged, in order
        self.inflight: dict[int, int] = {}  # id -> seq

    @initialize(tmp=st.builds(lambda: __import__("tempfile").mkdtemp()))
    def open(self, tmp):
        self.path = f"{tmp}/buffer.db"
        self.buf = Buffer(self.path, max_bytes=10**9)

    @rule(n=st.integers(1, 5))
    def enqueue(self, n):
        for _ in range(n):
            self.seq += 1
            self.buf.append("devices/x/monitoring", self.seq, f'{{"seq":{self.seq}}}'.encode())
            self.model.append(self.seq)

    @rule(n=st.integers(1, 4))
    def send(self, n):
        for entry in self.buf.oldest(n, exclude=set(self.inflight)):
            self.inflight[entry.id] = entry.seq

    @precondition(lambda self: self.inflight)
    @rule(data=st.data())
    def ack_some(self, data):
        ids = data.draw(st.lists(st.sampled_from(sorted(self.inflight)), unique=True, min_size=1))
        self.buf.ack(ids)
        for i in ids:
            self.model.remove(self.inflight.pop(i))

    @rule()
    def crash_restart(self):
        # kill -9: no close; in-flight publishes were never acknowledged and are forgotten by the sender
        self.buf = Buffer(self.path, max_bytes=10**9)
        self.inflight.clear()

    @rule()
    def drain(self):
        while entries := self.buf.oldest(3, exclude=set(self.inflight)):
            for e in entries:
                self.inflight[e.id] = e.seq
            self.buf.ack([e.id for e in entries])
            for e in entries:
                self.model.remove(self.inflight.pop(e.id))

    @invariant()
    def nothing_lost_nothing_reordered(self):
        if hasattr(self, "buf"):
            stored = [e.seq for e in self.buf.oldest(10**6)]
            assert stored == self.model
            assert len(self.buf) == len(self.model)


TestBufferMachine = BufferMachine.TestCase
TestBufferMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


def test_acknowledged_payloads_are_kept_for_resend_and_bounded(tmp_path):
    buf = Buffer(tmp_path / "b.db", keep_sent=3)
    for seq in range(1, 6):
        buf.append("t", seq, f"p{seq}".encode())
    buf.ack([e.id for e in buf.oldest(5)])
    assert len(buf) == 0
    assert buf.requeue(1, 2) == [], "only the newest 3 acknowledged are kept"
    assert buf.requeue(3, 4) == [3, 4]
    assert [(e.seq, e.body) for e in buf.oldest(5)] == [(3, b"p3"), (4, b"p4")]
    assert buf.requeue(3, 4) == [], "moved back to the outbox, not copied"


def test_without_keep_sent_nothing_is_kept(tmp_path):
    buf = Buffer(tmp_path / "b.db")
    buf.append("t", 1, b"x")
    buf.ack([e.id for e in buf.oldest(1)])
    assert buf.requeue(0, 10) == []


def test_alert_transitions_are_a_priority_lane_with_their_own_seq(tmp_path):
    buf = Buffer(tmp_path / "b.db", max_bytes=1_000_000, keep_sent=100)
    for seq in (1, 2, 3):
        buf.append("devices/d/monitoring", seq, b"p%d" % seq)
    alert_id = buf.append("devices/d/alerts", 1, b"a1")
    buf.append("devices/d/monitoring", 4, b"p4")
    order = [(e.topic.rsplit("/", 1)[1], e.seq) for e in buf.oldest(10)]
    assert order == [("alerts", 1), ("monitoring", 1), ("monitoring", 2), ("monitoring", 3), ("monitoring", 4)]
    assert (buf.last_seq(), buf.last_alert_seq()) == (4, 1), "an alert's seq never moves the payloads' seq"
    buf.ack([alert_id])
    assert buf.requeue(1, 1) == [], "transitions are not kept for resends (their state travels in payloads)"
    buf.close()
    reopened = Buffer(tmp_path / "b.db")
    assert (reopened.last_seq(), reopened.last_alert_seq()) == (4, 1)
    reopened.close()
