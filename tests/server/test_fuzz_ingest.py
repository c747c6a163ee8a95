"""Fuzzing the store path: whatever bytes arrive on whatever topic, nothing but a database outage escapes
``Store.write``, and the valid messages of the batch are stored.

``make test`` runs a bounded number of examples; ``make fuzz`` runs many more (EDGEMON_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import json
import os
import time

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select

from edgemon_server.db import Payload, Reject
from edgemon_server.store import Message, Store
from tests.fleet import payload

EXAMPLES = int(os.environ.get("EDGEMON_FUZZ_EXAMPLES", "60"))

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.sampled_from(["\ud800", "\x00", "x" * 300, "warning", "critical"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = ["schema", "device_id", "ts", "seq", "interval", "metrics", "alerts"]


@st.composite
def hostile_body(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "mutated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values)).encode("utf-8", "surrogatepass")
    doc = payload("fz-dev", draw(st.integers(0, 10_000)))
    field = draw(st.sampled_from([*FIELDS, "alerts.severity", "metrics.key", "extra"]))
    value = draw(json_values)
    if field == "alerts.severity":
        doc["alerts"] = [{"rule": "r", "severity": value, "message": "m"}]
    elif field == "metrics.key":
        doc["metrics"][draw(st.text(max_size=10))] = value
    elif field == "extra":
        doc["extra"] = value
    else:
        doc[field] = value
    return json.dumps(doc).encode("utf-8", "surrogatepass")


topics = st.one_of(
    st.just("devices/fz-dev/monitoring"),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass").decode("utf-8", "replace")),
)


def test_nothing_a_message_holds_escapes_the_store(engine):
    store = Store(engine)
    counter = {"good": 0}

    @given(st.lists(st.tuples(topics, hostile_body()), min_size=1, max_size=5))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def check(messages):
        counter["good"] += 1
        good = Message(
            "devices/fz-good/monitoring", json.dumps(payload("fz-good", counter["good"])).encode(), time.time()
        )
        batch = [Message(t, b, time.time()) for t, b in messages]
        result = store.write([*batch[:2], good, *batch[2:]])
        assert result.stored + result.duplicates + result.rejected == len(batch) + 1
        with engine.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(Payload).where(Payload.device_id == "fz-good"))
        assert stored == counter["good"], "the valid message of every batch is stored"

    check()
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Reject)) > 0
