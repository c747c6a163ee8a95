"""Flattening: deterministic, lossless, injective, and inverted by unflatten."""

from __future__ import annotations

import math
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given

from edgemon_protocol.flatten import CollisionError, flatten, unflatten

valid_key = st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True)
any_key = st.text(alphabet="ab-_1", min_size=1, max_size=4)
leaf = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.integers(), st.booleans(), st.text(max_size=5), st.none()
)


def trees(keys: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.recursive(
        st.dictionaries(keys, leaf, max_size=4),
        lambda children: st.dictionaries(keys, st.one_of(leaf, children), max_size=4),
        max_leaves=30,
    )


def leaves(tree: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += leaves(value, (*path, key))
        else:
            out.append(((*path, key), value))
    return out


def prune(tree: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = prune(value)
            if not value:
                continue
        out[key] = value
    return out


def test_example_from_the_brief():
    assert flatten({"cpu": {"percent": 3}}) == {"cpu-percent": 3}
    assert flatten({"disk": {"sda": {"read_bytes": 1}}}) == {"disk-sda-read_bytes": 1}


@given(trees(valid_key))
def test_deterministic_and_lossless(tree):
    flat = flatten(tree)
    assert flat == flatten(tree)
    assert list(flat) == list(flatten(tree)), "same key order every time"
    expected = {"-".join(path): value for path, value in leaves(tree)}
    assert flat == expected, "every leaf, numeric or not, under the joined path"
    for path, value in leaves(tree):
        if isinstance(value, float) and math.isfinite(value):
            assert flat["-".join(path)] == value


@given(trees(valid_key))
def test_unflatten_inverts_flatten_for_valid_keys(tree):
    assert unflatten(flatten(tree)) == prune(tree)


@given(trees(any_key))
def test_never_two_leaves_on_one_key(tree):
    """With arbitrary keys (even containing '-') flatten either maps leaves 1:1 or refuses."""
    try:
        flat = flatten(tree)
    except CollisionError:
        joined = ["-".join(path) for path, _ in leaves(tree)]
        assert len(set(joined)) < len(joined), "a collision is raised only when two paths really meet"
        return
    assert len(flat) == len(leaves(tree))


def test_collision_is_an_error_not_an_overwrite():
    with pytest.raises(CollisionError, match="a-b"):
        flatten({"a-b": 1, "a": {"b": 2}})


def test_unflatten_refuses_a_key_that_is_leaf_and_branch():
    with pytest.raises(CollisionError):
        unflatten({"a": 1, "a-b": 2})
