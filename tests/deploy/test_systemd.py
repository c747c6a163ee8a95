"""deploy/systemd/: hardened units whose key lines, command lines and sandbox score are checked."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

UNITS = REPO / "deploy" / "systemd"
ANALYZE = shutil.which("systemd-analyze")


def unit(name: str) -> dict[str, list[str]]:
    """``Section.Key`` -> values (a key may repeat, as SystemCallFilter= does)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in (UNITS / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


def one(u: dict[str, list[str]], key: str) -> str:
    (value,) = u[key]
    return value


@pytest.mark.parametrize("name", ["edgemon-agent.service", "edgemon-server.service"])
def test_units_run_unprivileged_and_do_not_loop_on_a_configuration_error(name):
    u = unit(name)
    assert one(u, "Service.User") not in ("", "root")
    assert one(u, "Service.Restart") == "on-failure"
    assert int(one(u, "Service.RestartSec")) >= 1
    assert "2" in one(u, "Service.RestartPreventExitStatus").split(), "exit 2 is a configuration error"
    assert "network-online.target" in one(u, "Unit.Wants")
    assert "network-online.target" in one(u, "Unit.After")
    assert one(u, "Service.StateDirectory")
    assert one(u, "Service.NoNewPrivileges") == "yes"
    assert one(u, "Service.ProtectSystem") == "strict"
    assert one(u, "Service.CapabilityBoundingSet") == ""
    assert one(u, "Install.WantedBy") == "multi-user.target"


def test_the_agent_unit_reloads_with_sighup_and_keeps_proc_sys_and_nvidia():
    u = unit("edgemon-agent.service")
    assert one(u, "Service.ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(u, "Service.DevicePolicy") == "closed"
    assert "char-nvidia-frontend rw" in u["Service.DeviceAllow"], "NVML opens /dev/nvidiactl and /dev/nvidia<N>"
    for hiding in ("PrivateDevices", "ProtectProc", "ProcSubset", "PrivateNetwork"):
        assert f"Service.{hiding}" not in u, f"{hiding}= would hide what the agent reads"
    state = one(u, "Service.StateDirectory")
    assert f"EDGEMON_STATE_DIR=/var/lib/{state}" in u["Service.Environment"], "the buffer lives in the state dir"


@pytest.mark.parametrize(
    ("name", "module"), [("edgemon-agent.service", "edgemon.cli"), ("edgemon-server.service", "edgemon_server.cli")]
)
def test_the_command_lines_are_ones_the_programs_accept(name, module):
    import importlib

    parser = importlib.import_module(module)._parser()
    u = unit(name)
    for key in ("Service.ExecStartPre", "Service.ExecStart"):
        for line in u.get(key, []):
            argv = shlex.split(line)
            assert Path(argv[0]).name in ("edgemon-agent", "edgemon-server")
            parser.parse_args(argv[1:])  # exits (fails the test) on an unknown sub-command or option


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (the key lines are tested above)")
@pytest.mark.parametrize(("name", "ceiling"), [("edgemon-agent.service", 3.0), ("edgemon-server.service", 3.0)])
def test_systemd_accepts_the_units_and_rates_their_exposure(tmp_path, name, ceiling):
    assert ANALYZE is not None
    text = (UNITS / name).read_text(encoding="utf-8")
    text = re.sub(r"/opt/edgemon(-server)?/bin/edgemon-(agent|server)", "/bin/true", text)  # not installed here
    copy = tmp_path / name
    copy.write_text(text, encoding="utf-8")
    verify = subprocess.run([ANALYZE, "verify", str(copy)], capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == "", verify.stderr
    security = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(copy)], capture_output=True, text=True, check=False
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", security.stdout)
    assert found, security.stdout[-500:] + security.stderr
    assert float(found.group(1)) <= ceiling
