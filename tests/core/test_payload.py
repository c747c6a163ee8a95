"""The payload envelope, the schema, and merging collector sub-trees."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgemon import payload

keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8)
leaves = (
    st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
    | st.text(max_size=20)
)
trees = st.recursive(leaves, lambda children: st.dictionaries(keys, children, max_size=4), max_leaves=20).filter(
    lambda t: isinstance(t, dict)
)
subtrees = st.lists(st.tuples(keys, trees), max_size=5)


def _leaf_paths(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(tree, dict):
        out: dict[tuple[str, ...], Any] = {}
        for k, v in tree.items():
            out.update(_leaf_paths(v, (*prefix, k)))
        return out  # an empty object carries no leaf
    return {prefix: tree}


@given(subtrees)
def test_any_merge_validates_against_the_schema(parts):
    merged, _ = payload.merge(parts)
    doc = payload.build("dev-1", 7, 1_700_000_000.5, 10.0, merged)
    assert payload.validation_errors(doc) == []
    assert json.loads(payload.dumps(doc)) == doc


@given(subtrees)
def test_merge_never_silently_overwrites(parts):
    merged, clashes = payload.merge(parts)
    merged_leaves = _leaf_paths(merged)
    clash_paths = {tuple(c.path.split(".")) for c in clashes}
    for owner, tree in parts:
        for path, value in _leaf_paths(tree).items():
            if path in merged_leaves and merged_leaves[path] == value:
                continue
            # Not in the result: some prefix of the path must be reported as a clash.
            assert any(path[: len(c)] == c for c in clash_paths), (owner, path)


def test_clash_keeps_the_first_and_names_both():
    merged, clashes = payload.merge([("cpu", {"cpu": {"percent": 1}}), ("evil", {"cpu": {"percent": 99, "x": 2}})])
    assert merged == {"cpu": {"percent": 1, "x": 2}}
    assert clashes == [payload.Clash("cpu.percent", "cpu", "evil")]


def test_leaf_against_subtree_is_a_clash():
    merged, clashes = payload.merge([("a", {"gpu": 1}), ("b", {"gpu": {"0": {"util": 3}}})])
    assert merged == {"gpu": 1}
    assert [c.path for c in clashes] == ["gpu"]


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["metrics"].update({"bad-key": 1}), "metrics"),
        (lambda d: d["metrics"].update({"list": [1, 2]}), "metrics/list"),
        (lambda d: d.update(seq=-1), "seq"),
        (lambda d: d.update(ts="yesterday"), "ts"),
        (lambda d: d.update(extra=1), "<root>"),
        (lambda d: d.update(device_id="a/b"), "device_id"),
        (lambda d: d.update(device_id="a+b"), "device_id"),
        (lambda d: d["alerts"].append({"rule": "x", "severity": "boom", "message": "m"}), "alerts/0/severity"),
    ],
)
def test_schema_rejects_bad_payloads(mutate, where):
    doc = payload.build("dev-1", 1, 0.0, 10.0, {"cpu": {"percent": 1.5}})
    assert payload.validation_errors(doc) == []
    mutate(doc)
    errors = payload.validation_errors(doc)
    assert errors
    assert any(e.startswith(where) for e in errors), errors


def test_dumps_refuses_non_finite_floats():
    with pytest.raises(ValueError, match="JSON compliant"):
        payload.dumps({"x": float("nan")})


def test_timestamp_is_utc_rfc3339_with_millis():
    assert payload.utc_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert payload.utc_timestamp(1_700_000_000.1239) == "2023-11-14T22:13:20.123Z"


def test_agent_payload_has_the_documented_envelope(make_agent):
    from tests.conftest import plugin_module

    agent = make_agent(
        (
            "x",
            plugin_module(
                "x",
                """
            from edgemon import hookimpl
            @hookimpl
            def edgemon_register_collectors(register):
                register("x", lambda: {"x": {"v": 1}})
            """,
            ),
        )
    )
    doc = agent.cycle()
    assert set(doc) == {"schema", "device_id", "ts", "seq", "interval", "metrics", "alerts"}
    assert doc["device_id"] == "test-device"
    assert doc["metrics"]["x"] == {"v": 1}
    assert doc["alerts"] == []
    assert payload.validation_errors(doc) == []


def test_plugin_cannot_overwrite_the_agent_namespace(make_agent):
    from tests.conftest import plugin_module

    agent = make_agent(
        (
            "sneaky",
            plugin_module(
                "s",
                """
            from edgemon import hookimpl
            @hookimpl
            def edgemon_register_collectors(register):
                register("sneaky", lambda: {"agent": {"cycles": -1}})
            """,
            ),
        )
    )
    doc = agent.cycle()
    assert doc["metrics"]["agent"]["cycles"] == 1
    assert doc["metrics"]["agent"]["collectors"]["sneaky"]["clashes"] == 1
