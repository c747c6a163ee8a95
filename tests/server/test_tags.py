"""Device tags: set in the agent's configuration, sent with its metadata, used to filter and group."""

from __future__ import annotations

import json
import time

import pytest

from edgemon.config import ConfigError, load
from edgemon_protocol import meta, remote
from edgemon_protocol.config import Where
from edgemon_protocol.meta import Metric
from edgemon_protocol.payload import utc_timestamp
from edgemon_server import fleet_config, silences
from edgemon_server.api import ApiSettings, create_app
from edgemon_server.store import Message, Store
from tests.fleet import payload

SITES = {"press-1": "berlin", "press-2": "paris", "lab-1": "berlin"}


def describe(store: Store, device: str, tags: dict[str, str]) -> None:
    body = meta.encode(device, utc_timestamp(time.time()), {"cpu-percent": Metric("%")}, tags)
    assert store.write([Message(f"devices/{device}/meta", body, time.time())]).described == 1


@pytest.fixture
def fleet(store):
    for device, site in SITES.items():
        store.write([Message(f"devices/{device}/monitoring", json.dumps(payload(device, 1)).encode(), time.time())])
        describe(store, device, {"site": site, "line": "3"})
    return store


def test_tags_filter_the_fleet_the_query_and_label_the_exposition(fleet, engine):
    client = create_app(engine, ApiSettings(rate_limit="")).test_client()
    listed = client.get("/api/v1/devices?tag=site=berlin").get_json()["devices"]
    assert [d["id"] for d in listed] == ["lab-1", "press-1"]
    assert listed[0]["tags"] == {"site": "berlin", "line": "3"}
    assert [d["id"] for d in client.get("/api/v1/devices?tag=site=par*&tag=line=3").get_json()["devices"]] == [
        "press-2"
    ]
    assert client.get("/api/v1/devices/press-2").get_json()["tags"]["site"] == "paris"
    assert client.get("/api/v1/devices?tag=site").status_code == 400
    query = client.get("/api/v1/query?metric=cpu-percent&tag=site=berlin").get_json()
    assert sorted(r["device"] for r in query["results"]) == ["lab-1", "press-1"]
    exposition = client.get("/metrics").get_data(as_text=True)
    assert 'edgemon_device_info{device="press-2",tag_line="3",tag_site="paris"} 1.0' in exposition


def test_a_newer_description_replaces_the_tags_and_bad_tags_are_rejected(fleet, engine):
    describe(fleet, "press-1", {"site": "madrid"})
    client = create_app(engine, ApiSettings(rate_limit="")).test_client()
    assert client.get("/api/v1/devices/press-1").get_json()["tags"] == {"site": "madrid"}
    doc = json.loads(meta.encode("press-1", utc_timestamp(time.time()), {"cpu-percent": Metric("%")}))
    doc["tags"] = {"Site!": "x"}
    result = fleet.write([Message("devices/press-1/meta", json.dumps(doc).encode(), time.time())])
    assert result.rejected == 1


def test_a_group_by_tag_reaches_the_devices_with_it(fleet, engine):
    rollout = fleet_config.push(
        engine,
        "group",
        "berlin",
        {"agent": {"interval": 5}},
        where=Where("push.toml", ""),
        match="tag:site=berlin",
        now_ms=round(time.time() * 1000),
    )
    assert rollout["reason"] == "2 devices"
    with engine.connect() as conn:
        assert sorted(r["device"] for r in fleet_config.status(conn)) == ["lab-1", "press-1"]


def test_routes_and_silences_match_on_tags(fleet, engine):
    now = time.time()
    assert silences.matches(
        {"tag.site": "ber*"}, {"device_id": "x", "rule": "r", "severity": "s", "key": "k", "tags": {"site": "berlin"}}
    )
    assert not silences.matches({"tag.site": "ber*"}, {"device_id": "x", "rule": "r", "severity": "s", "key": "k"})
    assert silences.add_silence(engine, {"tag.site": "berlin"}, now + 60, "site visit", now) > 0
    from edgemon_server import notify_config

    config = notify_config.parse(
        {
            "receiver": [{"name": "ops", "url": "http://localhost/x"}],
            "route": [{"receivers": ["ops"], "match": {"tag.site": "paris"}}],
        },
        Where(None, ""),
        {},
    )
    assert config.routes[0].match == {"tag.site": "paris"}


def test_the_agent_reads_its_tags_from_the_file_a_variable_or_a_remote_document(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\ntags = { site = "berlin", line = "3" }\n')
    assert load(cfg, environ={}).agent.tags == {"site": "berlin", "line": "3"}
    assert load(None, environ={"EDGEMON_TAGS": "site=paris"}).agent.tags == {"site": "paris"}
    remote_doc = {"agent": {"tags": {"site": "madrid"}}}
    remote.check_document(remote_doc, Where("push.toml", ""))
    assert load(cfg, environ={}, remote_doc=remote_doc, remote_version=2).agent.tags == {"site": "madrid"}
    cfg.write_text('[agent]\ntags = { "Bad Name" = "x" }\n')
    with pytest.raises(ConfigError, match=r"agent\.toml:2: agent\.tags"):
        load(cfg, environ={})


def test_a_route_on_a_tag_notifies_only_those_devices(fleet, engine, receiver):
    from tests.server.notifying import Clock, alert, fire, notifier

    clock = Clock()
    n = notifier(engine, receiver, clock, match={"tag.site": "berlin"})
    for seq, device in enumerate(("press-1", "press-2"), start=5):
        fire(fleet, device, seq, [alert("disk_full", "disk-a", "critical", clock.t)], clock.t)
    assert n.enqueue() == 1
    n.send_due("ops")
    assert [b["device"] for b in receiver.bodies] == ["press-1"]
