"""The wire contract, checked once for both ends: ids, keys, topics, commands, the schema's patterns."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgemon_protocol import commands, ids, payload, topics

ids_st = st.from_regex(ids.DEVICE_ID_RE, fullmatch=True)


def mqtt_matches(topic_filter: str, topic: str) -> bool:
    """MQTT's filter semantics (``+`` one level, ``#`` the rest; ``$share/<group>/`` stripped)."""
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2]
    f, t = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level not in ("+", t[i])):
            return False
    return len(f) == len(t)


def test_the_schema_holds_the_same_patterns_as_the_code():
    schema = payload.load_schema()
    assert schema["properties"]["device_id"]["pattern"] == f"^{ids.DEVICE_ID}$"
    assert schema["$defs"]["key"]["pattern"] == f"^{ids.KEY}$"
    assert schema["$defs"]["alert"]["properties"]["rule"]["pattern"] == f"^{ids.RULE}$"
    assert schema["properties"]["ts"]["pattern"] == f"^{ids.TS}$"
    assert schema["properties"]["seq"]["maximum"] == payload.MAX_SEQ
    assert schema["properties"]["interval"]["maximum"] == payload.MAX_INTERVAL
    assert schema["properties"]["schema"]["const"] == payload.SCHEMA_VERSION
    assert schema["$defs"]["alert"]["properties"]["severity"]["enum"] == list(payload.SEVERITIES)


@given(ids_st, st.sampled_from(topics.UPLINK))
def test_every_uplink_topic_parses_back_and_reaches_the_server(device, kind):
    topic = {"monitoring": topics.monitoring, "meta": topics.meta, "alerts": topics.alerts, "config": topics.config}[
        kind
    ](device)
    assert topics.parse(topic) == (device, kind)
    assert mqtt_matches(topics.subscription(kind), topic)
    assert mqtt_matches(topics.subscription(kind, "collectors"), topic)
    assert not any(mqtt_matches(topics.subscription(k), topic) for k in topics.UPLINK if k != kind)


@pytest.mark.parametrize(
    "topic",
    [
        "devices/a/b/monitoring",
        "devices//monitoring",
        "devices/a/commands",
        "x/a/monitoring",
        "devices/a b/meta",
        "devices/a/monitoring/",
        "devices/+/monitoring",
        "devices/#/meta",
        "devices/" + "a" * 129 + "/meta",
    ],
)
def test_what_is_not_an_uplink_topic_is_refused(topic):
    assert topics.parse(topic) is None


@given(ids_st, st.from_regex(r"[a-z_]{1,16}", fullmatch=True))
def test_commands_reach_only_their_device(device, name):
    topic = topics.command(device, name)
    assert topics.command_name(device, topic) == name
    assert topics.command_name(device + "x", topic) is None
    assert mqtt_matches(f"{topics.commands(device)}/#", topic)


def test_the_acl_lets_a_device_use_only_its_own_topics():
    device = topics.device_acl()
    assert set(device) == {
        "pattern write devices/%u/monitoring",
        "pattern write devices/%u/meta",
        "pattern write devices/%u/alerts",
        "pattern write devices/%u/config",
        "pattern read devices/%u/commands/#",
    }
    assert "topic write devices/+/commands/#" in topics.collector_acl()


@given(st.integers(0, 2**60), st.integers(0, commands.MAX_RESEND - 1))
def test_resend_round_trips(first, span):
    assert commands.parse_resend(commands.encode_resend(first, first + span)) == (first, first + span)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"from": 1}', "integers"),
        (b'{"from": true, "to": 2}', "integers"),
        (b'{"from": -1, "to": 2}', "integers"),
        (b'{"from": 5, "to": 4}', "empty or longer"),
        (json.dumps({"from": 0, "to": commands.MAX_RESEND}).encode(), "empty or longer"),
    ],
)
def test_a_bad_resend_says_why(body, reason):
    with pytest.raises(ValueError, match=reason):
        commands.parse_resend(body)


@given(st.text(max_size=300))
def test_any_name_becomes_a_valid_id_and_key(name):
    assert ids.is_device_id(ids.device_id_from(name)) or ids.device_id_from(name) == ""
    assert ids.KEY_RE.fullmatch(ids.safe_key(name))
    assert "-" not in ids.safe_key(name)


def test_no_copy_of_the_contract_outside_the_protocol_package():
    """The id pattern and topic strings are written once, in edgemon_protocol."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sources = [
        *root.glob("edgemon-core/src/**/*.py"),
        *root.glob("server/src/**/*.py"),
        *root.glob("plugins/*/src/**/*.py"),
    ]
    copies = []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for needle in (ids.DEVICE_ID, ids.KEY, ids.RULE):
            if needle in text:
                copies.append(f"{path.relative_to(root)}: {needle}")
        if re.search(r"""f?["']\$?(share/[^/]*/)?devices/""", text):  # a string literal that starts a topic
            copies.append(f"{path.relative_to(root)}: a topic written by hand")
        if re.search(r"mqtt5\.ClientOptions|mtls_from_path|mqtt3?\.Connection\(", text):
            copies.append(f"{path.relative_to(root)}: an MQTT client built by hand")
    assert copies == []
