"""State the agent keeps across restarts: the payload sequence number.

The counter never stops the agent. When the state directory is full or
read-only, the value is kept in memory, the problem is logged once and
reported under ``agent.state``, and the file is written again as soon as the
disk allows it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_datasync = getattr(os, "fdatasync", os.fsync)
"""``fdatasync`` where the OS has it (Linux): the record's size never changes, so no metadata to sync."""


class DiskHealth:
    """The failures of one part that writes to the state directory: counted, logged once, recovery logged.

    Attributes:
        errors: failed writes so far.
        reason: why the last write failed, while it is failing (``None`` when healthy).
    """

    def __init__(self, path: Path, failing: str, recovered: str) -> None:
        """``failing``/``recovered`` are the log messages of the first failure and of the recovery."""
        self.path = path
        self.failing = failing
        self.recovered = recovered
        self.errors = 0
        self.reason: str | None = None

    def failed(self, exc: BaseException) -> None:
        """Count a failure; log it if the part was healthy."""
        self.errors += 1
        reason = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
        if self.reason is None:
            log.error(self.failing, extra={"path": str(self.path), "reason": reason})
        self.reason = reason

    def ok(self, detail: str = "") -> None:
        """A write succeeded; log the recovery if the part was failing."""
        if self.reason is not None:
            log.warning(self.recovered, extra={"path": str(self.path), "reason": detail or "recovered"})
            self.reason = None


class SeqCounter:
    r"""A monotonically increasing counter persisted in ``<state_dir>/seq``.

    Each :meth:`next` overwrites the file's one fixed-width record (21 bytes at
    offset 0, inside one disk sector, so a power cut leaves the old or the new
    value, never a mix) and syncs it (``fdatasync``) before the value is returned:
    after a crash the file holds the last value handed out and the next value
    is strictly greater. The file stays open: one write and one sync a cycle,
    no rename, no directory update.

    In MQTT mode the send buffer stores each payload's ``seq`` in the same
    transaction as the payload (one fsync a cycle instead of two): the agent
    then creates the counter with ``persist=False`` and ``floor`` = the
    highest ``seq`` the buffer has seen.
    """

    def __init__(self, state_dir: str | os.PathLike[str], floor: int = 0, persist: bool = True) -> None:
        """Read the last value (the larger of the file and ``floor``); create the directory if needed."""
        self.dir = Path(state_dir)
        self.path = self.dir / "seq"
        self.persist = persist
        self.disk = DiskHealth(
            self.dir,
            "cannot write the state directory; seq kept in memory until it can",
            "state directory writable again; seq persisted",
        )
        self._fd: int | None = None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.disk.failed(exc)
        self.value = max(self._read(), floor)

    def _read(self) -> int:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            self.disk.failed(exc)
            return 0
        try:
            value = int(text)
        except ValueError:
            log.error("corrupt seq file, restarting at 0", extra={"reason": f"{self.path}: {text[:40]!r}"})
            return 0
        return max(value, 0)

    def next(self) -> int:
        """Return the next sequence number (1 for a fresh device), persisted (when the disk allows) first."""
        self.value += 1
        if self.persist:
            self._write()
        return self.value

    def _write(self) -> None:
        record = f"{self.value:>20}\n".encode()
        try:
            if self._fd is None:
                if self.disk.reason is not None:  # the directory may not exist yet (it could not be created)
                    self.dir.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            os.pwrite(self._fd, record, 0)
            _datasync(self._fd)
        except OSError as exc:
            self._close()
            self.disk.failed(exc)
            return
        self.disk.ok()

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Close the file."""
        self._close()

    def health(self) -> dict[str, Any]:
        """``agent.state``: ``ok``, ``errors`` (write failures so far) and the current ``reason``."""
        out: dict[str, Any] = {"ok": self.disk.reason is None, "errors": self.disk.errors}
        if self.disk.reason is not None:
            out["reason"] = self.disk.reason[:200]
        return out
