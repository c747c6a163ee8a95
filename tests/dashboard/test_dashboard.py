"""The dashboard in real headless Chromium against a server fed by the real collector, and `make run`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

from tests.conftest import REPO
from tests.fleet import Fleet, payload
from tests.harness import free_port
from tests.server.conftest import SERVER_BIN

pytestmark = pytest.mark.slow
FRONTEND = REPO / "frontend"
BUILT = REPO / "server" / "src" / "edgemon_server" / "static" / "index.html"


def wait_http(url: str, timeout: float, proc: subprocess.Popen[str] | None = None) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return bytes(r.read())
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"exited: {proc.stdout.read() if proc.stdout else ''}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_dashboard_end_to_end_in_chromium(tmp_path, broker, pki, sqlite_url, collector_env, mqtt_env, run_agent_proc):
    assert BUILT.exists(), "the dashboard is built by `make test` (npm run build) before pytest"
    port = free_port()
    server = subprocess.Popen(
        [str(SERVER_BIN), "run"],
        env=collector_env(sqlite_url, EDGEMON_HTTP_BIND=f"127.0.0.1:{port}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    fleet = None
    try:
        wait_http(base + "/healthz", 30, server)
        start = time.time() - 120
        gone = Fleet(broker, pki, 1, prefix="gone", start=start)  # a device that stopped reporting
        gone.publish(10)
        assert gone.wait(30)
        time.sleep(6)  # > 3 intervals of 1 s and the 5 s floor: offline
        gone.stop()
        # A real agent with a third-party plugin (examples/edgemon-example) that declares a unit and a headline.
        # Its threshold on the plugin's metric fires at once (a critical alert for the dashboard to show).
        rules = tmp_path / "agent.toml"
        rules.write_text(
            '[[alerts.threshold]]\nname = "answer_high"\nmetric = "example-answer"\nabove = 10\nseverity = "critical"\n'
        )
        run_agent_proc(mqtt_env("agent-1", EDGEMON_LOAD_PLUGINS="cpu,disk,example", EDGEMON_CONFIG=str(rules)))
        fleet = Fleet(broker, pki, 4, prefix="site", start=start, plugin_states=True)
        fleet.describe(
            {
                "cpu-percent": {"unit": "%", "headline": "CPU"},
                "memory-percent": {"unit": "%", "headline": "Memory"},
                "disk-usage-*-percent": {"unit": "%", "headline": "Disk"},
                "gpu-*-utilization-gpu": {"unit": "%", "headline": "GPU"},
                "gpu-*-temp_c": {"unit": "°C"},
            }
        )
        fleet.publish(100)
        assert fleet.wait(60)
        device = fleet.devices[2].name
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            body = json.loads(wait_http(f"{base}/api/v1/devices/{device}", 5))
            if body["counters"]["received"] == 100:
                break
            time.sleep(0.3)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            heads = {
                d["id"]: {h["label"]: h for h in d["headlines"]}
                for d in json.loads(wait_http(f"{base}/api/v1/devices", 5))["devices"]
            }
            if heads.get("agent-1", {}).get("Answer", {}).get("value") is not None:
                break
            time.sleep(0.3)
        assert heads["agent-1"]["Answer"] == {"label": "Answer", "key": "example-answer", "value": 42, "unit": "count"}
        # A silence on the alert: the device page shows it next to the alert.
        from edgemon_server import cli

        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        args = ["silence", "add", "--match", "rule=answer_high", "--until", until, "--comment", "known"]
        assert cli.main([*args, "--database-url", sqlite_url]) == 0
        drift = fleet.devices[1].name  # a configuration it never applies (a simulated device): drift
        push = tmp_path / "interval.toml"
        push.write_text("[agent]\ninterval = 5\n")
        assert cli.main(["config", "push", "--device", drift, str(push), "--database-url", sqlite_url]) == 0
        last = payload(device, 99, start=start)["metrics"]
        values = {
            "cpu-percent": f"{last['cpu']['percent']:.1f} %",
            "memory-percent": f"{float(last['memory']['percent']):.1f} %",
            "gpu-0-temp_c": "55 °C",
        }
        shots = REPO / "var" / "screenshots"
        env = {
            **os.environ,
            "BASE_URL": base,
            "DEVICE": device,
            "METRICS": "cpu-percent,memory-percent",
            "POINTS": "100",
            "VALUES": json.dumps(values),
            "SHOTS": str(shots),
            "OFFLINE": "gone-0000",
            "PLUGIN_PROBLEM": "acme_sensors 2.1.0 failed — edgemon_startup raised OSError: no bus",
            "AGENT_DEVICE": "agent-1",
            "HEADLINE": json.dumps({"label": "Answer", "value": "42"}),
            "AGENT_METRICS": "cpu-percent,agent-cycle_ms",
            "AGENT_AXES": "% | ms",
            "DRIFT": drift,
            "ALERT": json.dumps(
                {"rule": "answer_high", "cell": "1 critical", "metric": "example-answer", "silenced": "known"}
            ),
        }
        out = subprocess.run(
            ["node", "e2e/dashboard.mjs"], cwd=FRONTEND, env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert json.loads(out.stdout.strip().splitlines()[-1]) == {"ok": True, "failures": []}
        for name in ("overview.png", "device.png"):
            assert (shots / name).stat().st_size > 10_000
    finally:
        if fleet is not None:
            fleet.stop()
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)


@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
def test_make_run_starts_the_stack_and_sigint_stops_every_process(tmp_path, broker):
    """`make run` with a real mosquitto (mTLS), and with the embedded amqtt where mosquitto is missing."""
    var = tmp_path / "var"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "scripts" / "run_stack.py"),
            "--var",
            str(var),
            "--mqtt-port",
            "0",
            "--http-port",
            "0",
            "--interval",
            "1",
            "--broker",
            broker,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": ""},  # as `make run` starts it: without the tests' example plugin
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "dashboard http://127.0.0.1:" in line, line + (proc.stdout.read() if proc.poll() is not None else "")
        url = line.split("dashboard ")[1].split()[0]
        assert b"<title>edgemon</title>" in wait_http(url, 10) or not BUILT.exists()
        deadline = time.monotonic() + 30
        devices: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            devices = json.loads(wait_http(url + "api/v1/devices", 5))["devices"]
            if devices and devices[0]["metrics"]:
                break
            time.sleep(0.5)
        assert devices, "the local agent's data did not appear within 30 s"
        heads = {h["label"]: h for h in devices[0]["headlines"]}
        assert heads["CPU"]["value"] is not None, "the agent's plugins declared their headlines"
        assert "Answer" not in heads, "make run does not load the example plugin"
        pids = json.loads((var / "run" / "pids.json").read_text())
        assert set(pids) == {"broker", "server", "agent"}
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def fleet_database(path, devices: int) -> str:
    """A migrated SQLite database of ``devices`` devices with CPU and disk headlines, tags and recent samples."""
    import sqlite3

    from edgemon_server import migrations
    from edgemon_server.db import make_engine

    url = f"sqlite:///{path}"
    engine = make_engine(url)
    migrations.upgrade(engine)
    engine.dispose()
    now = round(time.time() * 1000)
    names = [f"dev-{i:05d}" for i in range(devices)]
    entries = json.dumps(
        [["cpu-percent", {"unit": "%", "headline": "CPU"}], ["disk-usage-*-percent", {"unit": "%", "headline": "Disk"}]]
    )
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO devices (id, first_seen, last_seen, last_ts, last_seq, interval, attributes, received,"
            " duplicates, first_seq, max_seq) VALUES (?, ?, ?, ?, 3, 10, '{}', 3, 0, 1, 3)",
            [
                (
                    n,
                    now - 3_600_000,
                    now - (600_000 if i % 7 == 0 else 0),
                    now,
                )
                for i, n in enumerate(names)
            ],
        )
        db.executemany(
            "INSERT INTO metric_meta (device_id, ts, received, entries, tags) VALUES (?, ?, ?, ?, ?)",
            [(n, now, now, entries, json.dumps({"site": f"site-{i % 5}"})) for i, n in enumerate(names)],
        )
        series = []
        for i, n in enumerate(names):
            cpu = (i * 37) % 1000 / 10  # every value once in a while; the last device gets the top one below
            series.append((n, "cpu-percent", now, 100.0 if i == devices - 1 else min(cpu, 99.9)))
            series.append((n, "disk-usage-sda-percent", now, float(i % 90)))
        db.executemany("INSERT INTO series (device_id, key, last_ts, last_value) VALUES (?, ?, ?, ?)", series)
        ids = db.execute("SELECT id, last_value FROM series").fetchall()
        db.executemany(
            "INSERT INTO samples (series_id, ts, value) VALUES (?, ?, ?)",
            [(sid, now - k * 120_000, value) for sid, value in ids for k in range(3)],
        )
    db.close()
    return url


def test_the_overview_pages_and_sorts_10000_devices_on_the_server(tmp_path):
    assert BUILT.exists(), "the dashboard is built by `make test` (npm run build) before pytest"
    fleet = 10_000
    url = fleet_database(tmp_path / "fleet.db", fleet)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEMON_")}
    env.update(EDGEMON_DATABASE_URL=url, EDGEMON_HTTP_BIND=f"127.0.0.1:{port}", EDGEMON_RATE_LIMIT="")
    server = subprocess.Popen(
        [str(SERVER_BIN), "api"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/api/v1/openapi.json", 30, server)
        out = subprocess.run(
            ["node", "e2e/fleet10k.mjs"],
            cwd=FRONTEND,
            env={**os.environ, "BASE_URL": base, "FLEET": str(fleet), "TOP": f"dev-{fleet - 1:05d}"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["ok"], result["failures"]
        print(
            f"10,000 devices: first page rendered {result['render_ms']:.0f} ms after its response "
            f"(the overview request took {result['overview_request_ms']:.0f} ms)"
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
