"""Gap tracking judged from what is committed: bounded, never asking for what another collector stored
or what was rejected, and cheap whatever seqs a device sends."""

from __future__ import annotations

import json
import time

import pytest

from edgemon_server.gaps import GapTracker
from edgemon_server.store import Message, Store
from tests.fleet import payload


def msg(device: str, seq: int, **changes) -> Message:
    doc = {**payload(device, seq % 10**6), "seq": seq, **changes}
    return Message(f"devices/{device}/monitoring", json.dumps(doc).encode(), time.time())


def test_two_collectors_on_a_shared_subscription_ask_for_nothing(engine):
    """Each member sees half of every device's stream; neither asks for what the other stored."""
    a = Store(engine, gaps=GapTracker(engine, resend_after=1.0))
    b = Store(engine, gaps=GapTracker(engine, resend_after=1.0))
    now = time.time()
    for seq in range(40):
        (a if seq % 2 else b).write([msg("dev-s", seq)], now=now)
    assert a.gaps is not None
    assert b.gaps is not None
    assert a.gaps.open_gaps("dev-s"), "each member alone sees holes"
    assert a.gaps.due(now + 5) == []
    assert b.gaps.due(now + 5) == []
    assert a.gaps.open_gaps("dev-s") == [], "checked against what is committed: nothing is missing"


def test_a_real_hole_is_still_asked_for(engine):
    a = Store(engine, gaps=GapTracker(engine, resend_after=1.0))
    b = Store(engine, gaps=GapTracker(engine, resend_after=1.0))
    now = time.time()
    for seq in (*range(0, 10), *range(15, 20)):
        (a if seq % 2 else b).write([msg("dev-h", seq)], now=now)
    asked = [(g.first, g.last) for g in (*a.gaps.due(now + 5), *b.gaps.due(now + 5))]  # type: ignore[union-attr]
    assert sorted(asked) == [(10, 14), (10, 14)] or sorted(asked) == [(10, 14)]


def test_a_rejected_seq_is_not_missing_and_never_asked_for(store):
    now = time.time()
    store.write([msg("dev-r", 1), msg("dev-r", 2, interval="soon"), msg("dev-r", 3)], now=now)
    assert store.gaps is not None
    assert store.gaps.open_gaps("dev-r") == []
    assert store.gaps.due(now + 60) == []


@pytest.mark.slow
def test_a_gap_bomb_stays_cheap_and_bounded(engine):
    """seq jumped to 10^12, then every second seq: a few thousand one-seq holes."""
    gaps = GapTracker(engine, resend_after=1.0)
    store = Store(engine, gaps=gaps)
    now = time.time()
    store.write([msg("dev-b", 1)], now=now)
    t0 = time.perf_counter()
    for chunk in range(20):
        store.write([msg("dev-b", 10**12 + 2 * (chunk * 200 + i)) for i in range(200)], now=now)
    spent = time.perf_counter() - t0
    assert gaps.resets == 1, "the jump is a restarted stream, not 10^12 missing payloads"
    assert len(gaps.open_gaps("dev-b")) <= gaps.max_gaps
    assert len(gaps.due(now + 5)) <= gaps.max_asks_per_device, "resend requests per device are bounded"
    assert gaps.given_up > 3000
    assert spent < 30, f"4,000 payloads took {spent:.1f} s"  # the tracker is not quadratic (was 13.5 s for 20,000)


def test_gaps_found_out_of_order_are_split_in_log_time(engine):
    gaps = GapTracker(engine, resend_after=1.0, max_gaps=10_000)

    class P:
        def __init__(self, seq: int) -> None:
            self.device_id, self.seq = "dev-o", seq

    gaps.observe([P(0)], 0.0)
    gaps.observe([P(2 * i) for i in range(1, 5001)], 0.0)
    assert len(gaps.open_gaps("dev-o")) == 5000
    t0 = time.perf_counter()
    gaps.observe([P(2 * i + 1) for i in range(5000)], 0.0)
    assert gaps.open_gaps("dev-o") == []
    assert time.perf_counter() - t0 < 2.0


def test_a_gap_given_up_is_handed_to_the_collector_once(engine):
    gaps = GapTracker(engine, resend_after=1.0, max_attempts=2)
    store = Store(engine, gaps=gaps)
    now = time.time()
    for seq in (0, 1, 5):
        store.write([msg("dev-g", seq)], now=now)
    asks = [gaps.due(now + 10 * i) for i in range(1, 6)]
    assert [[(g.first, g.last) for g in a] for a in asks if a] == [[(2, 4)], [(2, 4)]]
    lost = gaps.take_lost()
    assert [(g.device, g.first, g.last) for g, _why in lost] == [("dev-g", 2, 4)]
    assert "2 asks" in lost[0][1]
    assert gaps.take_lost() == []
