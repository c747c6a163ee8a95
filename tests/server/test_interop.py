"""Where users already are: Prometheus exposition, CSV export, counters as rates, one metric across the fleet."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

import pytest

from edgemon_protocol import meta
from edgemon_protocol.meta import Metric
from edgemon_protocol.payload import utc_timestamp
from edgemon_server.api import ApiSettings, create_app
from edgemon_server.store import Message, Store
from tests.fleet import payload

START = time.time() - 600


def send(store: Store, device: str, seq: int, **metrics: Any) -> None:
    doc = payload(device, seq, start=START)
    doc["metrics"].update(metrics)
    store.write([Message(f"devices/{device}/monitoring", json.dumps(doc).encode(), time.time())])


def describe(store: Store, device: str, entries: dict[str, Metric]) -> None:
    body = meta.encode(device, utc_timestamp(time.time()), entries)
    assert store.write([Message(f"devices/{device}/meta", body, time.time())]).described == 1


DESCRIBED = {
    "disk-usage-*-percent": Metric("%", description="used share of the file system", headline="Disk"),
    "net-*-rx_bytes": Metric("B", kind="counter", description="bytes received"),
    "cpu-percent": Metric("%", headline="CPU"),
}


@pytest.fixture
def client(engine, store):
    for i, device in enumerate(("press-1", "press-2", "lab-1")):
        describe(store, device, DESCRIBED)
        for seq in range(3):
            send(
                store,
                device,
                seq,
                disk={"usage": {"sda": {"percent": 40.0 + i * 20 + seq}, "sdb": {"percent": 10.0 + seq}}},
            )
    return create_app(engine, ApiSettings(rate_limit="")).test_client()


def test_metrics_is_the_prometheus_text_format_with_labels_types_and_help(client):
    from prometheus_client.parser import text_string_to_metric_families

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    disk = families["disk_usage_percent"]
    assert disk.type == "gauge"
    assert "used share of the file system" in disk.documentation
    assert "[%]" in disk.documentation
    values = {(s.labels["device"], s.labels["disk"]): s.value for s in disk.samples}
    assert values[("press-2", "sda")] == 62.0, "the latest value, the instance as a label"
    assert values[("lab-1", "sdb")] == 12.0
    rx = families["net_rx_bytes"]  # a counter: the family name the parser gives drops nothing we named
    assert rx.type == "counter"
    assert {s.labels["net"] for s in rx.samples} == {"eth0", "wlan0"}
    up = {s.labels["device"]: s.value for s in families["edgemon_device_up"].samples}
    assert up == {"lab-1": 1.0, "press-1": 1.0, "press-2": 1.0}
    assert families["edgemon_exporter_truncated"].samples[0].value == 0.0
    undescribed = families["sensors_t3"]  # a key nobody described: untyped, one series per device
    assert undescribed.type == "unknown"


def test_metrics_pages_large_fleets_and_filters_by_device(client):
    from prometheus_client.parser import text_string_to_metric_families

    page = client.get("/metrics?device=press-*&limit=1").get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(page)}
    assert {s.labels["device"] for s in families["edgemon_device_up"].samples} == {"press-1"}
    assert families["edgemon_exporter_truncated"].samples[0].value == 1.0
    assert "# truncated: the next page is after=press-1" in page
    rest = client.get("/metrics?device=press-*&limit=1&after=press-1").get_data(as_text=True)
    assert 'edgemon_device_up{device="press-2"} 1.0' in rest
    assert client.get("/metrics?limit=0").status_code == 400


def test_unknown_paths_under_api_and_metrics_answer_json_not_the_dashboard(client):
    for path in ("/api/v2/nothing", "/metrics/federate", "/api/v1/devices/press-1/nope"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.is_json, path
        assert "error" in response.get_json()


def test_metrics_needs_the_token_when_one_is_set(engine):
    guarded = create_app(engine, ApiSettings(rate_limit="", token="s3cret")).test_client()
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_a_series_as_csv(client):
    response = client.get("/api/v1/devices/press-1/series?metric=disk-usage-sda-percent&from=-1h&format=csv")
    assert response.status_code == 200
    assert response.content_type.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [float(r["value"]) for r in rows] == [40.0, 41.0, 42.0]
    assert rows[0]["metric"] == "disk-usage-sda-percent"
    assert rows[0]["ts"].endswith("Z")
    by_accept = client.get(
        "/api/v1/devices/press-1/series?metric=disk-usage-sda-percent&from=-1h", headers={"Accept": "text/csv"}
    )
    assert by_accept.content_type.startswith("text/csv")
    assert client.get("/api/v1/devices/press-1/series?metric=cpu-percent&format=xml").status_code == 400


def test_a_counter_as_a_rate_survives_a_reset(client, store):
    for seq, received in enumerate([0, 1000, 2000, 500, 1500], start=10):  # a reboot after 2000
        send(store, "press-1", seq, net={"eth0": {"rx_bytes": received, "tx_bytes": 0}})
    url = "/api/v1/devices/press-1/series?metric=net-eth0-rx_bytes&fn=rate&from=" + str(int(START + 9.5))
    body = client.get(url).get_json()
    assert body["fn"] == "rate"
    (series,) = body["series"]
    # The first is measured from the sample before the range (3000 at seq 2: a drop, so a reset to 0).
    assert [round(v, 3) for _ts, v in series["points"]] == [0.0, 1000.0, 1000.0, 500.0, 1000.0], "per second"
    gauge = client.get("/api/v1/devices/press-1/series?metric=cpu-percent&fn=rate")
    assert gauge.status_code == 400
    assert "gauge, not a counter" in gauge.get_json()["error"]
    assert client.get("/api/v1/devices/press-1/series?metric=cpu-percent&fn=delta").status_code == 400


def test_one_metric_across_the_fleet_worst_first(client):
    body = client.get("/api/v1/query?metric=disk-usage-*-percent&agg=max&top=2").get_json()
    assert body["devices"] == 3
    assert [(r["device"], r["value"], r["key"]) for r in body["results"]] == [
        ("lab-1", 82.0, "disk-usage-sda-percent"),
        ("press-2", 62.0, "disk-usage-sda-percent"),
    ]
    best = client.get("/api/v1/query?metric=disk-usage-*-percent&agg=min&order=asc&device=press-*").get_json()
    assert [(r["device"], r["value"]) for r in best["results"]] == [("press-1", 12.0), ("press-2", 12.0)]
    window = client.get("/api/v1/query?metric=disk-usage-sda-percent&agg=avg&from=-1h").get_json()
    assert {r["device"]: r["value"] for r in window["results"]} == {"press-1": 41.0, "press-2": 61.0, "lab-1": 81.0}
    assert window["window"] is not None
    for bad in ("metric=", "metric=disk-usage-*-percent&agg=median", "metric=a--b", "metric=x&top=0"):
        response = client.get(f"/api/v1/query?{bad}")
        assert response.status_code == 400, bad
        assert "error" in response.get_json()
