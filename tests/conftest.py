"""Shared fixtures: plugin managers without entry points, agents, fake installs, the CLI."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy
import pytest

from edgemon import config as config_mod
from edgemon.agent import Agent
from edgemon.plugins import make_plugin_manager

REPO = Path(__file__).resolve().parent.parent


def load_script(name: str) -> Any:
    """``scripts/<name>.py`` as a module (the generators: their tests compare files with their output)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


AGENT_BIN = Path(sys.executable).parent / "edgemon-agent"
TEST_SITE = REPO / "var" / "test-plugins"
"""The example third-party plugin, installed here for the tests only (``make test``), never into the venv."""

if TEST_SITE.is_dir():  # this process finds its entry point, and so does every agent a test starts
    sys.path.append(str(TEST_SITE))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(TEST_SITE)]))


@pytest.fixture(autouse=True)
def _reset_edgemon_logging() -> Iterator[None]:
    """Undo ``logs.setup`` from in-process CLI runs, so ``caplog`` sees the next test's records."""
    yield
    for name in ("edgemon", "edgemon_server"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


@pytest.fixture
def pm() -> pluggy.PluginManager:
    """A plugin manager with the hookspecs and nothing registered (no entry points)."""
    return make_plugin_manager()


@pytest.fixture
def register_plugin(pm: pluggy.PluginManager) -> Iterator[Callable[[object, str], None]]:
    """Register a plugin object under a name; always unregisters what it registered."""
    names: list[str] = []

    def register(plugin: object, name: str) -> None:
        pm.register(plugin, name=name)
        names.append(name)

    yield register
    for name in names:
        if pm.has_plugin(name):
            pm.unregister(name=name)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def make_config(state_dir: Path) -> Callable[..., config_mod.Config]:
    """Build a Config from keyword overrides of ``[agent]`` (no file, clean environment)."""

    def make(plugins: dict[str, dict[str, Any]] | None = None, **agent: Any) -> config_mod.Config:
        agent.setdefault("state_dir", str(state_dir))
        agent.setdefault("client_id", "test-device")
        mqtt = agent.pop("mqtt", {})
        cfg = config_mod.load(path=None, environ={}, overrides={"agent": agent, "mqtt": mqtt})
        return config_mod.Config(agent=cfg.agent, mqtt=cfg.mqtt, plugins=plugins or {})

    return make


@pytest.fixture
def make_agent(
    pm: pluggy.PluginManager, make_config: Callable[..., config_mod.Config]
) -> Iterator[Callable[..., Agent]]:
    """Start an Agent over the fixture's plugin manager; closes every agent it made."""
    agents: list[Agent] = []

    def make(*plugins: tuple[str, object], **agent_settings: Any) -> Agent:
        plugin_settings = agent_settings.pop("plugins", None)
        clocks = {k: agent_settings.pop(k) for k in ("clock", "monotonic") if k in agent_settings}
        for name, plugin in plugins:
            pm.register(plugin, name=name)
        agent = Agent(make_config(plugins=plugin_settings, **agent_settings), pm=pm, **clocks)
        agent.start()
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.close()


def plugin_module(name: str, source: str) -> ModuleType:
    """Build a plugin module from source text (for in-process tests)."""
    module = ModuleType(name)
    exec(textwrap.dedent(source), module.__dict__)
    return module


@pytest.fixture
def fake_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Install a plugin distribution the way pip would leave it: a module plus ``*.dist-info``.

    The directory is put first on ``sys.path`` (in-process) and on ``PYTHONPATH``
    (for CLI subprocesses), so discovery goes through real ``importlib.metadata``
    entry points.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))

    def install(dist: str, entry_points: dict[str, str], modules: dict[str, str], version: str = "0.1") -> Path:
        for mod, source in modules.items():
            (site / f"{mod}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        eps = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[edgemon]\n{eps}\n")
        return site

    return install


def run_agent(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed ``edgemon-agent`` CLI and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(AGENT_BIN), *args], capture_output=True, text=True, env=full_env, timeout=timeout, check=False
    )


@pytest.fixture
def agent_env(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for CLI runs: private state dir, no config file from the host."""
    for key in list(os.environ):
        if key.startswith("EDGEMON_"):
            monkeypatch.delenv(key)
    return {"EDGEMON_STATE_DIR": str(state_dir), "EDGEMON_CLIENT_ID": "cli-device"}


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory):
    from tests.harness import Pki

    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(tmp_path: Path, pki):
    from tests.harness import Mosquitto

    mosquitto = Mosquitto(tmp_path / "broker", pki)
    mosquitto.start()
    yield mosquitto
    mosquitto.stop(kill=True)


@pytest.fixture
def subscriber(broker, pki):
    from tests.harness import SUBSCRIBER_CN, Subscriber

    sub = Subscriber(broker, pki.issue(SUBSCRIBER_CN))
    yield sub
    sub.stop()


def broker_env(broker, pki, identity) -> dict[str, str]:
    """``EDGEMON_MQTT_*`` for a client of the test broker with ``identity``, quick reconnects."""
    return {
        "EDGEMON_MQTT_ENDPOINT": "localhost",
        "EDGEMON_MQTT_PORT": str(broker.port),
        "EDGEMON_MQTT_CA": str(pki.ca_path),
        "EDGEMON_MQTT_CERT": str(identity.cert),
        "EDGEMON_MQTT_KEY": str(identity.key),
        "EDGEMON_MQTT_MIN_RECONNECT_DELAY": "0.2",
        "EDGEMON_MQTT_MAX_RECONNECT_DELAY": "1",
    }


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON log records in a process' output file (other lines skipped)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


@pytest.fixture
def mqtt_env(agent_env: dict[str, str], broker, pki) -> Callable[..., dict[str, str]]:
    """Environment for an agent that publishes to the test broker as ``device`` (CN)."""

    def make(device: str = "dev-1", identity=None, **extra: str) -> dict[str, str]:
        env = {
            **agent_env,
            **broker_env(broker, pki, identity or pki.issue(device)),
            "EDGEMON_INTERVAL": "1",
            "EDGEMON_LOAD_PLUGINS": "",
            "EDGEMON_LOG_FORMAT": "json",
        }
        env.pop("EDGEMON_CLIENT_ID", None)
        env.update(extra)
        return env

    return make


class AgentProc:
    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        self.state_dir = Path(env["EDGEMON_STATE_DIR"])
        self.fh = open(log, "ab")  # noqa: SIM115 - kept open for the process' lifetime
        self.proc = subprocess.Popen(
            [str(AGENT_BIN), "run", *args], env={**os.environ, **env}, stdout=self.fh, stderr=self.fh
        )

    def records(self) -> list[dict[str, Any]]:
        return json_lines(self.log)

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
