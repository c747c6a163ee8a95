"""The HTTP API on SQLite and PostgreSQL, over data ingested through the collector's store path."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from typing import Any

import pytest
from sqlalchemy import select, text

from edgemon_protocol.payload import utc_timestamp
from edgemon_server import queries as q
from edgemon_server.api import ApiSettings, create_app
from edgemon_server.store import Message, Store
from tests.conftest import AGENT_BIN
from tests.fleet import START, payload
from tests.server.conftest import SERVER_BIN

T0 = round(START * 1000)


def ingest(store: Store, device: str, seqs, **changes) -> None:
    msgs = []
    for seq in seqs:
        p = payload(device, seq)
        p.update(changes)
        msgs.append(Message(f"devices/{device}/monitoring", json.dumps(p).encode(), time.time()))
    store.write(msgs)


@pytest.fixture(scope="session")
def agent_payload(tmp_path_factory):
    """One real agent payload for the whole session (the agent CLI takes a few hundred ms to start)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEMON_")}
    env.update(
        EDGEMON_STATE_DIR=str(tmp_path_factory.mktemp("agent-state")),
        EDGEMON_CLIENT_ID="cli-device",
        EDGEMON_LOAD_PLUGINS="cpu,disk",
    )
    out = subprocess.run([str(AGENT_BIN), "once"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.encode()


@pytest.fixture(scope="session")
def agent_meta(tmp_path_factory):
    """The same agent's metric metadata document (``edgemon-agent describe``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEMON_")}
    env.update(
        EDGEMON_STATE_DIR=str(tmp_path_factory.mktemp("agent-state")),
        EDGEMON_CLIENT_ID="cli-device",
        EDGEMON_LOAD_PLUGINS="cpu,disk",
    )
    out = subprocess.run([str(AGENT_BIN), "describe"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def describe(store: Store, device: str, doc: dict[str, Any]) -> None:
    body = json.dumps({**doc, "device_id": device}).encode()
    assert store.write([Message(f"devices/{device}/meta", body, time.time())]).described == 1


@pytest.fixture
def client(engine, store, agent_payload, agent_meta):
    ingest(store, "sim-a", [0, 1, 2, 5])
    ingest(store, "sim-a", [1])  # a duplicate
    store.write([Message("devices/sim-a/monitoring", b"{broken", time.time())])  # a reject
    ingest(store, "sim-b", range(100))
    for name in ("sim-c", "sim-d", "other"):
        ingest(store, name, [0])
    store.write([Message("devices/cli-device/monitoring", agent_payload, time.time())])
    describe(store, "cli-device", agent_meta)
    gpu = {"gpu-*-utilization-gpu": {"unit": "%", "headline": "GPU"}}
    describe(store, "sim-b", {**agent_meta, "metrics": {**agent_meta["metrics"], **gpu}})
    app = create_app(engine, ApiSettings(rate_limit=""))
    return app.test_client()


def get(client, url, status=200, **kw):
    response = client.get(url, **kw)
    assert response.status_code == status, (url, response.status_code, response.get_data(as_text=True))
    assert response.is_json or status == 304
    return response.get_json() if status != 304 else None


def test_devices_lists_the_fleet_with_status_counts_and_headlines(client, agent_payload):
    body = get(client, "/api/v1/devices")
    ids = [d["id"] for d in body["devices"]]
    assert ids == sorted(ids) == ["cli-device", "other", "sim-a", "sim-b", "sim-c", "sim-d"]
    by_id = {d["id"]: d for d in body["devices"]}
    assert by_id["sim-b"]["online"] is True
    assert by_id["sim-b"]["metrics"] == 51
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", by_id["sim-b"]["last_seen"])
    agent = json.loads(agent_payload)["metrics"]
    # Headlines are what the plugins declared (memory is built in; cpu and disk are plugins), in their order.
    heads = {h["label"]: h for h in by_id["cli-device"]["headlines"]}
    assert list(heads) == ["Memory", "CPU", "Disk"]
    assert heads["CPU"]["value"] == pytest.approx(agent["cpu"]["percent"])
    assert heads["CPU"] | {"value": 0} == {"label": "CPU", "key": "cpu-percent", "value": 0, "unit": "%"}
    assert heads["Memory"]["value"] == pytest.approx(agent["memory"]["percent"])
    assert heads["Disk"]["value"] == pytest.approx(max(d["percent"] for d in agent["disk"]["usage"].values()))
    fullest = max(agent["disk"]["usage"], key=lambda d: agent["disk"]["usage"][d]["percent"])
    assert heads["Disk"]["key"] == f"disk-usage-{fullest}-percent"
    sim_b = {h["label"]: h["key"] for h in by_id["sim-b"]["headlines"]}
    assert sim_b == {
        "CPU": "cpu-percent",
        "Memory": "memory-percent",
        "Disk": "disk-usage-nvme0n1-percent",
        "GPU": "gpu-0-utilization-gpu",
    }
    assert by_id["sim-a"]["headlines"] == [], "a device that described nothing has no headlines"
    assert body["next_cursor"] is None


def test_devices_prefix_sort_and_cursor_pagination(client):
    assert [d["id"] for d in get(client, "/api/v1/devices?prefix=sim-")["devices"]] == [
        "sim-a",
        "sim-b",
        "sim-c",
        "sim-d",
    ]
    seen, cursor = [], None
    while True:
        url = "/api/v1/devices?limit=2&sort=-id" + (f"&cursor={cursor}" if cursor else "")
        page = get(client, url)
        seen += [d["id"] for d in page["devices"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["sim-d", "sim-c", "sim-b", "sim-a", "other", "cli-device"]
    by_seen = [d["id"] for d in get(client, "/api/v1/devices?sort=-last_seen&limit=1000")["devices"]]
    assert sorted(by_seen) == sorted(seen)
    pages, cursor = [], None
    while True:
        page = get(client, "/api/v1/devices?limit=4&sort=last_seen" + (f"&cursor={cursor}" if cursor else ""))
        pages += [d["id"] for d in page["devices"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert sorted(pages) == sorted(seen), "keyset pagination on a non-unique column visits each device once"


def test_device_detail_has_attributes_and_exact_counters(client):
    body = get(client, "/api/v1/devices/sim-a")
    assert body["attributes"] == {"system-hostname": "host-sim-a", "system-agent_version": "0.1.0"}
    assert body["counters"] == {"received": 4, "duplicates": 1, "missing": 2, "rejected": 1}
    assert body["last_seq"] == 5


def test_metrics_with_prefix_and_latest_values(client):
    body = get(client, "/api/v1/devices/sim-b/metrics?prefix=cpu-cores-cpu1-")
    assert [m["key"] for m in body["metrics"]] == ["cpu-cores-cpu1-freq_mhz", "cpu-cores-cpu1-percent"]
    assert body["metrics"][1]["value"] == (99 * 7 + 1) % 100
    assert body["metrics"][1]["ts"] == "2026-01-01T00:01:39.000Z"


def test_metrics_carry_what_the_device_declared(client, agent_meta):
    by_key = {m["key"]: m for m in get(client, "/api/v1/devices/cli-device/metrics")["metrics"]}
    assert by_key["cpu-percent"]["unit"] == "%"
    assert by_key["cpu-percent"]["kind"] == "gauge"
    assert "busy time" in by_key["cpu-percent"]["description"]
    read = next(m for k, m in by_key.items() if k.startswith("disk-io-") and k.endswith("-read_bytes"))
    assert (read["unit"], read["kind"]) == ("B", "counter")
    assert by_key["system-uptime_s"]["unit"] == "s"
    assert by_key["agent-cycle_ms"]["unit"] == "ms"
    undeclared = get(client, "/api/v1/devices/sim-a/metrics")["metrics"][0]
    assert (undeclared["unit"], undeclared["kind"], undeclared["description"]) == (None, "gauge", None)


def test_a_newer_description_replaces_an_older_one_and_a_late_older_one_changes_nothing(client, store, agent_meta):
    newer = {
        **agent_meta,
        "ts": utc_timestamp(time.time() + 60),
        "metrics": {"cpu-percent": {"unit": "%", "headline": "Load"}},
    }
    describe(store, "cli-device", newer)
    describe(store, "cli-device", {**agent_meta, "ts": "2000-01-01T00:00:00.000Z"})
    heads = next(d for d in get(client, "/api/v1/devices")["devices"] if d["id"] == "cli-device")["headlines"]
    assert [h["label"] for h in heads] == ["Load"]


@pytest.mark.parametrize(
    ("topic", "body", "reason"),
    [
        ("devices/d1/meta", b"{", "not JSON"),
        ("devices/d1/meta", b'{"schema": 1, "device_id": "d2", "ts": "2026-01-01T00:00:00Z", "metrics": {}}', "match"),
        ("devices/d1/meta", b'{"schema": 1, "device_id": "d1", "ts": "x", "metrics": {}}', "ts"),
        (
            "devices/d1/meta",
            b'{"schema": 1, "device_id": "d1", "ts": "2026-01-01T00:00:00Z", "metrics": {"*": {}}}',
            "pattern",
        ),
        ("devices/d1/meta", b'{"schema": 1, "device_id": "d1", "ts": "2099-01-01T00:00:00Z", "metrics": {}}', "ahead"),
    ],
)
def test_a_bad_description_is_a_reject_with_its_reason(store, engine, topic, body, reason):
    result = store.write([Message(topic, body, time.time())])
    assert (result.rejected, result.described) == (1, 0)
    with engine.connect() as conn:
        (stored,) = conn.execute(text("SELECT reason FROM rejects")).one()
    assert reason in stored


def test_latest_flat_nested_and_etag(client):
    flat = get(client, "/api/v1/devices/sim-b/latest")
    assert flat["metrics"]["cpu-percent"] == 99.5
    assert flat["ts"] == "2026-01-01T00:01:39.000Z"
    nested = get(client, "/api/v1/devices/sim-b/latest?nested=1")
    assert nested["metrics"]["cpu"]["cores"]["cpu1"]["percent"] == (99 * 7 + 1) % 100
    assert nested["metrics"]["system"]["hostname"] == "host-sim-b"
    response = client.get("/api/v1/devices/sim-b/latest")
    etag = response.headers["ETag"]
    assert client.get("/api/v1/devices/sim-b/latest", headers={"If-None-Match": etag}).status_code == 304


def test_series_raw_when_it_fits_and_bucketed_when_not(client):
    window = f"from={START}&to={START + 99}"
    raw = get(client, f"/api/v1/devices/sim-b/series?metric=cpu-percent&metric=memory-percent&{window}&points=500")
    assert [s["metric"] for s in raw["series"]] == ["cpu-percent", "memory-percent"]
    cpu = raw["series"][0]
    assert cpu["downsampled"] is False
    assert cpu["count"] == 100
    assert cpu["points"][:2] == [[T0, 0.5], [T0 + 1000, 1.5]]
    assert raw["from"] == "2026-01-01T00:00:00.000Z"
    down = get(client, f"/api/v1/devices/sim-b/series?metric=cpu-percent&{window}&points=10")
    cpu = down["series"][0]
    assert cpu["downsampled"] is True
    assert len(cpu["points"]) == 10
    width = cpu["bucket_ms"]
    assert width == 9901  # ceil(99,001 ms / 10)
    first = [v + 0.5 for v in range(100) if v * 1000 < width]
    assert cpu["points"][0] == [T0, min(first), max(first), pytest.approx(sum(first) / len(first))]
    iso = get(
        client, "/api/v1/devices/sim-b/series?metric=cpu-percent&from=2026-01-01T00:00:10Z&to=2026-01-01T00:00:12Z"
    )
    assert [p[0] for p in iso["series"][0]["points"]] == [T0 + 10000, T0 + 11000, T0 + 12000]


BAD = [
    ("/api/v1/devices/nope", 404, "no device 'nope'"),
    ("/api/v1/devices/bad%20id", 400, "may hold only"),
    ("/api/v1/devices/" + "x" * 300, 400, "may hold only"),
    ("/api/v1/devices?sort=color", 400, "sort"),
    ("/api/v1/devices?limit=0", 400, "limit"),
    ("/api/v1/devices?limit=abc", 400, "limit"),
    ("/api/v1/devices?cursor=%%%", 400, "cursor"),
    ("/api/v1/devices?cursor=WzEsMl0", 400, "cursor"),
    ("/api/v1/devices/sim-b/series", 400, "metric"),
    ("/api/v1/devices/sim-b/series?metric=nope", 404, "no metric 'nope'"),
    ("/api/v1/devices/sim-b/series?metric=cpu-percent&from=yesterday", 400, "from"),
    ("/api/v1/devices/sim-b/series?metric=cpu-percent&from=10&to=5", 400, "after"),
    ("/api/v1/devices/sim-b/series?metric=cpu-percent&points=1", 400, "points"),
    ("/api/v1/devices/sim-b/series?metric=cpu-percent&points=99999999", 400, "points"),
    ("/api/v1/devices/sim-b/series?metric=cpu-percent&from=1e300", 400, "from"),
    ("/api/v1/devices/sim-b/series?metric=cpu-percent&to=9999-99-99", 400, "to"),
    ("/api/v1/devices/sim-b/series?metric=x'%20OR%201=1--", 404, "no metric"),
    ("/api/v1/devices/sim-b/series?" + "&".join(["metric=a"] * 11), 400, "at most 10"),
    ("/api/v1/devices/sim-b/series?metric=" + "k" * 2000, 400, "longer than"),
    ("/api/v1/devices/sim-b/latest?nested=maybe", 400, "nested"),
    ("/api/v1/devices?prefix=" + "p" * 500, 400, "prefix"),
    ("/api/v1/rejects?cursor=InMi", 400, "cursor"),
    ("/api/v1/nothing-here", 404, ""),
    ("/api/v1/devices?prefix=%00", 400, "NUL"),
    ("/api/v1/rejects?device=a%00", 400, "NUL"),
    ("/api/v1/devices/sim-b/series?metric=cpu%00", 400, "NUL"),
    ("/api/v1/devices?cursor=WyJhIiwgIlx1MDAwMCJd", 400, "cursor"),  # ["a", "\u0000"]
    ("/api/v1/devices?sort=-last_seen&cursor=WzEsICJzaW0tYSJd", 200, ""),  # [1, "sim-a"]: a valid shape
    # Found as 500s by a hostile tester: far relative and offset times, cursors of the wrong kind or size.
    ("/api/v1/devices/sim-b/series?metric=cpu-percent&from=-999999d", 400, "from"),
    ("/api/v1/devices/sim-b/series?metric=cpu-percent&from=0001-01-01T00:00:00%2B14:00", 400, "from"),
    ("/api/v1/devices/sim-b/series?metric=cpu-percent&to=9999-12-31T23:59:59-14:00", 400, "to"),
    ("/api/v1/devices?sort=-last_seen&cursor=W3RydWUsICJzaW0tYSJd", 400, "cursor"),
    ("/api/v1/devices?sort=-last_seen&cursor=WzE4NDQ2NzQ0MDczNzA5NTUxNjE2LCAic2ltLWEiXQ", 400, "cursor"),
    ("/api/v1/rejects?cursor=MTE4MDU5MTYyMDcxNzQxMTMwMzQyNA", 400, "cursor"),
    ("/api/v1/rejects?cursor=dHJ1ZQ", 400, "cursor"),
]


def test_a_dashboard_path_too_long_for_the_file_system_is_not_a_500(engine, tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>edgemon</title>")
    app = create_app(engine, ApiSettings(rate_limit=""), dashboard=tmp_path)
    response = app.test_client().get("/" + "a" * 300)
    assert response.status_code == 200, "a client-side route: the dashboard's index.html"
    assert b"edgemon" in response.get_data()
    response.close()


def test_bad_parameters_get_a_4xx_with_a_json_message(client):
    # One filled database for every case (filling one per case cost 17 s of the fast loop); each
    # case that goes wrong is listed with what it got.
    wrong = []
    for url, status, message in BAD:
        response = client.get(url)
        body = response.get_json(silent=True)
        if (
            response.status_code != status
            or not isinstance(body, dict)
            or (status != 200 and message not in str(body.get("error")))
        ):
            wrong.append((url, response.status_code, response.get_data(as_text=True)[:200]))
    assert wrong == []


def test_read_only(client):
    for method in ("post", "put", "patch", "delete"):
        response = getattr(client, method)("/api/v1/devices")
        assert response.status_code == 405, method
        assert "read-only" in response.get_json()["error"]


def test_rejects_are_listed_newest_first_and_paginated(client, store):
    for i in range(3):
        store.write([Message("devices/sim-c/monitoring", f"bad {i}".encode(), time.time())])
    page = get(client, "/api/v1/rejects?limit=2")
    assert [r["payload"] for r in page["rejects"]] == ["bad 2", "bad 1"]
    rest = get(client, f"/api/v1/rejects?limit=2&cursor={page['next_cursor']}")
    assert [r["payload"] for r in rest["rejects"]] == ["bad 0", "{broken"]
    assert get(client, "/api/v1/rejects?device=sim-a")["rejects"][0]["reason"].startswith("malformed JSON")


def test_healthz_shows_the_collectors_heartbeats(client, store, engine):
    body = get(client, "/healthz", status=503)
    assert body["status"] == "error", "no collector is running: ingest is down"
    assert body["problems"] == ["no collector has written a heartbeat in the last 30 s"]
    assert body["database"]["ok"] is True
    assert body["collector"] is None, "no collector in this process"
    assert body["collectors"] == []
    store.heartbeat("collector-x", time.time() - 60, {"state": "connected", "stored": 7})
    store.heartbeat("collector-x", time.time() - 60, {"state": "connected", "stored": 9})  # an upsert
    body = get(client, "/healthz")
    assert body["status"] == "ok"
    (beat,) = body["collectors"]
    assert beat["id"] == "collector-x"
    assert beat["state"] == "connected"
    assert beat["stats"]["stored"] == 9
    assert beat["age_s"] < 5
    assert beat["host"], "no token configured: the operator sees host and pid"
    with engine.begin() as conn:  # the only collector's heartbeat is 12 minutes old
        conn.execute(text("UPDATE collectors SET updated = updated - 720000"))
    body = get(client, "/healthz", status=503)
    assert "no collector has written a heartbeat" in body["problems"][0]


def test_healthz_reports_samples_left_in_the_default_partition(client, store):
    store.heartbeat("collector-x", time.time(), {"state": "connected", "default_partition_rows": 42})
    body = get(client, "/healthz", status=503)
    assert body["problems"] == [
        "42 samples in the default partition (no day partition took them): "
        "partition maintenance fell behind, or rows came from outside the retention horizon"
    ]
    store.heartbeat("collector-x", time.time(), {"state": "connected", "default_partition_rows": 0})
    assert get(client, "/healthz")["status"] == "ok"


def test_healthz_hides_hosts_and_pids_without_the_token_and_is_rate_limited(engine, store):
    store.heartbeat("collector-y", time.time(), {"state": "connected"})
    app = create_app(engine, ApiSettings(token="a" * 20, rate_limit="2/minute"))
    c = app.test_client()
    (beat,) = c.get("/healthz").get_json()["collectors"]
    assert "host" not in beat
    assert "pid" not in beat
    (beat,) = c.get("/healthz", headers={"Authorization": "Bearer " + "a" * 20}).get_json()["collectors"]
    assert beat["host"]
    assert c.get("/healthz").status_code == 429, "one budget per client, /healthz included"


def test_healthz_is_503_when_this_process_collector_failed(engine, store):
    from edgemon_server.collector import CollectorStats

    store.heartbeat("collector-z", time.time(), {"state": "connected"})
    stats = CollectorStats(state="failed", fatal="TypeError: boom")
    app = create_app(engine, ApiSettings(rate_limit=""), lambda: stats)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["problems"] == ["this process' collector writer failed: TypeError: boom"]


def test_security_headers_and_one_rate_limit_across_routes(engine):
    app = create_app(engine, ApiSettings(rate_limit="4/minute"))
    c = app.test_client()
    first = c.get("/api/v1/devices")
    assert first.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in first.headers["Content-Security-Policy"]
    assert first.headers["Referrer-Policy"] == "no-referrer"
    statuses = [c.get(u).status_code for u in ("/api/v1/rejects", "/healthz", "/api/v1/devices", "/api/v1/rejects")]
    assert statuses[-1] == 429, f"the budget is per client, not per route: {statuses}"


def test_bearer_token_and_cors(engine):
    app = create_app(engine, ApiSettings(token="s3cret", cors_origins=("http://dash.example",), rate_limit=""))
    c = app.test_client()
    denied = c.get("/api/v1/devices")
    assert denied.status_code == 401
    assert "bearer token" in denied.get_json()["error"]
    assert c.get("/api/v1/devices", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = c.get("/api/v1/devices", headers={"Authorization": "Bearer s3cret", "Origin": "http://dash.example"})
    assert ok.status_code == 200
    assert ok.headers["Access-Control-Allow-Origin"] == "http://dash.example"
    other = c.get("/api/v1/devices", headers={"Authorization": "Bearer s3cret", "Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert c.get("/healthz").status_code in (200, 503), "health checks need no token"
    assert c.get("/healthz").get_json()["status"] in ("ok", "error")


def test_rate_limit_per_client_returns_429(engine):
    c = create_app(engine, ApiSettings(rate_limit="3 per minute")).test_client()
    codes = [c.get("/api/v1/devices").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert "rate limit" in c.get("/api/v1/devices").get_json()["error"]


def test_hot_queries_use_indexes_on_sqlite(sqlite_url):
    from edgemon_server import migrations
    from edgemon_server.db import make_engine

    eng = make_engine(sqlite_url)
    migrations.upgrade(eng)
    statements = [
        q.devices_page("sim", "id", False, ("a", "a"), 100),
        q.devices_page("", "last_seen", True, (1, "a"), 100),
        q.headlines_query(["a", "b"], ["cpu-percent", "disk-usage-*-percent"]),
        q.metrics_query("a", "cpu-"),
        q.count_query(1, 0, 10, "sqlite"),
        q.raw_query(1, 0, 10, "sqlite"),
        q.buckets_query(1, 0, 10, 2, "sqlite"),
        q.rejected_query("a"),
        q.rejects_page("a", 10, 50),
        # the fleet query's candidates: every device's disks, by the key's literal prefix
        select(q.SERIES.c.id).where(
            q.SERIES.c.key.like(q.like("disk-usage-*-percent"), escape="!"),
            q.key_prefix("disk-usage-*-percent", "sqlite"),
        ),
    ]
    with eng.connect() as conn:
        for stmt in statements:
            compiled = stmt.compile(eng, compile_kwargs={"literal_binds": True})
            plan = " | ".join(row[3] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
            for table in ("samples", "series", "payloads", "rejects"):
                assert f"SCAN {table}" not in plan.replace(f"SCAN {table} USING", "SEARCH"), plan
        candidates = statements[-1].compile(eng, compile_kwargs={"literal_binds": True})
        plan = " | ".join(row[3] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {candidates}")))
        assert f"SEARCH series USING COVERING INDEX {q.KEY_INDEX} (key>? AND key<?)" in plan, "a range, not a scan"
    eng.dispose()


def test_openapi_documents_every_route(client):
    doc = get(client, "/api/v1/openapi.json")
    routes = {
        re.sub(r"<(\w+)>", r"{\1}", rule.rule)
        for rule in client.application.url_map.iter_rules()
        if rule.rule.startswith(("/api/", "/healthz")) or rule.rule == "/metrics"
    }
    assert set(doc["paths"]) == routes


@pytest.mark.slow
def test_schemathesis_no_5xx_and_responses_match_the_schema(client, store):
    import schemathesis

    store.heartbeat("collector-s", time.time() + 3600, {"state": "connected"})  # fresh for the whole run
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    # Opaque cursors and free-form times are strings in the schema, so "valid by the schema" is not
    # "accepted": the positive-data check does not apply; the rest do.
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", client.application)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 7
    for operation in operations:

        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            try:
                case.call_and_validate(checks=checks)
            except Exception as exc:  # noqa: BLE001 - collected, reported together below
                failures.append(f"{case.method} {case.formatted_path} {case.query}: {str(exc)[:400]}")

        check()
    assert not failures, "\n".join(failures[:5])


@pytest.mark.slow  # a process of its own: end to end
def test_non_loopback_bind_without_token_is_refused(sqlite_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEMON_")}
    env["EDGEMON_DATABASE_URL"] = sqlite_url
    out = subprocess.run(
        [str(SERVER_BIN), "api", "--http-bind", "0.0.0.0:0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "refusing to serve fleet data without auth" in out.stderr


@pytest.mark.slow  # a process of its own: end to end
def test_api_command_serves_http_and_stops_on_sigterm(sqlite_url):
    from tests.harness import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEMON_")}
    env.update({"EDGEMON_DATABASE_URL": sqlite_url, "EDGEMON_HTTP_BIND": f"127.0.0.1:{port}"})
    proc = subprocess.Popen(
        [str(SERVER_BIN), "api"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/devices", timeout=2) as r:
                    assert json.load(r) == {"devices": [], "next_cursor": None}
                    break
            except OSError:
                assert proc.poll() is None, "exited"
                assert time.monotonic() < deadline, "no answer"
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    assert f"http://127.0.0.1:{port}/" in output


@pytest.mark.slow
def test_run_serves_what_the_real_collector_stored(broker, pki, sqlite_url, collector_env, mqtt_env, run_agent_proc):
    from tests.harness import free_port

    port = free_port()
    env = collector_env(sqlite_url, EDGEMON_HTTP_BIND=f"127.0.0.1:{port}")
    proc = subprocess.Popen(
        [str(SERVER_BIN), "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    run_agent_proc(mqtt_env("dev-http", EDGEMON_LOAD_PLUGINS="cpu,disk", EDGEMON_INTERVAL="0.5"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 40
        latest = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/api/v1/devices/dev-http/latest", timeout=2) as r:
                    latest = json.load(r)
                    break
            except OSError:
                assert proc.poll() is None, "exited"
                time.sleep(0.3)
        assert latest is not None, "the device never appeared"
        assert "cpu-percent" in latest["metrics"]
        assert latest["attributes"]["system-agent_version"]
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
            health = json.load(r)
        assert health["collector"]["state"] == "connected"
        assert health["collector"]["stored"] >= 1
        assert [c["id"] for c in health["collectors"]] == ["collector-1"], "the heartbeat is in the database"
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output


def test_time_parameters_round_trip_and_never_fail_other_than_400():
    import datetime as dt

    import hypothesis.strategies as st
    from hypothesis import given

    from edgemon_server.params import ApiError, iso, parse_time

    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    times = st.datetimes(
        min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2999, 1, 1), timezones=st.just(dt.UTC)
    )

    @given(times)
    def round_trip(when):
        ms = parse_time(when.isoformat(), "from", 0)
        micros = (when - epoch) // dt.timedelta(microseconds=1)
        assert ms == (micros + 500) // 1000
        assert parse_time(iso(ms) or "", "from", 0) == ms, "what the API returns, it accepts"
        assert parse_time(str(ms // 1000), "from", 0) == ms - ms % 1000

    @given(st.text(max_size=50))
    def anything(text):
        errors = []
        try:
            value = parse_time(text, "from", 10**12)
        except ApiError as exc:
            errors.append(exc)
        else:
            assert isinstance(value, int)
        assert all(e.status == 400 and e.message.startswith("from:") for e in errors)

    round_trip()
    anything()
    assert parse_time("-15m", "from", 10**12) == 10**12 - 900_000
    assert parse_time("2026-11-29T10:00:00", "from", 0) == parse_time("2026-11-29T10:00:00Z", "from", 0), "naive is UTC"
