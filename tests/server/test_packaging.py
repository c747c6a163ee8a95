"""The server stands on the protocol package alone: it never imports the agent."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from importlib.metadata import requires
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AGENT_ONLY = ("edgemon", "psutil", "pluggy", "schedule")

BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"the server imported {{name}}")
        return None
sys.meta_path.insert(0, Block())
"""


def test_the_server_distribution_does_not_require_the_agent():
    deps = [re.split(r"[<>=~!;\[ ]", r, maxsplit=1)[0] for r in requires("edgemon-server") or []]
    assert "edgemon-protocol" in deps
    assert "edgemon-core" not in deps


@pytest.mark.slow  # a process of its own: end to end
def test_the_server_runs_with_the_agent_unimportable(tmp_path):
    """Every module of the server imports, and its commands run, while importing the agent fails."""
    script = (
        BLOCKER.format(blocked=AGENT_ONLY)
        + """
import pkgutil, importlib, edgemon_server
for mod in pkgutil.walk_packages(edgemon_server.__path__, "edgemon_server."):
    if ".migrations" not in mod.name:
        importlib.import_module(mod.name)
from edgemon_server.cli import main
assert main(["db", "upgrade", "--database-url", "sqlite:///" + sys.argv[1]]) == 0
print("ok")
"""
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "e.db")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


@pytest.mark.slow
def test_the_server_installs_into_a_fresh_venv_without_the_agent(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, str(ROOT / "edgemon-protocol"), str(ROOT / "server")], check=True, timeout=600)
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"edgemon-server", "edgemon-protocol"} <= names
    assert not names & {"edgemon-core", "psutil", "pluggy", "schedule"}
    env = {**os.environ, "PATH": f"{env_dir / 'bin'}:{os.environ['PATH']}"}
    db = f"sqlite:///{tmp_path / 'e.db'}"
    run = subprocess.run(
        ["edgemon-server", "db", "upgrade", "--database-url", db], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    agent = subprocess.run([str(py), "-c", "import edgemon"], capture_output=True, text=True)
    assert agent.returncode != 0
