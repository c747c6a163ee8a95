"""Remote configuration on the device: take a version, keep it across restarts, revert it when it must.

The state is ``<state_dir>/remote_config.json`` (written atomically: temporary file, fsync, rename)::

    {"applied": {"version": 4, "hash": "...", "document": {...}, "expires_at": null, "applied_at": ...},
     "previous": [...the versions applied before, newest last, at most 5...],
     "last_good": {...the newest version a payload was acknowledged under...},
     "confirm_after": 17,   # while the applied version awaits confirmation: the seq a payload must pass
     "rejected": 5}         # the newest version refused or rolled back: not asked for again

:meth:`RemoteState.offer` decides on a version the server sent: older than what is applied (stale),
outside ``[remote_config] allow`` or inside ``lock``, or refused by ``check`` (the agent loads the
whole configuration with it, plugins' settings included): rejected, nothing changes. Otherwise it is
applied and saved before the agent rebuilds itself with it. :meth:`RemoteState.tick` (every second)
reverts an override whose ``expires_at`` passed, even offline, and rolls back a version under which
no payload was acknowledged within ``confirm_within`` (the connectivity guard) to the last good one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemon.config import RemoteSettings
from edgemon_protocol import remote
from edgemon_protocol.config import ConfigError

log = logging.getLogger(__name__)

FILE = "remote_config.json"
KEEP_PREVIOUS = 5


@dataclass(frozen=True)
class Report:
    """What the agent tells the server about a version (:func:`edgemon_protocol.remote.encode_report`)."""

    version: int
    hash: str
    status: str
    error: str = ""


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class RemoteState:
    """The device's remote configuration versions (see the module docstring)."""

    def __init__(self, state_dir: str, settings: RemoteSettings, clock: Callable[[], float] = time.time) -> None:
        """Read the saved state (a missing or unreadable file: nothing applied, said in the log)."""
        self.path = Path(state_dir) / FILE
        self.settings = settings
        self.clock = clock
        self._lock = threading.Lock()
        """``offer`` runs on the main loop, ``tick`` on the watch thread."""
        self.state: dict[str, Any] = {"applied": None, "previous": [], "last_good": None, "rejected": 0}
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                self.state.update(loaded)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.error(
                "remote configuration state unreadable; the local file alone applies", extra={"reason": repr(exc)}
            )

    # -- what is applied ------------------------------------------------------------------------

    @property
    def applied(self) -> dict[str, Any] | None:
        """The applied version's entry (``version``, ``hash``, ``document``, ``expires_at``), if any."""
        entry = self.state.get("applied")
        return entry if isinstance(entry, dict) else None

    @property
    def version(self) -> int:
        """The applied version (0: none)."""
        return int(self.applied["version"]) if self.applied else 0

    @property
    def document(self) -> dict[str, Any] | None:
        """The applied document, laid over the local file."""
        return self.applied["document"] if self.applied else None

    @property
    def rejected(self) -> int:
        """The newest version refused or rolled back."""
        return int(self.state.get("rejected") or 0)

    def get_message(self) -> bytes:
        """The ``get`` sent on every connection."""
        return remote.encode_get(self.version, self.rejected)

    # -- a version from the server ----------------------------------------------------------------

    def offer(self, body: bytes, check: Callable[[Mapping[str, Any], int], None], last_seq: int) -> Report | None:
        """Decide on a version from the server under the lock (see :meth:`_offer`)."""
        with self._lock:
            return self._offer(body, check, last_seq)

    def _offer(self, body: bytes, check: Callable[[Mapping[str, Any], int], None], last_seq: int) -> Report | None:
        """Decide on a version from the server; ``None`` when it is not newer than the applied one.

        ``check(document, version)`` raises :class:`ConfigError` when the agent cannot run with it;
        ``last_seq`` is the newest payload's ``seq`` now: a payload after it confirms the version.
        """
        try:
            version, hash_, document, expires = remote.parse_desired(body)
        except ConfigError as exc:
            guess = _version_of(body)
            if guess:
                self.state["rejected"] = max(self.rejected, guess)
                self._save()
            return Report(guess, "", "rejected", str(exc))
        if version <= self.version:
            return None  # stale: what is applied is as new or newer
        refused = remote.allowed(document, tuple(self.settings.allow), tuple(self.settings.lock))
        ends = _epoch(expires)
        if refused is None and expires is not None and (ends is None or ends <= self.clock()):
            return Report(version, hash_, "expired", f"expires_at {expires} has passed")
        if refused is None:
            try:
                check(document, version)
            except ConfigError as exc:
                refused = str(exc)
        if refused is not None:
            self.state["rejected"] = max(self.rejected, version)
            self._save()
            log.error("remote configuration rejected", extra={"reason": f"v{version}: {refused}"})
            return Report(version, hash_, "rejected", refused)
        entry = {
            "version": version,
            "hash": hash_,
            "document": document,
            "expires_at": expires,
            "applied_at": self.clock(),
        }
        if self.applied:
            self.state["previous"] = [*self.state.get("previous", []), self.applied][-KEEP_PREVIOUS:]
        self.state["applied"] = entry
        self.state["confirm_after"] = last_seq
        self._save()
        log.info("remote configuration applied", extra={"reason": f"v{version} ({hash_})"})
        return Report(version, hash_, "applied")

    # -- each cycle -----------------------------------------------------------------------------

    def tick(self, acked_seq: int) -> list[Report]:
        """Confirm, revert an expired override, or roll back an unconfirmed version; the reports to send.

        ``acked_seq`` is the highest payload ``seq`` the broker acknowledged: one built after the
        version was applied confirms it (one still in flight from before does not).
        """
        with self._lock:
            return self._tick(acked_seq)

    def _tick(self, acked_seq: int) -> list[Report]:
        applied = self.applied
        if applied is None:
            return []
        now = self.clock()
        ends = _epoch(applied.get("expires_at"))
        if ends is not None and now >= ends:
            previous = self.state.get("previous") or []
            self.state["applied"] = previous[-1] if previous else None
            self.state["previous"] = previous[:-1]
            self.state.pop("confirm_after", None)
            self._save()
            log.warning("remote configuration override expired; reverted", extra={"reason": f"v{applied['version']}"})
            reports = [Report(applied["version"], applied["hash"], "expired", "expires_at passed: reverted")]
            if self.applied:
                reports.append(Report(self.version, self.applied["hash"], "applied", "reverted to it"))
            return reports
        waiting = self.state.get("confirm_after")
        if waiting is None:
            return []
        if acked_seq > waiting:  # a payload built under this version went through: it is good
            self.state["last_good"] = applied
            self.state.pop("confirm_after", None)
            self._save()
            return []
        if now - float(applied.get("applied_at", now)) < self.settings.confirm_within:
            return []
        good = self.state.get("last_good")
        self.state["applied"] = good
        self.state["rejected"] = max(self.rejected, applied["version"])
        self.state.pop("confirm_after", None)
        self._save()
        reason = (
            f"no payload acknowledged within {self.settings.confirm_within:g} s of applying it; "
            f"back to {'v' + str(good['version']) if good else 'the local file'}"
        )
        log.error("remote configuration rolled back", extra={"reason": f"v{applied['version']}: {reason}"})
        return [Report(applied["version"], applied["hash"], "rolled_back", reason)]

    def _save(self) -> None:
        """Write the state atomically (a crash leaves the old file or the new one, never half of one)."""
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(self.state, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("remote configuration state not saved", extra={"reason": repr(exc)})


def _version_of(body: bytes) -> int:
    """The version a malformed message claims, if it says one (to report against)."""
    try:
        version = json.loads(body).get("version")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return 0
    return version if isinstance(version, int) and not isinstance(version, bool) and version > 0 else 0
