"""Metric metadata: the vocabulary, patterns, and the document both ends exchange."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgemon_protocol import meta
from edgemon_protocol.meta import Metric

keys = st.lists(st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True), min_size=1, max_size=6)


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("cpu-percent", "cpu-percent", True),
        ("cpu-percent", "cpu-percent2", False),
        ("disk-usage-*-percent", "disk-usage-root-percent", True),
        ("disk-usage-*-percent", "disk-usage-a-b-percent", False),
        ("disk-usage-*-percent", "disk-usage-percent", False),
        ("memory-**-percent", "memory-percent", True),
        ("memory-**-percent", "memory-swap-percent", True),
        ("memory-**-percent", "memory-a-b-c-percent", True),
        ("memory-**-percent", "memory-percentx", False),
        ("gpu-*-**", "gpu-0-utilization-gpu", True),
        ("gpu-*-**", "gpu", False),
    ],
)
def test_patterns(pattern, key, matches):
    assert bool(meta.compile_pattern(pattern).fullmatch(key)) is matches


@given(keys)
def test_a_key_matches_itself_and_its_one_level_wildcards(parts):
    key = "-".join(parts)
    assert meta.compile_pattern(key).fullmatch(key)
    for i in range(1, len(parts)):
        starred = "-".join([*parts[:i], "*", *parts[i + 1 :]])
        assert meta.compile_pattern(starred).fullmatch(key)
        assert meta.compile_pattern("-".join([*parts[:i], "**"])).fullmatch(key)


@pytest.mark.parametrize("pattern", ["", "*-percent", "**", "cpu--x", "cpu-per cent", "cpu-***", "a-" * 200 + "b"])
def test_bad_patterns_are_refused(pattern):
    with pytest.raises(ValueError, match="pattern"):
        meta.check_pattern(pattern)


def test_the_first_matching_pattern_wins():
    entries = [("disk-usage-root-percent", Metric("%", headline="Root")), ("disk-**-percent", Metric("%"))]
    assert meta.lookup(entries, "disk-usage-root-percent") == Metric("%", headline="Root")
    assert meta.lookup(entries, "disk-usage-data-percent") == Metric("%")
    assert meta.lookup(entries, "cpu-percent") is None


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"unit": "bytes"}, "unit 'bytes' is not one of"),
        ({"kind": "histogram"}, "kind"),
        ({"description": "x" * 201}, "description"),
        ({"headline": "two\nlines"}, "headline"),
    ],
)
def test_a_metric_outside_the_vocabulary_is_refused(kwargs, reason):
    with pytest.raises(ValueError, match=reason):
        Metric(**kwargs)


metrics_st = st.builds(
    Metric,
    unit=st.sampled_from(("", *meta.UNITS)),
    kind=st.sampled_from(meta.KINDS),
    description=st.text(max_size=40).filter(lambda s: "\n" not in s),
    headline=st.text(max_size=10).filter(lambda s: "\n" not in s),
)


@given(st.dictionaries(keys.map("-".join), metrics_st, max_size=20))
def test_documents_round_trip_in_order(entries):
    device, parsed = meta.parse(meta.encode("dev-1", "2026-11-30T00:00:00.000Z", entries))
    assert device == "dev-1"
    assert list(parsed.items()) == list(entries.items())


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"schema": 2}, "schema 1"),
        ({"schema": 1, "device_id": "a/b", "metrics": {}}, "device_id"),
        ({"schema": 1, "device_id": "d", "metrics": []}, "object"),
        ({"schema": 1, "device_id": "d", "metrics": {"*x": {}}}, "pattern"),
        ({"schema": 1, "device_id": "d", "metrics": {"a": {"unit": "%", "colour": "red"}}}, "fields"),
        ({"schema": 1, "device_id": "d", "metrics": {"a": {"unit": 5}}}, "string"),
        ({"schema": 1, "device_id": "d", "metrics": {"a": {"unit": "furlongs"}}}, "unit"),
        ({"schema": 1, "device_id": "d", "metrics": {f"k{i}": {} for i in range(meta.MAX_ENTRIES + 1)}}, "at most"),
    ],
)
def test_a_bad_document_says_why(doc, reason):
    with pytest.raises(ValueError, match=reason):
        meta.parse(json.dumps(doc).encode())
