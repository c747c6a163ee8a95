"""``edgemon-agent run``: the loop, with live reloads (SIGHUP, remote configuration) and the signals.

One sink lives as long as the process (the MQTT connection, the send buffer); the agent (plugins,
collectors, rules, schedule) is rebuilt when its configuration changes: on SIGHUP from the local file,
or when the server sends a version (:mod:`edgemon.remote_config`). A rebuild that fails leaves the
running agent as it was. The sequence counter and the alert state carry over (the buffer and
``alerts.json`` hold them), so a reload is invisible in the data but for the new settings.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any, Optional, TextIO

from edgemon.agent import Agent
from edgemon.config import Config, ConfigError
from edgemon.plugins import allowed_from_env
from edgemon.remote_config import RemoteState, Report
from edgemon.sink import Sink, StdoutSink

log = logging.getLogger(__name__)

WATCH_EVERY = 1.0
"""Seconds between two checks of the applied version (expiry, confirmation), independent of the interval."""

Build = Callable[[Optional[Mapping[str, Any]], int], Config]  # evaluated at run time: Optional for Python 3.9
"""Loads the configuration again: the local file (read anew) with a remote document over it."""


def output_of(config: Config) -> str:
    """``mqtt`` or ``stdout`` (``auto``: MQTT when an endpoint is set)."""
    output = config.agent.output
    if output == "auto":
        output = "mqtt" if config.mqtt.endpoint else "stdout"
    return output


class Daemon:
    """The running agent and what may replace it (see the module docstring)."""

    def __init__(self, agent: Agent, out: TextIO, build: Build) -> None:
        """Nothing runs until :meth:`run`."""
        self.agent = agent
        self.out = out
        self.build = build
        self.stop = threading.Event()
        self.wake = threading.Event()
        """Set to end the current agent's loop: to stop, reload, or take a remote version."""
        self.hup = threading.Event()
        self.offers: queue.Queue[bytes] = queue.Queue()
        self.remote: RemoteState | None = None
        self.mqtt: Any = None
        self._revert = False

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; 0."""
        config = self.agent.config
        sink: Sink
        if output_of(config) == "mqtt":
            from edgemon.identity import check_settings  # noqa: PLC0415 - only in MQTT mode
            from edgemon.transport import MqttSink  # noqa: PLC0415

            self.agent.device_id = check_settings(config)
            if config.remote.enabled:
                self.remote = RemoteState(config.agent.state_dir, config.remote)
                self._from_saved_version()
            self.agent.start()
            sink = self.mqtt = MqttSink(self.agent.config, self.agent.device_id)
            if self.remote is not None:
                self.mqtt.remote = self.remote
                self.mqtt.on_config = self._offered
            self.mqtt.start()
            if self.remote is not None:
                threading.Thread(target=self._watch, name="edgemon-remote-config", daemon=True).start()
        else:
            self.agent.start()
            sink = StdoutSink(self.out)
        self._signals()
        try:
            while not self.stop.is_set():
                self.wake.clear()
                self.agent.run(sink, self.wake)
                if self.stop.is_set():
                    break
                self._between_runs()
        finally:
            if self.mqtt is not None:
                self.mqtt.stop()
        return 0

    # -- what happens between two runs of the agent ---------------------------------------------

    def _between_runs(self) -> None:
        if self.hup.is_set():
            self.hup.clear()
            self._rebuild(self.remote.document if self.remote else None, self.remote.version if self.remote else 0)
        if self._revert:
            self._revert = False
            assert self.remote is not None
            self._rebuild(self.remote.document, self.remote.version)
        while not self.offers.empty():
            self._take(self.offers.get())

    def _take(self, body: bytes) -> None:
        assert self.remote is not None
        last_seq = self.mqtt.last_seq() if self.mqtt is not None else 0
        report = self.remote.offer(body, self._check, last_seq)
        if report is None:
            return
        if report.status == "applied":
            self._rebuild(self.remote.document, self.remote.version)
        self._report(report)

    def _check(self, document: Mapping[str, Any], version: int) -> None:
        """Raise :class:`ConfigError` unless the agent can run with ``document``.

        The whole configuration loads and every plugin takes its settings (loaded, not started).
        """
        config = self.build(document, version)
        trial = Agent(config, allowed=allowed_from_env(), keep_alert_state=False)
        try:
            trial.load()
        finally:
            trial.close()

    def _rebuild(self, document: Mapping[str, Any] | None, version: int) -> None:
        """Replace the agent with one built from the file and ``document``; keep the old one on failure."""
        try:
            config = self.build(document, version)
        except ConfigError as exc:
            log.error("configuration not reloaded; the running one stays", extra={"reason": str(exc)})
            return
        self.agent.close()
        self.agent = self._successor(config)
        self.agent.start()
        if self.mqtt is not None:  # the connection outlives the agent: its drain rate follows the new config
            self.mqtt.forwarder.set_drain_rate(config.mqtt.drain_rate)
        log.info(
            "configuration reloaded",
            extra={
                "reason": f"interval {config.agent.interval:g} s, drain rate {config.mqtt.drain_rate:g}/s, "
                f"remote version {config.remote_version}"
            },
        )

    def _from_saved_version(self) -> None:
        """At start: the version applied before the restart (offline too), if it still loads."""
        assert self.remote is not None
        if self.remote.document is None:
            return
        try:
            config = self.build(self.remote.document, self.remote.version)
        except ConfigError as exc:
            log.error(
                "saved remote configuration no longer loads; the local file alone applies", extra={"reason": str(exc)}
            )
            return
        self.agent = self._successor(config)

    def _successor(self, config: Config) -> Agent:
        """An agent for ``config`` that goes on as the current one: the same device id (from the certificate)."""
        agent = Agent(config, allowed=allowed_from_env(), keep_alert_state=True)
        agent.device_id = self.agent.device_id
        return agent

    # -- callbacks -------------------------------------------------------------------------------

    def _offered(self, body: bytes) -> None:
        """A version from the server (an MQTT thread): the loop takes it between two runs."""
        self.offers.put(body)
        self.wake.set()

    def _watch(self) -> None:
        """Every second, whatever the interval: confirm, expire or roll back the applied version."""
        while not self.stop.wait(WATCH_EVERY):
            if self.remote is None or self.mqtt is None:
                return
            try:
                reports = self.remote.tick(self.mqtt.status.acked_seq)
            except Exception as exc:  # noqa: BLE001 - the guard must outlive one bad tick
                log.error("remote configuration check failed", extra={"reason": repr(exc)})
                continue
            for report in reports:
                self._report(report)
            if reports:
                self._revert = True
                self.wake.set()

    def _report(self, report: Report) -> None:
        if self.mqtt is not None:
            self.mqtt.report(report)

    def _signals(self) -> None:
        def on_stop(signum: int, _frame: Any) -> None:
            log.info("stopping", extra={"reason": signal.Signals(signum).name})
            self.stop.set()
            self.wake.set()

        def on_hup(_signum: int, _frame: Any) -> None:
            log.info("reloading the configuration", extra={"reason": "SIGHUP"})
            self.hup.set()
            self.wake.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
