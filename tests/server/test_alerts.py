"""Alerts on the server: level-based state from payloads, exactly-once history, silent devices, the API."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from edgemon_protocol.alerting import fingerprint
from edgemon_protocol.payload import utc_timestamp
from edgemon_server.api import ApiSettings, create_app
from edgemon_server.db import AlertEvent, AlertState
from edgemon_server.store import Message, Store
from tests.fleet import START, payload

T = START


def alert(rule="disk_full", key="disk-usage-sda-percent", severity="warning", state="firing", since=T, changed=None):
    return {
        "rule": rule,
        "severity": severity,
        "message": f"{key} is full",
        "key": key,
        "state": state,
        "since": utc_timestamp(since),
        "changed": utc_timestamp(changed if changed is not None else since),
        "fingerprint": fingerprint(rule, key),
        "value": 95.0,
    }


def send(store: Store, device: str, seq: int, alerts: list[dict[str, Any]], now: float | None = None):
    doc = payload(device, seq)
    doc["alerts"] = alerts
    now = time.time() if now is None else now
    return store.write([Message(f"devices/{device}/monitoring", json.dumps(doc).encode(), now)], now=now)


def events(engine):
    with engine.connect() as conn:
        query = select(AlertEvent.state, AlertEvent.severity, AlertEvent.at).order_by(AlertEvent.id)
        return [tuple(r) for r in conn.execute(query)]


def test_fire_escalate_resolve_from_the_active_sets(store, engine):
    send(store, "d1", 0, [])
    send(store, "d1", 1, [alert(state="pending", since=T + 1)])
    send(store, "d1", 2, [alert(since=T + 1, changed=T + 2)])
    send(store, "d1", 3, [alert(severity="critical", since=T + 1, changed=T + 3)])
    send(store, "d1", 4, [])
    ms = lambda t: round(t * 1000)  # noqa: E731
    assert events(engine) == [
        ("firing", "warning", ms(T + 2)),
        ("firing", "critical", ms(T + 3)),
        ("resolved", "critical", ms(T + 4)),
    ]
    with engine.connect() as conn:
        (row,) = conn.execute(select(AlertState.state, AlertState.since, AlertState.changed)).all()
    assert (row.state, row.since, row.changed) == ("resolved", ms(T + 1), ms(T + 4))


def test_redeliveries_resends_and_late_payloads_store_each_transition_once(store, engine):
    firing = [alert(changed=T + 1)]
    send(store, "d2", 1, firing)
    send(store, "d2", 2, [])
    send(store, "d2", 1, firing)  # the broker delivers seq 1 again: a duplicate, nothing new
    assert [e[0] for e in events(engine)] == ["firing", "resolved"]
    send(store, "d2", 5, [])
    send(store, "d2", 3, firing)  # a late payload (older than what the state reflects) changes nothing
    with engine.connect() as conn:
        assert conn.execute(select(AlertState.state)).scalar() == "resolved"
    assert len(events(engine)) == 2


def test_a_pending_alert_that_never_fired_leaves_no_trace(store, engine):
    send(store, "d3", 1, [alert(state="pending")])
    send(store, "d3", 2, [])
    assert events(engine) == []
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AlertState)).scalar() == 0


def test_a_silent_device_fires_and_its_own_alerts_are_stale_not_resolved(store, engine):
    now = time.time()
    send(store, "quiet", 0, [alert()], now=now - 120)
    fired = store.sweep_silent(now, factor=5)
    assert [(e["rule"], e["state"]) for e in fired] == [("device_silent", "firing")]
    assert store.sweep_silent(now + 5, factor=5) == [], "fires once"
    client = create_app(engine, ApiSettings(rate_limit="")).test_client()
    body = client.get("/api/v1/alerts").get_json()
    by_rule = {a["rule"]: a for a in body["alerts"]}
    assert by_rule["device_silent"]["severity"] == "critical"
    assert by_rule["device_silent"]["source"] == "server"
    assert by_rule["disk_full"]["stale"] is True
    assert by_rule["disk_full"]["state"] == "firing", "silence is not resolution"
    send(store, "quiet", 1, [alert()], now=now + 10)
    back = store.sweep_silent(now + 10, factor=5)
    assert [(e["rule"], e["state"]) for e in back] == [("device_silent", "resolved")]
    assert "reporting again" in back[0]["message"]


@pytest.fixture
def client(engine, store):
    send(store, "a1", 1, [alert(), alert("cpu_high", "cpu-percent", severity="critical")])
    send(store, "a2", 1, [alert(state="pending")])
    send(store, "a3", 1, [alert()])
    send(store, "a3", 2, [])
    return create_app(engine, ApiSettings(rate_limit="")).test_client()


def test_alerts_api_filters(client):
    def get(query):
        response = client.get(f"/api/v1/alerts{query}")
        assert response.status_code == 200, response.get_json()
        return [(a["device_id"], a["rule"], a["state"]) for a in response.get_json()["alerts"]]

    assert get("") == [("a1", "cpu_high", "firing"), ("a1", "disk_full", "firing"), ("a2", "disk_full", "pending")]
    assert get("?state=firing&severity=critical") == [("a1", "cpu_high", "firing")]
    assert get("?state=resolved") == [("a3", "disk_full", "resolved")]
    assert get("?device=a2") == [("a2", "disk_full", "pending")]
    assert len(get("?state=all")) == 4


@pytest.mark.parametrize("query", ["?state=maybe", "?severity=fatal", "?device=a/b", "?limit=0", "?limit=x"])
def test_bad_alert_queries_are_400(client, query):
    response = client.get(f"/api/v1/alerts{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]


def test_a_devices_history_and_the_overview_counts(client):
    body = client.get("/api/v1/devices/a3/alerts").get_json()
    assert [(e["state"], e["rule"]) for e in body["history"]] == [("resolved", "disk_full"), ("firing", "disk_full")]
    assert body["current"] == []
    page = client.get("/api/v1/devices/a3/alerts?limit=1").get_json()
    assert len(page["history"]) == 1
    rest = client.get(f"/api/v1/devices/a3/alerts?limit=1&cursor={page['next_cursor']}").get_json()
    assert rest["history"][0]["state"] == "firing"
    assert client.get("/api/v1/devices/nope/alerts").status_code == 404
    fleet = {d["id"]: d for d in client.get("/api/v1/devices").get_json()["devices"]}
    assert (fleet["a1"]["alerts"], fleet["a1"]["alert_severity"]) == (2, "critical")
    assert (fleet["a2"]["alerts"], fleet["a2"]["alert_severity"]) == (0, None), "pending is not firing"


def test_a_growing_send_backlog_on_the_device_fires_and_clears(store, engine):
    def send_backlog(seq, held):
        doc = payload("busy", seq)
        doc["metrics"]["agent"] = {"transport": {"buffered": held}}
        now = time.time()
        return store.write([Message("devices/busy/monitoring", json.dumps(doc).encode(), now)], now=now)

    send_backlog(1, 5)
    send_backlog(2, 150)
    send_backlog(3, 400)  # still firing: one event
    send_backlog(4, 50)  # below the threshold but above the clear level: still firing
    send_backlog(5, 3)
    with engine.connect() as conn:
        rows = conn.execute(
            select(AlertEvent.rule, AlertEvent.state).where(AlertEvent.rule == "send_backlog").order_by(AlertEvent.id)
        ).all()
    assert [tuple(r) for r in rows] == [("send_backlog", "firing"), ("send_backlog", "resolved")]


def test_gaps_given_up_become_a_payloads_lost_alert_that_resolves_after_an_hour(store, engine):
    now = time.time()
    send(store, "lossy", 0, [], now=now)
    fired = store.payloads_lost([("lossy", 5, 9, "the device did not send them after 5 asks")], now)
    assert [(e["rule"], e["state"]) for e in fired] == [("payloads_lost", "firing")]
    assert store.payloads_lost([("lossy", 20, 20, "again")], now + 10) == [], "one alert, its count grows"
    with engine.connect() as conn:
        value, message = conn.execute(
            select(AlertState.value, AlertState.message).where(AlertState.rule == "payloads_lost")
        ).one()
    assert value == 6
    assert "6 payloads never arrived" in message
    assert store.sweep_silent(now + 1800, factor=10**6) == []
    resolved = store.sweep_silent(now + 3700, factor=10**6)
    assert [(e["rule"], e["state"]) for e in resolved] == [("payloads_lost", "resolved")]


@pytest.mark.parametrize("backlog", [True, False], ids=["network-outage", "device-down"])
def test_when_a_silent_device_returns_the_server_says_why_it_was_silent(store, engine, backlog):
    t0 = time.time()

    def write(seqs, now):
        docs = [payload("gone", s, start=t0 - 10) for s in seqs]  # ts = t0 - 10 + seq
        msgs = [Message("devices/gone/monitoring", json.dumps(d).encode(), now) for d in docs]
        store.write(msgs, now=now)

    write(range(10), t0)
    assert [e["state"] for e in store.sweep_silent(t0 + 60, factor=5)] == ["firing"]
    write([80], t0 + 70)  # back: its live payload first
    assert [e["state"] for e in store.sweep_silent(t0 + 70, factor=5)] == ["resolved"]
    if backlog:
        write(range(10, 80), t0 + 75)  # what it collected while the network was down
        store.sweep_silent(t0 + 80, factor=5)
    else:
        write([700], t0 + 660)  # alive since, but nothing exists for the silence
        store.sweep_silent(t0 + 671, factor=5)
    with engine.connect() as conn:
        state = conn.execute(select(AlertState.message).where(AlertState.rule == "device_silent")).scalar_one()
        event = conn.execute(
            select(AlertEvent.message).where(AlertEvent.rule == "device_silent", AlertEvent.state == "resolved")
        ).scalar_one()
    expected = "network outage" if backlog else "down or rebooted"
    assert expected in state
    assert state == event


def test_the_store_counts_the_alert_events_it_stored(store):
    first = send(store, "cnt", 1, [alert(changed=T + 1)])
    again = send(store, "cnt", 2, [alert(changed=T + 1)])  # the same firing: nothing new
    assert (first.alert_events, again.alert_events) == (1, 0)
