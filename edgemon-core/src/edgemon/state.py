"""State the agent keeps across restarts: the payload sequence number."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class SeqCounter:
    """A monotonically increasing counter persisted in ``<state_dir>/seq``.

    Each :meth:`next` writes the new value to a temporary file, fsyncs it and
    renames it over the old one, so after a crash or power loss the file holds
    the last value handed out (never a torn write) and the next value is
    strictly greater. One fsync per payload is cheap at the agent's rates.
    """

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        """Open (creating the directory if needed) and read the last value."""
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "seq"
        self.value = self._read()

    def _read(self) -> int:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 0
        try:
            value = int(text)
        except ValueError:
            log.error("corrupt seq file, restarting at 0", extra={"reason": f"{self.path}: {text[:40]!r}"})
            return 0
        return max(value, 0)

    def next(self) -> int:
        """Return the next sequence number (1 for a fresh device), persisted before it is returned."""
        self.value += 1
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            fh.write(f"{self.value}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        return self.value
