"""The schedule stays on its grid for hours: a fake clock, no sleeps."""

from __future__ import annotations

import random
import threading

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
