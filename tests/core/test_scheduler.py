"""The schedule stays on its grid for hours: a fake clock, no sleeps."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
import schedule

from edgemon.scheduler import GridJob, every, run_forever


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_ten_second_schedule_does_not_drift_over_a_day():
    clock = FakeClock()
    runs: list[float] = []
    rng = random.Random(4)

    def job() -> None:
        runs.append(clock.now)
        clock.now += rng.uniform(0.0, 0.8)  # the cycle's own duration

    scheduler = schedule.Scheduler()
    grid = every(10, scheduler, job, clock)
    start = clock.now
    for _ in range(8640):  # 24 h at 10 s
        clock.now = max(clock.now, grid.next_epoch) + rng.uniform(0, 0.002)  # wake-up jitter
        scheduler.run_pending()
    assert len(runs) == 8640
    drift = [run - (start + 10 * i) for i, run in enumerate(runs)]
    assert max(drift) < 0.003, f"max drift {max(drift):.4f}s"
    assert grid.skipped == 0


def test_overrun_skips_missed_grid_points_and_counts_them():
    clock = FakeClock()
    runs: list[float] = []

    def job() -> None:
        runs.append(clock.now)
        if len(runs) == 2:
            clock.now += 25  # a 25 s hiccup: the points at +20 and +30 are missed

    scheduler = schedule.Scheduler()
    grid = every(10, scheduler, job, clock)
    start = clock.now
    for _ in range(4):
        clock.now = max(clock.now, grid.next_epoch)
        scheduler.run_pending()
    assert [r - start for r in runs] == [0, 10, 40, 50]
    assert grid.skipped == 2


def test_fractional_interval():
    clock = FakeClock()
    scheduler = schedule.Scheduler()
    grid = GridJob(0.25, scheduler, clock)
    grid.do(lambda: None)
    points = []
    for _ in range(8):
        clock.now = grid.next_epoch
        points.append(clock.now)
        scheduler.run_pending()
    assert [round(p - points[0], 6) for p in points] == [0.25 * i for i in range(8)]


def test_run_forever_returns_when_stopped():
    stop = threading.Event()
    scheduler = schedule.Scheduler()
    count = []

    def job() -> None:
        count.append(1)
        if len(count) == 3:
            stop.set()

    every(0.01, scheduler, job)
    run_forever(scheduler, stop)
    assert len(count) == 3


@pytest.mark.slow
def test_wall_clock_steps_either_way_cost_no_cycle(make_agent, caplog):
    """The schedule runs on the monotonic clock: NTP stepping the wall clock back an hour and forward again
    (an RTC that was ahead) neither stops nor bursts it; payload times follow the wall clock; both steps are
    logged and counted."""
    import logging

    from tests.conftest import plugin_module

    offset = [0.0]
    plugin = plugin_module(
        "tick",
        """
        from edgemon import hookimpl
        @hookimpl
        def edgemon_register_collectors(register):
            register("tick", lambda: {"tick": {"v": 1}})
        """,
    )
    agent = make_agent(("tick", plugin), interval=0.2, timeout=0.1, clock=lambda: time.time() + offset[0])
    arrivals: list[tuple[float, dict[str, Any]]] = []
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(lambda p, _body: arrivals.append((time.monotonic(), p)), stop))
    with caplog.at_level(logging.WARNING, logger="edgemon"):
        runner.start()
        time.sleep(0.7)
        offset[0] = -3600.0  # stepped back an hour
        time.sleep(0.7)
        offset[0] = 0.0  # and forward again
        time.sleep(0.7)
        stop.set()
        runner.join(5)
    times = [t for t, _ in arrivals]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(arrivals) >= 9, gaps
    assert max(gaps) < 0.35, f"no cycle lost: {gaps}"
    assert min(gaps) > 0.1, f"no burst: {gaps}"
    last = arrivals[-1][1]["metrics"]["agent"]
    assert last["clock_steps"] == 2
    steps = [r.reason for r in caplog.records if r.getMessage().startswith("wall clock stepped")]
    assert len(steps) == 2
    assert steps[0].startswith("by -3600.")
    assert steps[1].startswith("by +3600.")
