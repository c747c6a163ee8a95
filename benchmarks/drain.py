"""Drain rate of a store-and-forward backlog after the broker comes back.

Usage::

    .venv/bin/python benchmarks/drain.py [--payloads 100000] [--drain-rate 0]

Fills ``buffer.db`` with N realistic payloads (the agent's own, about 1.5 KB),
starts ``edgemon-agent run`` against a local mosquitto over mutual TLS with
a long interval (so only the backlog moves), and times until a subscriber has
received all N. ``--drain-rate 0`` lifts the bound to measure the capacity;
the agent's default bound is 200 payloads/s (90/s toward AWS IoT Core).
In the same run it times the bare publish rate of one awscrt client over the
same broker and TLS (QoS 1, 32 in flight) as the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgemon.buffer import Buffer
from edgemon_protocol import topics
from tests.harness import COLLECTOR_CN, Mosquitto, Pki, Subscriber

BIN = Path(sys.executable).parent


def sample_payload() -> dict[str, object]:
    out = subprocess.run(
        [str(BIN / "edgemon-agent"), "once"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "EDGEMON_STATE_DIR": tempfile.mkdtemp(), "EDGEMON_LOG_LEVEL": "error"},
    )
    doc: dict[str, object] = json.loads(out.stdout)
    return doc


def bare_publish_rate(broker: Mosquitto, pki: Pki, n: int, body: bytes) -> float:
    from awscrt import mqtt5
    from awsiot import mqtt5_client_builder

    ident = pki.issue("bench-bare")
    connected = threading.Event()
    client = mqtt5_client_builder.mtls_from_path(
        endpoint="localhost",
        port=broker.port,
        cert_filepath=str(ident.cert),
        pri_key_filepath=str(ident.key),
        ca_filepath=str(pki.ca_path),
        client_id="bench-bare",
        enable_metrics_collection=False,
        extended_validation_and_flow_control_options=mqtt5.ExtendedValidationAndFlowControlOptions.NONE,
        on_lifecycle_connection_success=lambda _d: connected.set(),
    )
    client.start()
    connected.wait(10)
    window = threading.Semaphore(32)
    t0 = time.perf_counter()
    futures = []
    for _ in range(n):
        window.acquire()
        f = client.publish(
            mqtt5.PublishPacket(topic=topics.monitoring("bench-bare"), payload=body, qos=mqtt5.QoS.AT_LEAST_ONCE)
        )
        f.add_done_callback(lambda _f: window.release())
        futures.append(f)
    for f in futures:
        f.result(30)
    rate = n / (time.perf_counter() - t0)
    client.stop()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payloads", type=int, default=100_000)
    parser.add_argument("--drain-rate", type=float, default=0.0, help="agent drain bound; 0 = unbounded")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgemon-drain-"))
    pki = Pki(work / "pki")
    broker = Mosquitto(work / "broker", pki)
    broker.start()
    device = "bench-drain"
    ident = pki.issue(device)
    doc = sample_payload()
    doc["device_id"] = device
    state = work / "state"
    buffer = Buffer(state / "buffer.db", max_bytes=10**10)
    t0 = time.perf_counter()
    size = 0
    for seq in range(1, args.payloads + 1):
        doc["seq"] = seq
        body = json.dumps(doc, separators=(",", ":")).encode()
        size = len(body)
        buffer.append(topics.monitoring(device), seq, body)
    fill = time.perf_counter() - t0
    buffer.close()
    (state / "seq").write_text(f"{args.payloads}\n")

    bare = bare_publish_rate(broker, pki, min(args.payloads, 20_000), body)
    subscriber = Subscriber(broker, pki.issue(COLLECTOR_CN), topic=topics.monitoring(device))
    env = {
        **os.environ,
        "EDGEMON_STATE_DIR": str(state),
        "EDGEMON_LOAD_PLUGINS": "",
        "EDGEMON_LOG_LEVEL": "warning",
        "EDGEMON_INTERVAL": "3600",
        "EDGEMON_BUFFER_MAX_MB": "100000",
        "EDGEMON_MQTT_DRAIN_RATE": str(args.drain_rate or 10**9),
        "EDGEMON_MQTT_ENDPOINT": "localhost",
        "EDGEMON_MQTT_PORT": str(broker.port),
        "EDGEMON_MQTT_CA": str(pki.ca_path),
        "EDGEMON_MQTT_CERT": str(ident.cert),
        "EDGEMON_MQTT_KEY": str(ident.key),
    }
    t0 = time.perf_counter()
    agent = subprocess.Popen([str(BIN / "edgemon-agent"), "run"], env=env)
    try:
        ok = subscriber.wait_count(args.payloads, timeout=3600)
        elapsed = time.perf_counter() - t0
    finally:
        agent.terminate()
        agent.wait(30)
        subscriber.stop()
        broker.stop()
    seqs = {p["seq"] for p in subscriber.payloads()}
    rate = args.payloads / elapsed
    print(f"backlog: {args.payloads} payloads of {size} B (filled in {fill:.1f} s, {args.payloads / fill:.0f}/s)")
    print(f"agent drain (bound {'none' if not args.drain_rate else args.drain_rate}): {elapsed:.1f} s, {rate:.0f}/s")
    print(f"bare awscrt publish, same broker and TLS, 32 in flight: {bare:.0f}/s")
    print(f"ratio agent / bare: {rate / bare:.2f}; all seqs received: {ok and len(seqs) >= args.payloads}")


if __name__ == "__main__":
    main()
