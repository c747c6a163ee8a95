"""Build an offline agent bundle: every wheel the agent needs, an installer and the systemd unit.

    python scripts/bundle.py [--python 3.9] [--platform x86_64|aarch64] [--out dist]

makes ``dist/edgemon-agent-<version>-py<python>-<platform>.tar.gz`` holding

- ``wheels/``: edgemon-protocol, edgemon-core and the three plugins (built from this checkout) and
  every dependency for that Python and platform (manylinux wheels only, through pip's
  ``download --only-binary=:all: --platform --python-version``: nothing is compiled on the device);
- ``install.sh [--prefix DIR] [--no-service] [--python PYTHON]``: a venv at DIR (``/opt/edgemon``),
  installed with ``pip --no-index`` from ``wheels/`` and no pip configuration (no registry, no
  mirror is ever asked), then unless ``--no-service`` the ``edgemon`` user, the systemd unit and
  ``/etc/edgemon/agent.toml`` (kept when present);
- ``edgemon-agent.service`` (deploy/systemd) and ``agent.toml.example``.

Building needs the package registry (or a mirror); installing needs only the tarball and a Python
of the bundle's version with its ``venv`` module (Debian/Ubuntu: ``python3-venv``).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCAL = ["edgemon-protocol", "edgemon-core", "plugins/edgemon-cpu", "plugins/edgemon-disk", "plugins/edgemon-gpu-nvml"]
REQUIREMENTS = ["edgemon-core", "edgemon-cpu", "edgemon-disk", "edgemon-gpu-nvml"]
"""What install.sh installs (the dependencies follow from the wheels' metadata)."""
PLATFORMS = {
    # newest first: pip takes the first tag a wheel has; manylinux2014 = glibc 2.17 (Debian 11 has 2.31)
    "x86_64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "aarch64": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"],
}

INSTALL_SH = r"""#!/bin/sh
# Install the edgemon agent from this bundle, with no network access.
#   ./install.sh [--prefix DIR] [--no-service] [--python PYTHON]
# --prefix     where the venv goes (default /opt/edgemon; the agent is DIR/bin/edgemon-agent)
# --no-service only the venv: no user, no systemd unit, no /etc/edgemon
# --python     the interpreter to build the venv from (default python3); must be Python @PYVER@
set -eu
PREFIX=/opt/edgemon
SERVICE=1
PYTHON=python3
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=$2; shift 2 ;;
        --no-service) SERVICE=0; shift ;;
        --python) PYTHON=$2; shift 2 ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
HAVE=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$HAVE" != "@PYVER@" ]; then
    echo "install.sh: this bundle is for Python @PYVER@; $PYTHON is $HAVE (use --python, or a bundle for $HAVE)" >&2
    exit 2
fi
if ! "$PYTHON" -m venv "$PREFIX"; then
    echo "install.sh: no venv module (Debian/Ubuntu: apt install python3-venv)" >&2
    exit 1
fi
# No registry, no mirror, no pip.conf: everything comes from wheels/ or the install fails.
PIP_CONFIG_FILE=/dev/null "$PREFIX/bin/python" -m pip install --quiet --no-index --disable-pip-version-check \
    --find-links "$HERE/wheels" @REQUIREMENTS@
"$PREFIX/bin/edgemon-agent" --version
if [ "$SERVICE" = 0 ]; then
    echo "installed in $PREFIX (no service)"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install.sh: the service needs root (or use --no-service)" >&2
    exit 1
fi
id edgemon >/dev/null 2>&1 || useradd --system --home-dir /var/lib/edgemon --shell /usr/sbin/nologin edgemon
# /dev/nvidia* on Debian/Ubuntu belong to root:root 0666; where a distribution restricts them to the
# video group, the agent needs it for NVML.
if getent group video >/dev/null; then usermod -a -G video edgemon; fi
mkdir -p /etc/edgemon
if [ ! -f /etc/edgemon/agent.toml ]; then
    install -m 0640 -g edgemon "$HERE/agent.toml.example" /etc/edgemon/agent.toml
fi
sed "s#/opt/edgemon/bin/edgemon-agent#$PREFIX/bin/edgemon-agent#" "$HERE/edgemon-agent.service" \
    > /etc/systemd/system/edgemon-agent.service
systemctl daemon-reload
echo "installed. Edit /etc/edgemon/agent.toml (broker, certificates), then: systemctl enable --now edgemon-agent"
"""

AGENT_TOML = """# The edgemon agent's configuration (docs/reference.md in the source lists every key).
[agent]
interval = 10.0

[mqtt]
endpoint = "broker.example.net"          # AWS IoT Core: xxxx-ats.iot.<region>.amazonaws.com
port = 8883
ca = "/etc/edgemon/ca.pem"
cert = "/etc/edgemon/device.pem.crt"
key = "/etc/edgemon/private.pem.key"     # readable by the edgemon user only
"""


def version() -> str:
    for line in (REPO / "edgemon-core" / "pyproject.toml").read_text(encoding="utf-8").splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise SystemExit("no version in edgemon-core/pyproject.toml")


def backports(wheels: Path, python: str, arch: str) -> list[str]:
    """Our wheels' requirements whose markers hold on the target but not here (``tomli`` on 3.10-).

    ``pip download --python-version`` picks wheels for the target but evaluates environment
    markers against the Python running it, so these would be left out of a 3.9 bundle built on 3.11.
    """
    from packaging.requirements import Requirement  # pip's own dependency, build time only

    target = {"python_version": python, "python_full_version": f"{python}.0", "platform_machine": arch}
    local = {Path(p).name for p in LOCAL}
    out = []
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            lines = zf.read(meta).decode().splitlines()
        for line in lines:
            if not line.startswith("Requires-Dist: "):
                continue
            req = Requirement(line.removeprefix("Requires-Dist: "))
            if req.name in local or req.marker is None or "extra" in str(req.marker):
                continue
            if req.marker.evaluate(target) and not req.marker.evaluate():
                out.append(f"{req.name}{req.specifier}")
    return sorted(set(out))


def run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def build(python: str, arch: str, out: Path) -> Path:
    """The bundle's path, after building it."""
    name = f"edgemon-agent-{version()}-py{python.replace('.', '')}-{arch}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        wheels = root / "wheels"
        wheels.mkdir(parents=True)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        # the local packages: pure-Python wheels, built with this venv's setuptools (no isolation: offline-safe)
        run(
            [*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels)]
            + [str(REPO / p) for p in LOCAL]
        )
        platforms = [arg for tag in PLATFORMS[arch] for arg in ("--platform", tag)]
        run(
            [
                *pip,
                "download",
                "--quiet",
                "--only-binary=:all:",
                "--python-version",
                python,
                "--implementation",
                "cp",
                *platforms,
                "--find-links",
                str(wheels),
                "-d",
                str(wheels),
                *REQUIREMENTS,
                *backports(wheels, python, arch),
            ]
        )
        install = INSTALL_SH.replace("@PYVER@", python).replace("@REQUIREMENTS@", " ".join(REQUIREMENTS))
        (root / "install.sh").write_text(install, encoding="utf-8")
        (root / "install.sh").chmod(0o755)
        shutil.copy(REPO / "deploy" / "systemd" / "edgemon-agent.service", root / "edgemon-agent.service")
        (root / "agent.toml.example").write_text(AGENT_TOML, encoding="utf-8")
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"{name}.tar.gz"
        with tarfile.open(target, "w:gz") as tar:
            tar.add(root, arcname=name)
    print(f"{target} ({target.stat().st_size / 1e6:.1f} MB)")
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default="{}.{}".format(*sys.version_info[:2]), help="target Python, e.g. 3.9")
    parser.add_argument("--platform", default=platform.machine(), choices=sorted(PLATFORMS))
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    args = parser.parse_args()
    build(args.python, args.platform, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
