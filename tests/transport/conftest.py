"""Fixtures for agent processes talking to the test broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AGENT_BIN


class AgentProc:
    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        self.state_dir = Path(env["EDGEMON_STATE_DIR"])
        self.fh = open(log, "ab")  # noqa: SIM115 - kept open for the process' lifetime
        self.proc = subprocess.Popen(
            [str(AGENT_BIN), "run", *args], env={**os.environ, **env}, stdout=self.fh, stderr=self.fh
        )

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(15)
        if not self.fh.closed:
            self.fh.close()
        return code


@pytest.fixture
def run_agent_proc(tmp_path):
    procs: list[AgentProc] = []

    def start(env: dict[str, str], *args: str) -> AgentProc:
        proc = AgentProc(env, tmp_path / f"agent-{len(procs)}.log", *args)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop(signal.SIGKILL)
