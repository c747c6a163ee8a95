"""The offline agent bundle: built here, installed into a fresh prefix with no registry, run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def oldest_python() -> str | None:
    """The oldest Python the agent supports, as the Makefile finds it (pyenv's 3.9.x or /usr/bin)."""
    if os.environ.get("OLDEST_PYTHON"):
        return os.environ["OLDEST_PYTHON"]
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = [*sorted(root.glob("versions/3.9.*/bin/python3")), Path("/usr/bin/python3.9")]
    return next((str(p) for p in found if p.exists()), None)


def offline_env(tmp: Path) -> dict[str, str]:
    """No route to any registry: a download attempt fails instead of quietly succeeding."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "EDGEMON_"))}
    dead = "http://127.0.0.1:9"
    env.update(http_proxy=dead, https_proxy=dead, HTTP_PROXY=dead, HTTPS_PROXY=dead, EDGEMON_STATE_DIR=str(tmp))
    return env


def build(python: str, out: Path) -> Path:
    version = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bundle.py"), "--python", version, "--out", str(out)],
        check=True,
        capture_output=True,
    )
    (bundle,) = out.glob(f"edgemon-agent-*-py{version.replace('.', '')}-*.tar.gz")
    with tarfile.open(bundle) as tar:
        tar.extractall(out, filter="data")
    (root,) = [p for p in out.iterdir() if p.is_dir()]
    return root


PYTHONS = [pytest.param(sys.executable, id="this-python"), pytest.param(oldest_python(), id="oldest-python")]


@pytest.mark.parametrize("python", PYTHONS)
def test_a_bundle_installs_offline_and_the_agent_runs(tmp_path, python):
    if python is None:
        pytest.fail("Python 3.9 is needed (pyenv install 3.9, or OLDEST_PYTHON=/path): the agent's oldest target")
    root = build(python, tmp_path / "dist")
    names = {p.name.split("-")[0] for p in (root / "wheels").glob("*.whl")}
    assert {"edgemon_core", "edgemon_protocol", "edgemon_cpu", "edgemon_disk", "edgemon_gpu_nvml"} <= names
    assert {"awscrt", "awsiotsdk", "psutil", "pluggy", "nvidia_ml_py"} <= names
    prefix = tmp_path / "opt"
    env = offline_env(tmp_path)
    done = subprocess.run(
        [str(root / "install.sh"), "--prefix", str(prefix), "--no-service", "--python", python],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "edgemon-agent 0.1.0" in done.stdout
    agent = prefix / "bin" / "edgemon-agent"
    once = subprocess.run([str(agent), "once"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert once.returncode == 0, once.stderr
    payload = json.loads(once.stdout)
    assert {"cpu", "memory", "disk"} <= set(payload["metrics"])
    listed = subprocess.run([str(agent), "plugins"], env=env, capture_output=True, text=True, timeout=60, check=True)
    for plugin in ("cpu", "disk", "gpu-nvml"):
        assert plugin in listed.stdout


def test_the_installer_takes_nothing_from_outside_the_bundle(tmp_path):
    root = build(sys.executable, tmp_path / "dist")
    (schedule,) = (root / "wheels").glob("schedule-*.whl")
    schedule.unlink()  # a bundle missing one wheel must fail, not fetch it from a registry or a mirror
    done = subprocess.run(
        [str(root / "install.sh"), "--prefix", str(tmp_path / "opt"), "--no-service", "--python", sys.executable],
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0
    assert "schedule" in done.stderr


def test_the_installer_refuses_another_python_and_unknown_options(tmp_path):
    root = build(sys.executable, tmp_path / "dist")
    other = oldest_python()
    assert other is not None
    wrong = subprocess.run(
        [str(root / "install.sh"), "--prefix", str(tmp_path / "opt"), "--no-service", "--python", other],
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode == 2
    assert "this bundle is for Python" in wrong.stderr
    assert not (tmp_path / "opt").exists(), "nothing is installed"
    unknown = subprocess.run([str(root / "install.sh"), "--prefx", "/x"], capture_output=True, text=True, check=False)
    assert unknown.returncode == 2
    assert "unknown option --prefx" in unknown.stderr
