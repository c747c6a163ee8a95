"""Helpers of the notification tests: a local HTTP receiver, alerts in payloads, a fake clock."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from edgemon_protocol.alerting import fingerprint
from edgemon_protocol.payload import utc_timestamp
from edgemon_server import notify
from edgemon_server.notify_config import NotifyConfig, Receiver, Route
from edgemon_server.store import Message, Store
from tests.fleet import payload


class Receiver_:  # noqa: N801 - a test double of a receiver
    """An HTTP server that records what it is sent and answers with ``status``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.tried: list[str] = []
        """The key of every request, answered 2xx or not."""
        self.status = 200
        self.delay = 0.0
        """Seconds each answer takes (a slow receiver)."""
        self.gate: threading.Event | None = None
        """When set to an event, each request waits for it before it is answered (``arrived`` is set)."""
        self.arrived = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                outer.tried.append(self.headers["Idempotency-Key"])
                outer.arrived.set()
                if outer.gate is not None:
                    outer.gate.wait(60)
                time.sleep(outer.delay)
                if outer.status == 200:
                    outer.bodies.append(json.loads(data))
                    outer.keys.append(self.headers["Idempotency-Key"])
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver_()
    yield r
    r.close()


def fire(store: Store, device: str, seq: int, alerts: list[dict[str, Any]], now: float) -> None:
    doc = payload(device, seq, start=now - seq)
    doc["alerts"] = alerts
    store.write([Message(f"devices/{device}/monitoring", json.dumps(doc).encode(), now)], now=now)


def alert(rule: str, key: str, severity: str, at: float) -> dict[str, Any]:
    return {
        "rule": rule,
        "severity": severity,
        "message": f"{key} too high",
        "key": key,
        "state": "firing",
        "since": utc_timestamp(at),
        "changed": utc_timestamp(at),
        "fingerprint": fingerprint(rule, key),
    }


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def notifier(engine, receiver, clock, **route: Any) -> notify.Notifier:
    """A notifier with one receiver and one route, each alert its own group, sent at once unless told."""
    route.setdefault("match", {"severity": "critical"})
    route.setdefault("group_wait", 0.0)
    route.setdefault("group_interval", 0.0)
    config = NotifyConfig({"ops": Receiver("ops", receiver.url)}, (Route(receivers=("ops",), **route),))
    n = notify.Notifier(engine, config, clock)
    n.enqueue()  # running before the events of the test (it starts from the newest event)
    return n
