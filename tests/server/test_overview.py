"""/api/v1/overview and /api/v1/sparklines: the fleet page searched, sorted and paged on the server."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sqlalchemy import text

from edgemon_server.api import ApiSettings, create_app
from edgemon_server.store import Message, Store
from tests.fleet import payload
from tests.server.test_alerts import alert

HEADLINES = {
    "cpu-percent": {"unit": "%", "headline": "CPU"},
    "disk-usage-*-percent": {"unit": "%", "headline": "Disk"},
}


def device(store: Store, name: str, cpu: float, tags: dict[str, str] | None = None, alerts=None, meta=True) -> None:
    now = time.time()
    doc = payload(name, 1, interval=10.0, start=now - 10)
    doc["metrics"]["cpu"]["percent"] = cpu
    doc["alerts"] = alerts or []
    store.write([Message(f"devices/{name}/monitoring", json.dumps(doc).encode(), now)], now=now)
    if meta:
        described: dict[str, Any] = {"schema": 1, "device_id": name, "ts": doc["ts"], "metrics": HEADLINES}
        if tags:
            described["tags"] = tags
        store.write([Message(f"devices/{name}/meta", json.dumps(described).encode(), now)], now=now)


@pytest.fixture
def client(engine, store):
    device(store, "b-press", 70.0, {"site": "berlin"}, alerts=[alert(severity="critical")])
    device(store, "a-press", 20.0, {"site": "berlin"})
    device(store, "c-lathe", 95.0, {"site": "munich"}, alerts=[alert()])
    device(store, "d-lathe", 50.0, {"site": "munich"})
    device(store, "e-legacy", 99.0, meta=False)  # an older agent: no metadata, so no headline values
    with engine.begin() as conn:  # d-lathe went quiet a while ago
        conn.execute(text("UPDATE devices SET last_seen = last_seen - 600000 WHERE id = 'd-lathe'"))
    return create_app(engine, ApiSettings(rate_limit="")).test_client()


def ids(client, query: str) -> list[str]:
    response = client.get(f"/api/v1/overview?{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return [d["id"] for d in response.get_json()["devices"]]


def test_every_column_sorts_on_the_server(client):
    assert ids(client, "sort=h:CPU&desc=1") == ["c-lathe", "b-press", "d-lathe", "a-press", "e-legacy"]
    assert ids(client, "sort=h:CPU") == ["a-press", "d-lathe", "b-press", "c-lathe", "e-legacy"], "no value: last"
    assert ids(client, "sort=id&desc=1") == ["e-legacy", "d-lathe", "c-lathe", "b-press", "a-press"]
    assert ids(client, "sort=status")[0] == "d-lathe", "offline first"
    assert ids(client, "sort=alerts&desc=1")[:2] == ["b-press", "c-lathe"], "critical before warning"
    assert ids(client, "sort=last_seen")[0] == "d-lathe"


def test_pages_and_search(client):
    body = client.get("/api/v1/overview?sort=id&limit=2&page=2").get_json()
    assert (body["total"], body["pages"], body["page"]) == (5, 3, 2)
    assert [d["id"] for d in body["devices"]] == ["c-lathe", "d-lathe"]
    assert client.get("/api/v1/overview?sort=id&limit=2&page=99").get_json()["page"] == 3, "past the end: the last"
    assert ids(client, "q=lathe&sort=id") == ["c-lathe", "d-lathe"]
    assert ids(client, "q=site=ber&sort=id") == ["a-press", "b-press"], "a tag's value by its start"
    assert ids(client, "q=site=mun*&sort=id") == ["c-lathe", "d-lathe"], "or a glob"
    assert ids(client, "q=nothing") == []


def test_the_summary_counts_the_fleet_and_each_tag(client):
    body = client.get("/api/v1/overview?q=press").get_json()
    summary = body["summary"]
    assert (summary["devices"], summary["online"], summary["offline"]) == (5, 4, 1), "the fleet, not the search"
    assert (summary["critical"], summary["warning"]) == (1, 1)
    assert summary["by_tag"]["site"]["munich"] == {"devices": 2, "offline": 1, "critical": 0}
    assert summary["by_tag"]["site"]["berlin"] == {"devices": 2, "offline": 0, "critical": 1}
    assert body["labels"] == ["CPU", "Disk"]
    (b,) = [d for d in body["devices"] if d["id"] == "b-press"]
    assert [h["label"] for h in b["headlines"]] == ["CPU", "Disk"]


@pytest.mark.parametrize(
    "query", ["sort=name", "sort=h:Nope", "page=0", "limit=0", "limit=9999", "desc=x&page=abc", "q=" + "x" * 300]
)
def test_bad_overview_queries_are_400(client, query):
    response = client.get(f"/api/v1/overview?{query}")
    assert response.status_code == 400, query
    assert response.get_json()["error"]


def test_one_request_gives_the_sparklines_of_a_page(client):
    body = client.get("/api/v1/sparklines?device=a-press&device=c-lathe&device=e-legacy&points=10").get_json()
    assert body["points"] == 10
    lines = body["lines"]
    assert set(lines) == {"a-press", "c-lathe", "e-legacy"}
    assert set(lines["c-lathe"]) == {"cpu-percent", "disk-usage-nvme0n1-percent"}, "the headline keys it shows"
    assert [v for v in lines["c-lathe"]["cpu-percent"] if v is not None] == [95.0]
    assert len(lines["c-lathe"]["cpu-percent"]) == 10
    assert lines["e-legacy"] == {}, "no metadata, no headline, no line"
    assert client.get("/api/v1/sparklines?device=a/b").status_code == 400
