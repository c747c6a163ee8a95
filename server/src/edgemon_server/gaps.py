"""Holes in a device's ``seq``: found as payloads arrive, asked for again, counted.

The agent numbers its payloads (``seq`` +1 each, persisted). A payload whose
``seq`` jumps past the highest seen opens a gap; a late payload (the agent
draining its backlog, a redelivery) closes or splits it. A gap still open
``resend_after`` seconds later is asked for on ``devices/<id>/commands/resend``
(``{"from": a, "to": b}``), again with doubling intervals, at most
``max_attempts`` times; the agent answers from the acknowledged payloads it
keeps (``mqtt.resend_keep``). This recovers what a broker lost after
acknowledging it (killed before it delivered), and what a collector lost when
it died holding messages it could not acknowledge later.

State is in memory; on the first payload of a device after a start, the
tracker reads the device's newest ``history`` seqs from ``payloads``, so a
restarted collector still finds the holes it had not healed.
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine, select

from edgemon_server.db import Payload

log = logging.getLogger(__name__)


class HasSeq(Protocol):
    """A stored payload as the tracker sees it."""

    device_id: str
    seq: int


@dataclass
class Gap:
    """``first..last`` (inclusive) missing from ``device``."""

    device: str
    first: int
    last: int
    opened: float
    asked: float | None = None
    attempts: int = 0


class GapTracker:
    """Tracks open gaps per device (used by one writer thread)."""

    def __init__(self, engine: Engine, resend_after: float, history: int = 2000, max_attempts: int = 5) -> None:
        """``resend_after`` 0 still tracks gaps but never asks for them."""
        self.engine = engine
        self.resend_after = resend_after
        self.history = history
        self.max_attempts = max_attempts
        self._max: dict[str, int] = {}
        self._gaps: dict[str, list[Gap]] = defaultdict(list)

    def observe(self, payloads: Iterable[HasSeq], now: float) -> None:
        """Account for newly stored payloads (after their commit)."""
        seqs: dict[str, list[int]] = defaultdict(list)
        for p in payloads:
            seqs[p.device_id].append(p.seq)
        for device, values in seqs.items():
            if device not in self._max:
                self._load(device, now)
                continue
            for seq in sorted(values):
                self._see(device, seq, now)

    def _load(self, device: str, now: float) -> None:
        query = (
            select(Payload.seq)
            .where(Payload.device_id == device)
            .distinct()
            .order_by(Payload.seq.desc())
            .limit(self.history)
        )
        with self.engine.connect() as conn:
            seqs = sorted(conn.execute(query).scalars())
        if not seqs:
            return
        self._max[device] = seqs[-1]
        self._gaps[device] = [Gap(device, a + 1, b - 1, now) for a, b in itertools.pairwise(seqs) if b > a + 1]

    def _see(self, device: str, seq: int, now: float) -> None:
        highest = self._max[device]
        if seq > highest:
            if seq > highest + 1:
                self._gaps[device].append(Gap(device, highest + 1, seq - 1, now))
            self._max[device] = seq
            return
        kept: list[Gap] = []
        for gap in self._gaps[device]:
            if gap.first <= seq <= gap.last:
                for first, last in ((gap.first, seq - 1), (seq + 1, gap.last)):
                    if first <= last:
                        kept.append(Gap(device, first, last, gap.opened, gap.asked, gap.attempts))
            else:
                kept.append(gap)
        self._gaps[device] = kept

    def open_gaps(self, device: str | None = None) -> list[Gap]:
        """The open gaps (of one device, or all)."""
        if device is not None:
            return list(self._gaps.get(device, []))
        return [g for gaps in self._gaps.values() for g in gaps]

    def due(self, now: float) -> list[Gap]:
        """Gaps to ask for now; marks them asked. A gap asked ``max_attempts`` times is given up (logged)."""
        if self.resend_after <= 0:
            return []
        out: list[Gap] = []
        for device, gaps in self._gaps.items():
            kept = []
            for gap in gaps:
                wait = self.resend_after * (2**gap.attempts)
                if now - (gap.asked if gap.asked is not None else gap.opened) < (
                    wait if gap.asked is not None else self.resend_after
                ):
                    kept.append(gap)
                    continue
                if gap.attempts >= self.max_attempts:
                    log.error(
                        "payloads missing; the device did not send them again",
                        extra={"device": device, "reason": f"seq {gap.first}..{gap.last} after {gap.attempts} asks"},
                    )
                    continue
                gap.asked = now
                gap.attempts += 1
                out.append(gap)
                kept.append(gap)
            self._gaps[device] = kept
        return out
