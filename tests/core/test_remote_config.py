"""The device's remote configuration state on a fake clock: offers, expiry, the connectivity guard, restarts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgemon.config import RemoteSettings
from edgemon.remote_config import RemoteState
from edgemon_protocol import remote
from edgemon_protocol.config import ConfigError, Where


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def fine(_doc: Any, _version: int) -> None:
    pass


def state(tmp_path, clock, **settings: Any) -> RemoteState:
    return RemoteState(str(tmp_path), RemoteSettings(**settings), clock)


def test_a_newer_version_is_applied_saved_and_kept_across_a_restart(tmp_path):
    clock = Clock()
    s = state(tmp_path, clock)
    doc = {"agent": {"interval": 5}}
    report = s.offer(remote.encode_desired(3, doc), fine, last_seq=10)
    assert report is not None
    assert (report.version, report.status) == (3, "applied")
    assert s.offer(remote.encode_desired(2, {"agent": {"interval": 1}}), fine, 10) is None, "older: stale"
    assert s.offer(remote.encode_desired(3, doc), fine, 10) is None, "the same: nothing to do"
    again = state(tmp_path, clock)
    assert (again.version, again.document) == (3, doc), "a restart keeps what was applied"
    assert again.get_message() == remote.encode_get(3, 0)


@pytest.mark.parametrize(
    ("settings", "doc", "reason"),
    [
        ({"allow": ["agent.interval"]}, {"plugins": {"disk": {"interval": 60}}}, "not allowed"),
        ({"lock": ["plugins.gpu-nvml"]}, {"plugins": {"gpu-nvml": {"enabled": False}}}, "locked"),
        ({}, {"agent": {"interval": 5}}, "the check says no"),
    ],
)
def test_a_refused_version_changes_nothing_and_says_why(tmp_path, settings, doc, reason):
    clock = Clock()
    s = state(tmp_path, clock, **settings)
    s.offer(remote.encode_desired(1, {"agent": {"interval": 2}}), fine, 0)

    def check(_doc: Any, _version: int) -> None:
        raise ConfigError("the check says no")

    report = s.offer(remote.encode_desired(2, doc), check, 0)
    assert report is not None
    assert report.status == "rejected"
    assert reason in report.error
    assert s.version == 1
    assert s.rejected == 2, "not asked for again"
    assert s.get_message() == remote.encode_get(1, 2)


def test_a_malformed_or_tampered_version_is_rejected(tmp_path):
    s = state(tmp_path, Clock())
    body = remote.encode_desired(4, {"agent": {"interval": 5}}).replace(b'"interval":5', b'"interval":6')
    report = s.offer(body, fine, 0)
    assert report is not None
    assert (report.version, report.status) == (4, "rejected")
    assert "hash" in report.error
    bad = s.offer(b"{not json", fine, 0)
    assert bad is not None
    assert bad.status == "rejected"
    assert s.version == 0


def test_an_override_reverts_by_itself_when_it_ends_even_offline(tmp_path):
    clock = Clock()
    s = state(tmp_path, clock)
    s.offer(remote.encode_desired(1, {"agent": {"interval": 10}}), fine, 0)
    assert s.tick(acked_seq=1) == []
    s.offer(remote.encode_desired(2, {"agent": {"interval": 1}}, iso(clock.t + 3600)), fine, 1)
    assert s.tick(acked_seq=2) == []
    clock.t += 3599
    assert s.tick(2) == []
    clock.t += 1
    reports = s.tick(2)
    assert [(r.version, r.status) for r in reports] == [(2, "expired"), (1, "applied")]
    assert s.document == {"agent": {"interval": 10}}
    late = s.offer(remote.encode_desired(3, {"agent": {"interval": 1}}, iso(clock.t - 1)), fine, 2)
    assert late is not None
    assert late.status == "expired", "an override that already ended is not applied"
    assert s.version == 1


def test_the_connectivity_guard_rolls_back_a_version_no_payload_got_through_under(tmp_path):
    clock = Clock()
    s = state(tmp_path, clock, confirm_within=600.0)
    s.offer(remote.encode_desired(1, {"agent": {"interval": 10}}), fine, last_seq=100)
    clock.t += 5
    assert s.tick(acked_seq=101) == [], "a payload after it was acknowledged: v1 is good"
    s.offer(remote.encode_desired(2, {"agent": {"interval": 86400}}), fine, last_seq=120)
    clock.t += 599
    assert s.tick(acked_seq=120) == [], "acknowledged, but built before v2: not a confirmation"
    clock.t += 1
    (report,) = s.tick(acked_seq=120)
    assert (report.version, report.status) == (2, "rolled_back")
    assert "no payload acknowledged within 600 s" in report.error
    assert s.version == 1, "back to the last good version"
    assert s.rejected == 2
    assert state(tmp_path, clock).version == 1, "and so after a restart"


def test_a_first_version_that_breaks_publishing_falls_back_to_the_local_file(tmp_path):
    clock = Clock()
    s = state(tmp_path, clock, confirm_within=60.0)
    s.offer(remote.encode_desired(1, {"agent": {"interval": 86400}}), fine, last_seq=7)
    clock.t += 61
    (report,) = s.tick(acked_seq=7)
    assert report.status == "rolled_back"
    assert s.document is None
    assert "the local file" in report.error


layers = st.dictionaries(
    st.sampled_from(["agent", "plugins", "alerts"]),
    st.dictionaries(st.text("abc", min_size=1, max_size=3), st.one_of(st.integers(), st.booleans()), max_size=3),
    max_size=3,
)


@given(layers, layers, layers)
def test_merging_layers_is_associative_and_the_later_wins(a, b, c):
    assert remote.merge(remote.merge(a, b), c) == remote.merge(a, remote.merge(b, c)) == remote.merge(a, b, c)
    merged = remote.merge(a, b)
    for section, table in b.items():
        for key, value in table.items():
            assert merged[section][key] == value


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"mqtt": {"endpoint": "evil"}}, "mqtt.endpoint cannot be changed remotely (only drain_rate"),
        ({"mqtt": {"drain_rate": 0}}, "mqtt.drain_rate: a number between 0.1 and 100000"),
        ({"mqtt": {"drain_rate": True}}, "mqtt.drain_rate"),
        ({"broker": {}}, "[broker] cannot be changed remotely"),
        ({"agent": {"state_dir": "/tmp"}}, "agent.state_dir cannot be changed remotely"),
        ({"agent": {"interval": 0}}, "between 0.1 and 86400"),
        ({"agent": {"interval": 5, "timeout": 6}}, "below agent.interval"),
        ({"plugins": {"disk": {"enabled": "yes"}}}, "plugins.disk.enabled: true or false"),
        ({"alerts": {"threshold": [{"above": 3}]}}, "metric"),
    ],
)
def test_documents_the_agent_would_refuse_are_refused_with_the_key(doc, reason):
    with pytest.raises(ConfigError) as err:
        remote.check_document(doc, Where("push.toml", ""))
    assert reason in str(err.value)
    assert str(err.value).startswith("push.toml")


def test_a_server_may_slow_a_fleets_backlog_drain_and_nothing_else_of_mqtt(tmp_path):
    from edgemon import config
    from edgemon.forwarder import Forwarder

    doc = {"mqtt": {"drain_rate": 20}}
    assert remote.check_document(doc, Where("push.toml", "")) == doc
    assert remote.allowed(doc, remote.ALLOW_DEFAULT, ()) is None, "allowed by default"
    assert "not allowed" in (remote.allowed(doc, ("agent.interval",), ()) or ""), "unless the device says no"
    assert "locked" in (remote.allowed(doc, remote.ALLOW_DEFAULT, ("mqtt.drain_rate",)) or "")
    local = tmp_path / "agent.toml"
    local.write_text("[mqtt]\nendpoint = 'broker.example'\ndrain_rate = 500\n")
    cfg = config.load(local, environ={}, remote_doc=doc, remote_version=3)
    assert cfg.mqtt.drain_rate == 20.0
    assert cfg.mqtt.endpoint == "broker.example", "the rest of [mqtt] stays the file's"
    assert config.load(local, environ={}).mqtt.drain_rate == 500.0

    class Conn:
        status = None
        on_change = None
        on_command = None

    aws = config.MqttSettings(endpoint="abc-ats.iot.eu-west-1.amazonaws.com", drain_rate=500)
    forwarder = Forwarder(None, Conn(), aws, tmp_path / "status.json")  # type: ignore[arg-type]
    assert forwarder.rate == 90.0, "AWS IoT Core: under its 100 publishes/s per connection"
    forwarder.set_drain_rate(20)
    assert forwarder.rate == 20.0
