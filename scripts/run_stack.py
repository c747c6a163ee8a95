"""The whole stack on this machine: mosquitto (mutual TLS) + edgemon-server run + a local agent.

Used by ``make run``. Everything lives under ``var/`` (certificates in
``var/pki``, the broker's files in ``var/mosquitto``, the database
``var/edgemon.db``, the agent's state in ``var/agent``). Ports: MQTT 18883
and HTTP 8080 unless taken (then free ones), or ``--mqtt-port`` /
``--http-port`` (0: any free port); the machine's own 1883 and 8000 are
never assumed free. Prints the dashboard URL; Ctrl-C (SIGINT) or SIGTERM stops
all three and waits for them. The PIDs it started are in ``var/run/pids.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from edgemon_protocol.ids import CERT_NAME_MAX, device_id_from
from edgemon_server.pki import COLLECTOR_CN, LocalCA, mosquitto_conf

BIN = Path(sys.executable).parent


def port_or_free(wanted: int) -> int:
    """``wanted`` if nothing listens there and it can be bound, else a free port."""
    if wanted:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", wanted))
                return wanted
            except OSError:
                print(f"port {wanted} is taken; using a free one", file=sys.stderr)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port}")


def wait_healthy(url: str, server: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until ``/healthz`` says 200: the collector has written its first heartbeat."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"edgemon-server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                r.read()
                return
        except urllib.error.HTTPError as exc:
            last = exc.read().decode(errors="replace")[:300]
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.3)
    raise RuntimeError(f"edgemon-server is not healthy after {timeout:g} s: {last}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--var", default=os.environ.get("EDGEMON_RUN_VAR", "var"))
    parser.add_argument("--mqtt-port", type=int, default=int(os.environ.get("EDGEMON_RUN_MQTT_PORT", "18883")))
    parser.add_argument("--http-port", type=int, default=int(os.environ.get("EDGEMON_RUN_HTTP_PORT", "8080")))
    parser.add_argument("--interval", default=os.environ.get("EDGEMON_INTERVAL", "5"))
    parser.add_argument(
        "--broker",
        choices=["auto", "mosquitto", "amqtt"],
        default=os.environ.get("EDGEMON_RUN_BROKER", "auto"),
        help="auto: mosquitto when installed, else the embedded amqtt (MQTT 3.1.1, loopback, no TLS)",
    )
    args = parser.parse_args()
    var = Path(args.var).resolve()
    for sub in ("pki", "mosquitto", "agent", "run", "logs"):
        (var / sub).mkdir(parents=True, exist_ok=True)
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    broker_kind = args.broker if args.broker != "auto" else ("mosquitto" if exe else "amqtt")
    if broker_kind == "mosquitto" and exe is None:
        print("mosquitto is not installed: `sudo apt-get install mosquitto`, or --broker amqtt", file=sys.stderr)
        return 2
    if broker_kind == "amqtt" and not (BIN / "amqtt").exists():
        print("amqtt is not installed: pip install 'edgemon-server[demo]' (make install does)", file=sys.stderr)
        return 2
    ca = LocalCA(var / "pki")
    if not ca.exists():
        ca.init()
    device = device_id_from(socket.gethostname(), CERT_NAME_MAX) or "this-host"
    if not (ca.dir / f"{device}.crt").exists():
        ca.issue(device)
    mqtt_port = port_or_free(args.mqtt_port)
    http_port = port_or_free(args.http_port)
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGEMON_")}
    mqtt = {
        "EDGEMON_MQTT_ENDPOINT": "localhost",
        "EDGEMON_MQTT_PORT": str(mqtt_port),
        "EDGEMON_MQTT_CA": str(ca.ca_path),
        "EDGEMON_MQTT_MIN_RECONNECT_DELAY": "0.5",
        "EDGEMON_MQTT_MAX_RECONNECT_DELAY": "5",
    }
    if broker_kind == "mosquitto":
        conf = var / "mosquitto" / "mosquitto.conf"
        conf.write_text(mosquitto_conf(ca, mqtt_port, var / "mosquitto"))
        broker_cmd = [str(exe), "-c", str(conf)]
        transport = f"MQTT 5, mutual TLS on 127.0.0.1:{mqtt_port}"
    else:  # embedded: MQTT 3.1.1, loopback, no TLS (amqtt speaks only MQTT 3.1.1 and checks no client certificates)
        conf = var / "mosquitto" / "amqtt.yaml"
        conf.write_text(
            f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{mqtt_port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
        )
        broker_cmd = [str(BIN / "amqtt"), "-c", str(conf)]
        mqtt.update({"EDGEMON_MQTT_PROTOCOL": "3.1.1", "EDGEMON_MQTT_INSECURE_LOCAL": "1"})
        transport = f"embedded amqtt, MQTT 3.1.1 without TLS on 127.0.0.1:{mqtt_port} (development only)"
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(var / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append((name, proc))
        (var / "run" / "pids.json").write_text(json.dumps({n: p.pid for n, p in procs}))
        return proc

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        broker = start("broker", broker_cmd)
        wait_port(mqtt_port, broker, broker_kind)
        server_env = {
            **base,
            **mqtt,
            "EDGEMON_MQTT_CERT": str(ca.dir / f"{COLLECTOR_CN}.crt"),
            "EDGEMON_MQTT_KEY": str(ca.dir / f"{COLLECTOR_CN}.key"),
            "EDGEMON_DATABASE_URL": f"sqlite:///{var / 'edgemon.db'}",
            "EDGEMON_HTTP_BIND": f"127.0.0.1:{http_port}",
        }
        server = start("server", [str(BIN / "edgemon-server"), "run"], server_env)
        wait_port(http_port, server, "edgemon-server", timeout=60)
        agent_env = {
            **base,
            **mqtt,
            "EDGEMON_MQTT_CERT": str(ca.dir / f"{device}.crt"),
            "EDGEMON_MQTT_KEY": str(ca.dir / f"{device}.key"),
            "EDGEMON_STATE_DIR": str(var / "agent"),
            "EDGEMON_INTERVAL": str(args.interval),
        }
        start("agent", [str(BIN / "edgemon-agent"), "run"], agent_env)
        url = f"http://127.0.0.1:{http_port}/"
        wait_healthy(url + "healthz", server)
        print(f"edgemon is running: dashboard {url}  (device {device}; {transport})", flush=True)
        print(f"logs in {var / 'logs'}; Ctrl-C stops everything", flush=True)
        while not stopping:
            for name, proc in procs:
                if proc.poll() is not None:
                    print(
                        f"{name} exited with {proc.returncode}; stopping (see {var / 'logs' / name}.log)",
                        file=sys.stderr,
                    )
                    stopping, code = True, 1
            time.sleep(0.2)
    except RuntimeError as exc:
        print(f"run: {exc}", file=sys.stderr)
        code = 1
    finally:
        for _name, proc in reversed(procs):  # agent, then server, then broker
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        print("stopped", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
