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

What is asked for is judged from what is **committed**, not from what this
process saw: before a gap is asked for, the seqs of it that are in
``payloads`` (stored by any collector: shared-subscription members each see
part of every device's stream) or in ``rejects`` (a rejected payload is not
missing; asking again would be rejected again) are taken out of it. With no
loss there are therefore no resend requests, whatever the number of
collectors.

Bounds, so that one device cannot make the tracker expensive: gaps are kept
per device in order (a lookup is a binary search), at most ``max_gaps`` per
device (the oldest is given up, logged); a jump forward of more than
``max_jump`` seqs is not a gap but a restarted stream (a device that lost its
state directory, or a forged seq), reported once; at most
``max_asks_per_device`` resend requests per device per sweep.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine, and_, or_, select

from edgemon_server.db import Payload, Reject

log = logging.getLogger(__name__)

VERIFY_BATCH = 50
"""Devices whose gaps are checked against the database in one query."""

LOG_EVERY = 60.0
"""Seconds between two log lines about given-up gaps of one device."""

LOST_KEEP = 10_000
"""Given-up gaps waiting for the collector to turn them into alerts, at most (a flood is cut, not kept)."""


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

    def __init__(
        self,
        engine: Engine,
        resend_after: float,
        history: int = 2000,
        max_attempts: int = 5,
        max_gaps: int = 64,
        max_jump: int = 100_000,
        max_asks_per_device: int = 4,
    ) -> None:
        """``resend_after`` 0 still tracks gaps but never asks for them."""
        self.engine = engine
        self.resend_after = resend_after
        self.history = history
        self.max_attempts = max_attempts
        self.max_gaps = max_gaps
        self.max_jump = max_jump
        self.max_asks_per_device = max_asks_per_device
        self.resets = 0
        self.given_up = 0
        self._lost: list[tuple[Gap, str]] = []
        self._logged: dict[str, tuple[float, int]] = {}
        self._max: dict[str, int] = {}
        self._gaps: dict[str, list[Gap]] = defaultdict(list)  # sorted by first, not overlapping

    def observe(self, payloads: Iterable[HasSeq], now: float) -> None:
        """Account for newly stored (or rejected) payloads, after their commit."""
        seqs: dict[str, list[int]] = defaultdict(list)
        for p in payloads:
            seqs[p.device_id].append(p.seq)
        for device, values in seqs.items():
            if device not in self._max:
                self._load(device, now)
                if device not in self._max:
                    self._max[device] = min(values) - 1
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
        gaps = [Gap(device, a + 1, b - 1, now) for a, b in itertools.pairwise(seqs) if 1 < b - a <= self.max_jump + 1]
        self._gaps[device] = gaps[-self.max_gaps :]

    def _see(self, device: str, seq: int, now: float) -> None:
        highest = self._max[device]
        gaps = self._gaps[device]
        if seq > highest:
            if seq - highest > self.max_jump + 1:
                self.resets += 1
                log.warning(  # rare by construction: each reset moves the stream's top by max_jump
                    "seq jumped: treated as a restarted stream, not as missing payloads",
                    extra={"device": device, "reason": f"from {highest} to {seq} (more than {self.max_jump})"},
                )
            elif seq > highest + 1:
                gaps.append(Gap(device, highest + 1, seq - 1, now))
                if len(gaps) > self.max_gaps:
                    self._give_up(gaps.pop(0), f"more than {self.max_gaps} open gaps")
            self._max[device] = seq
            return
        i = bisect.bisect_right(gaps, seq, key=lambda g: g.first) - 1
        if i < 0 or not gaps[i].first <= seq <= gaps[i].last:
            return  # a duplicate, or older than what is tracked
        gap = gaps[i]
        parts = [
            Gap(device, first, last, gap.opened, gap.asked, gap.attempts)
            for first, last in ((gap.first, seq - 1), (seq + 1, gap.last))
            if first <= last
        ]
        gaps[i : i + 1] = parts

    def take_lost(self) -> list[tuple[Gap, str]]:
        """The gaps given up since the last call, with why (the collector raises ``payloads_lost``)."""
        lost, self._lost = self._lost, []
        return lost

    def _give_up(self, gap: Gap, why: str) -> None:
        """Count it; log it at most once a minute per device (a device forging seqs must not flood the log)."""
        self.given_up += 1
        if len(self._lost) < LOST_KEEP:
            self._lost.append((gap, why))
        last, quiet = self._logged.get(gap.device, (-LOG_EVERY, 0))
        now = time.monotonic()
        if now - last < LOG_EVERY:
            self._logged[gap.device] = (last, quiet + 1)
            return
        self._logged[gap.device] = (now, 0)
        more = f"; {quiet} more given up in the last minute" if quiet else ""
        log.error(
            "payloads missing; not asked for again",
            extra={"device": gap.device, "reason": f"seq {gap.first}..{gap.last}: {why}{more}"},
        )

    def open_gaps(self, device: str | None = None) -> list[Gap]:
        """The open gaps (of one device, or all)."""
        if device is not None:
            return list(self._gaps.get(device, []))
        return [g for gaps in self._gaps.values() for g in gaps]

    def due(self, now: float) -> list[Gap]:
        """Gaps to ask for now, without what is committed meanwhile; marks them asked.

        A gap asked ``max_attempts`` times is given up (logged).
        """
        if self.resend_after <= 0:
            return []
        spans = {}
        for device, gaps in self._gaps.items():
            ready = [g for g in gaps if self._ready(g, now)]
            if ready:
                spans[device] = (min(g.first for g in ready), max(g.last for g in ready))
        if not spans:
            return []
        self._verify(spans)
        out: list[Gap] = []
        for device in spans:
            gaps = self._gaps[device]
            asks = 0
            kept = []
            for gap in gaps:
                if not self._ready(gap, now) or asks >= self.max_asks_per_device:
                    kept.append(gap)
                    continue
                if gap.attempts >= self.max_attempts:
                    self._give_up(gap, f"the device did not send them after {gap.attempts} asks")
                    continue
                gap.asked = now
                gap.attempts += 1
                asks += 1
                out.append(gap)
                kept.append(gap)
            self._gaps[device] = kept
        return out

    def _ready(self, gap: Gap, now: float) -> bool:
        since = gap.opened if gap.asked is None else gap.asked
        wait = self.resend_after * (1 if gap.asked is None else 2**gap.attempts)
        return bool(now - since >= wait)

    def _verify(self, spans: dict[str, tuple[int, int]]) -> None:
        """Take out of the gaps the seqs committed (by any collector) or rejected meanwhile.

        One query per table for up to :data:`VERIFY_BATCH` devices (an ``OR`` of per-device seq
        ranges on the primary key): a shared-subscription member verifies every other seq of
        every device, so this runs for most devices on every sweep.
        """
        devices = list(spans)
        with self.engine.connect() as conn:
            for start in range(0, len(devices), VERIFY_BATCH):
                chunk = devices[start : start + VERIFY_BATCH]
                present: dict[str, set[int]] = defaultdict(set)
                for table in (Payload, Reject):
                    cond = or_(*(and_(table.device_id == d, table.seq.between(*spans[d])) for d in chunk))
                    for device, seq in conn.execute(select(table.device_id, table.seq).where(cond)):
                        if device is not None and seq is not None:
                            present[device].add(seq)
                for device, seqs in present.items():
                    highest = self._max[device]
                    for seq in sorted(seqs):
                        if seq <= highest:
                            self._see(device, seq, 0.0)
