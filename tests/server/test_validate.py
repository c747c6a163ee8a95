"""Validation: agrees with the agent's JSON Schema, adds the server's limits, says why it refuses."""

from __future__ import annotations

import json
import time
from typing import Any

import hypothesis.strategies as st
import jsonschema
import pytest
from hypothesis import given

from edgemon.payload import load_schema
from edgemon_protocol.flatten import flatten
from edgemon_server.validate import Limits, RejectedError, parse
from tests.conftest import run_agent
from tests.fleet import SAMPLES_PER_PAYLOAD, payload

SCHEMA = load_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
TOPIC = "devices/dev-1/monitoring"
NOW = 1_800_000_000.0
LIMITS = Limits()

key = st.from_regex(r"[A-Za-z0-9_]{1,10}", fullmatch=True)
leaf = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.booleans(),
    st.text(max_size=20),
    st.none(),
)
metrics = st.recursive(
    st.dictionaries(key, leaf, max_size=5),
    lambda children: st.dictionaries(key, st.one_of(leaf, children), max_size=4),
    max_leaves=40,
)


def doc(**changes):
    base = {
        "schema": 1,
        "device_id": "dev-1",
        "ts": "2026-11-29T10:00:00.123Z",
        "seq": 7,
        "interval": 10,
        "metrics": {"cpu": {"percent": 3.5}},
        "alerts": [],
    }
    base.update(changes)
    return base


def body(d) -> bytes:
    return json.dumps(d).encode()


def depth(tree: dict[str, Any]) -> int:
    return 1 + max((depth(v) for v in tree.values() if isinstance(v, dict)), default=0)


@given(metrics)
def test_every_schema_valid_payload_is_accepted_and_flattened(tree):
    d = doc(metrics=tree)
    VALIDATOR.validate(d)
    if depth(tree) > LIMITS.max_depth:
        return
    got = parse(TOPIC, body(d), LIMITS, NOW)
    flat = flatten(tree)
    assert got.samples == {k: float(v) for k, v in flat.items() if isinstance(v, int | float)}
    assert got.attributes == {k: v for k, v in flat.items() if isinstance(v, str)}
    assert (got.device_id, got.seq, got.interval) == ("dev-1", 7, 10.0)
    assert got.ts_ms == 1795946400123


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5)),
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=5), c, max_size=3)),
    max_leaves=10,
)


@given(st.sampled_from(["schema", "device_id", "ts", "seq", "interval", "metrics", "alerts"]), json_value)
def test_accepts_nothing_the_schema_refuses(field, value):
    d = doc(**{field: value})
    try:
        raw = json.dumps(d)
    except ValueError:
        return
    schema_ok = VALIDATOR.is_valid(json.loads(raw))
    try:
        parse(TOPIC, raw.encode(), LIMITS, NOW)
    except RejectedError:
        return
    assert schema_ok, f"server accepted what the schema refuses: {raw}"


def test_a_real_agent_payload_is_accepted(agent_env):
    out = run_agent("once", env={**agent_env, "EDGEMON_LOAD_PLUGINS": "cpu,disk"})
    assert out.returncode == 0, out.stderr
    real = json.loads(out.stdout)
    got = parse(f"devices/{real['device_id']}/monitoring", out.stdout.encode(), LIMITS, time.time())
    numeric = {k: v for k, v in flatten(real["metrics"]).items() if isinstance(v, int | float)}
    assert got.samples == {k: float(v) for k, v in numeric.items()}
    assert any(k.startswith("cpu-") for k in got.samples)


def test_fleet_payload_has_the_documented_size():
    got = parse("devices/sim-1/monitoring", body(payload("sim-1", 3)), LIMITS, time.time() + 10**9)
    assert len(got.samples) == SAMPLES_PER_PAYLOAD
    assert got.attributes == {"system-hostname": "host-sim-1", "system-agent_version": "0.1.0"}
    assert got.samples["system-online"] == 1.0


BAD = [
    (b"{not json", "malformed JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[1, 2]", "not an object"),
    (b'{"schema": 1}', "missing field"),
    (body(doc(extra=1)), "unknown field"),
    (body(doc(schema=2)), "schema"),
    (body(doc(device_id="dev-2")), "does not match the topic"),
    (body(doc(seq="7")), "seq"),
    (body(doc(seq=-1)), "seq"),
    (body(doc(interval=0)), "interval"),
    (body(doc(ts="yesterday")), "RFC 3339"),
    (body(doc(ts="2099-01-01T00:00:00Z")), "ahead of the server's clock"),
    (body(doc(metrics={"cpu": {"percent": "x" * 300}})), "longer than 256"),
    (body(doc(metrics={"cpu": [1, 2]})), "arrays are not allowed"),
    (json.dumps(doc(metrics={"cpu": float("nan")})).encode(), "NaN"),
    (json.dumps(doc(metrics={"cpu": float("inf")})).encode(), "Infinity"),
    (body(doc(metrics={"cpu": 1e308})).replace(b"1e+308", b"1e999"), "non-finite"),
    (body(doc(metrics={"a-b": 1, "a": {"b": 2}})), "key collision"),
    (body(doc(metrics={"bad key": 1})), "keys are 1-64"),
    (b'{"schema": 1, "schema": 1}', "duplicate key"),
    (body(doc(metrics={"k": {"k": {"k": {"k": {"k": {"k": {"k": {"k": {"k": 1}}}}}}}}})), "deeper than 8"),
    (body(doc(metrics={f"m{i}": i for i in range(5000)})), "more than 4096 leaves"),
    (b"{" + b" " * (300 * 1024) + b"}", "too large"),
    (body(doc(alerts=[{"rule": "x"}])), "alerts[0]"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD, ids=[r for _, r in BAD])
def test_bad_input_is_rejected_with_its_reason(raw, reason):
    with pytest.raises(RejectedError) as info:
        parse(TOPIC, raw, LIMITS, NOW)
    assert reason in info.value.reason


def test_deep_json_within_the_size_limit_is_refused_not_crashed():
    raw = b'{"a":' * 20000 + b"1" + b"}" * 20000
    with pytest.raises(RejectedError, match=r"malformed JSON|deeper"):
        parse(TOPIC, raw, Limits(max_bytes=10**6), NOW)


def test_topic_must_be_a_device_monitoring_topic():
    with pytest.raises(RejectedError, match="not devices/<id>/monitoring"):
        parse("devices/a/b/monitoring", body(doc()), LIMITS, NOW)
