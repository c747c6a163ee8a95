"""A drift-free periodic schedule on top of the ``schedule`` package.

``schedule`` computes each next run as *now + interval* after the job
returns, so a 10 s job that takes 40 ms drifts by 40 ms a cycle (about
6 minutes a day). :class:`GridJob` keeps ``schedule``'s scheduler, job list
and API but pins run times to a fixed grid ``anchor + k * interval``. A cycle
that overruns skips the grid points it missed instead of bursting to catch
up, and :attr:`GridJob.skipped` counts them.

The clock is injectable (seconds, like ``time.time``) so tests can run hours
of schedule in milliseconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import schedule

Clock = Callable[[], float]


def _naive(epoch: float) -> datetime:
    # schedule compares naive datetimes; UTC avoids DST jumps.
    return datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None)


class GridJob(schedule.Job):
    """A ``schedule.Job`` whose runs stay on ``anchor + k * interval``."""

    def __init__(self, interval: float, scheduler: schedule.Scheduler, clock: Clock = time.time) -> None:
        """Create a job every ``interval`` seconds (fractions allowed), anchored at the first schedule."""
        super().__init__(1, scheduler)
        self.unit = "seconds"
        self.period = float(interval)
        self.clock = clock
        self.anchor: float | None = None
        self.next_epoch = 0.0
        self.skipped = 0

    def _schedule_next_run(self) -> None:
        now = self.clock()
        if self.anchor is None:
            self.anchor = now
            self.next_epoch = now
        else:
            k = math.floor((now - self.anchor) / self.period + 1e-9) + 1
            target = self.anchor + k * self.period
            due_after_previous = self.next_epoch + self.period
            if target > due_after_previous + 1e-9:
                self.skipped += round((target - due_after_previous) / self.period)
            self.next_epoch = target
        self.next_run = _naive(self.next_epoch)

    @property
    def should_run(self) -> bool:
        """Whether the grid point is reached on this job's clock."""
        return self.clock() >= self.next_epoch


def every(interval: float, scheduler: schedule.Scheduler, job: Callable[[], Any], clock: Clock = time.time) -> GridJob:
    """Add ``job`` to ``scheduler`` on a drift-free grid and return the job."""
    grid = GridJob(interval, scheduler, clock)
    grid.do(job)
    return grid


def run_forever(scheduler: schedule.Scheduler, stop: threading.Event, clock: Clock = time.time) -> None:
    """Run pending jobs until ``stop`` is set, sleeping until the next grid point."""
    while not stop.is_set():
        scheduler.run_pending()
        jobs = [j for j in scheduler.jobs if isinstance(j, GridJob)]
        if not jobs:
            return
        delay = min(j.next_epoch for j in jobs) - clock()
        if delay > 0:
            stop.wait(delay)
