"""A full, read-only or locked state directory never stops the agent, and nothing buffered is lost.

The state directory lives on a small tmpfs of its own (mounting needs root, as in CI; elsewhere these
tests are skipped with that reason), filled up with a filler file and freed again.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgemon.buffer import Buffer
from edgemon.state import SeqCounter


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=False)
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> Path:
    """Write a filler file until the file system is full; return it (delete it to free the space)."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (65536, 512):  # then the last bytes of a partial block
            assert write_until_error(fh, size) == errno.ENOSPC
    return filler


def write_until_error(fh: Any, size: int) -> int | None:
    while True:
        try:
            fh.write(b"\0" * size)
        except OSError as exc:
            return exc.errno


def test_full_disk_holds_payloads_in_memory_and_writes_them_back_in_order(small_fs):
    buf = Buffer(small_fs / "buffer.db", keep_sent=0)
    for seq in range(1, 6):
        assert buf.append("t", seq, b"p%d" % seq) > 0
    filler = fill(small_fs)
    ids = [buf.append("t", seq, b"x" * 2000) for seq in range(6, 60)]
    assert any(i < 0 for i in ids), "some were held in memory"
    health = buf.health()
    assert health["disk_ok"] is False
    assert "full" in health["disk_error"]
    assert len(buf) == 59
    assert [e.seq for e in buf.oldest(1000)] == list(range(1, 60)), "disk first, then memory, in order"

    filler.unlink()
    buf.append("t", 60, b"p60")
    assert buf.health() == {"disk_ok": True, "disk_errors": health["disk_errors"], "in_memory": 0}
    buf.close()
    reopened = Buffer(small_fs / "buffer.db")
    assert [e.seq for e in reopened.oldest(1000)] == list(range(1, 61)), "everything reached the disk"
    assert reopened.last_seq() == 60


def test_memory_hold_is_bounded_and_counts_what_it_drops(small_fs):
    buf = Buffer(small_fs / "buffer.db", memory_max=10)
    filler = fill(small_fs)
    for seq in range(1, 31):
        buf.append("t", seq, b"y" * 4000)
    assert buf.in_memory <= 10
    assert len(buf) + buf.dropped == 30
    filler.unlink()
    buf.append("t", 31, b"z")
    assert buf.dropped == 30 - len(buf) + 1
    buf.close()
    assert Buffer(small_fs / "buffer.db").dropped == buf.dropped, "the drops are persisted once the disk allows"


def test_read_only_state_directory_at_start_then_writable(small_fs):
    """A restart with the state directory read-only (EROFS): no crash loop; it writes once it can."""
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    buf = Buffer(small_fs / "state" / "buffer.db")
    seq = SeqCounter(small_fs / "state")
    assert buf.health()["disk_ok"] is False
    assert "Read-only" in buf.health()["disk_error"]
    assert seq.next() == 1
    assert "Read-only" in seq.health()["reason"]
    held = buf.append("t", 1, b"a")
    assert held < 0
    buf.append("t", 2, b"b")
    buf.ack([held])  # a payload sent from memory is acknowledged without the disk
    assert len(buf) == 1
    subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    buf.append("t", 3, b"c")
    assert seq.next() == 2
    assert seq.health()["ok"] is True
    assert buf.health()["disk_ok"] is True
    assert [e.seq for e in Buffer(small_fs / "state" / "buffer.db").oldest(10)] == [2, 3]


def test_seq_counter_keeps_counting_and_persisting_on_a_full_disk(small_fs):
    seq = SeqCounter(small_fs)
    assert seq.next() == 1
    filler = fill(small_fs)
    # The record is rewritten in place: a full disk has no block to refuse it.
    assert [seq.next() for _ in range(3)] == [2, 3, 4]
    assert seq.health() == {"ok": True, "errors": 0}
    assert SeqCounter(small_fs).value == 4
    filler.unlink()


def test_seq_counter_that_cannot_create_its_file_counts_in_memory(small_fs, caplog):
    filler = fill(small_fs)
    seq = SeqCounter(small_fs / "new")  # creating the directory and the file needs blocks
    assert [seq.next() for _ in range(3)] == [1, 2, 3]
    assert seq.health()["ok"] is False
    assert seq.health()["errors"] >= 3
    assert "cannot write the state directory" in caplog.text
    filler.unlink()
    assert seq.next() == 4
    assert seq.health()["ok"] is True
    assert SeqCounter(small_fs / "new").value == 4


def wait_seqs(subscriber, top: int, timeout: float) -> bool:
    return bool(subscriber.wait_for(lambda ps: {p["seq"] for p in ps} >= set(range(1, top + 1)), timeout))


@pytest.mark.slow
def test_agent_keeps_sending_on_a_full_disk_and_loses_nothing(small_fs, mqtt_env, subscriber, run_agent_proc):
    env = mqtt_env("dev-full", EDGEMON_STATE_DIR=str(small_fs / "state"), EDGEMON_INTERVAL="0.2")
    agent = run_agent_proc(env)
    assert subscriber.wait_for(lambda ps: len(ps) >= 5, 15), agent.log.read_text()
    filler = fill(small_fs)
    at_fill = max(p["seq"] for p in subscriber.payloads())
    time.sleep(3)
    assert agent.proc.poll() is None, agent.log.read_text()
    during = [p for p in subscriber.payloads() if p["seq"] > at_fill + 3]
    assert during, "payloads keep arriving (from memory) while the disk is full"
    transport = during[-1]["metrics"]["agent"]["transport"]
    assert transport["disk_ok"] is False
    assert "full" in transport["disk_error"]
    filler.unlink()
    time.sleep(2)
    agent.stop()
    seqs = {p["seq"] for p in subscriber.payloads()}
    top = max(seqs)
    assert set(range(1, top + 1)) <= seqs, f"missing: {sorted(set(range(1, top + 1)) - seqs)}"
    assert subscriber.payloads()[-1]["metrics"]["agent"]["transport"]["disk_ok"] is True
    logs = [r["msg"] for r in agent.records()]
    assert "send buffer cannot write to disk; holding payloads in memory until it can" in logs
    assert "send buffer writes to disk again" in logs


@pytest.mark.slow
def test_a_locked_buffer_during_acks_does_not_stop_sending(mqtt_env, subscriber, run_agent_proc):
    env = mqtt_env("dev-lock", EDGEMON_INTERVAL="0.2")
    agent = run_agent_proc(env)
    assert subscriber.wait_for(lambda ps: len(ps) >= 5, 15), agent.log.read_text()
    # Another process takes the write lock while PUBACKs arrive (a backup tool, `sqlite3` by hand).
    holder = sqlite3.connect(agent.state_dir / "buffer.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    locked_at = max(p["seq"] for p in subscriber.payloads())
    time.sleep(5)
    holder.execute("ROLLBACK")
    holder.close()
    assert wait_seqs(subscriber, locked_at + 30, 30), "sending goes on after the lock"
    time.sleep(1)
    agent.stop()
    seqs = {p["seq"] for p in subscriber.payloads()}
    top = max(seqs)
    assert set(range(1, top + 1)) <= seqs, f"missing: {sorted(set(range(1, top + 1)) - seqs)}"
    left = sqlite3.connect(agent.state_dir / "buffer.db").execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    assert left <= 2, "what was acknowledged left the buffer once the lock was gone"
    assert agent.proc.returncode == 0


def test_status_reads_a_corrupt_buffer_without_touching_it(tmp_path, agent_env):
    from tests.conftest import run_agent

    state = Path(agent_env["EDGEMON_STATE_DIR"])
    (state / "buffer.db").write_bytes(b"not a database" * 100)
    result = run_agent("status", env=agent_env)
    assert result.returncode == 1
    assert "UNREADABLE" in result.stdout
    assert (state / "buffer.db").read_bytes().startswith(b"not a database")
    assert not list(state.glob("buffer.db.corrupt-*")), "status only reads"


@pytest.mark.slow
def test_forwarder_survives_errors_in_an_iteration(tmp_path):
    """Any error in one iteration (here: every read of the buffer fails for a while) is logged and retried."""
    from edgemon.config import MqttSettings
    from edgemon.connection import TransportStatus
    from edgemon.forwarder import Forwarder

    class Conn:
        def __init__(self):
            self.status = TransportStatus()
            self.connected = threading.Event()
            self.connected.set()
            self.sent: list[int] = []

        def publish(self, topic, body):
            from concurrent.futures import Future

            self.sent.append(int(body))
            fut: Future[None] = Future()
            fut.set_result(None)
            return fut

    buf = Buffer(tmp_path / "b.db")
    broken = {"on": True}
    real_oldest = buf.oldest

    def oldest(limit, exclude=frozenset()):
        if broken["on"]:
            raise sqlite3.OperationalError("disk I/O error")
        return real_oldest(limit, exclude)

    buf.oldest = oldest  # type: ignore[method-assign]
    for seq in range(1, 11):
        buf.append("t", seq, str(seq).encode())
    conn = Conn()
    fwd = Forwarder(buf, conn, MqttSettings(endpoint="localhost"), tmp_path / "status.json")  # type: ignore[arg-type]
    fwd.start()
    try:
        time.sleep(1)
        assert fwd._thread.is_alive()
        assert "disk I/O error" in (conn.status.last_error or "")
        broken["on"] = False
        deadline = time.monotonic() + 10
        while len(buf) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(buf) == 0
        assert sorted(conn.sent) == list(range(1, 11))
    finally:
        fwd.stop()
