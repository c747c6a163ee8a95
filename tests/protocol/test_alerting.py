"""The alert engine under a fake clock: dwell times, hysteresis, escalation, no data, restarts."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemon_protocol.alerting import Engine, Machine, Observation, Threshold, parse_duration

DISK = Threshold("disk_full", "disk-usage-*-percent", above=90, clear=85, for_s=60, clear_for_s=30)

steps = st.lists(
    st.tuples(st.floats(0.5, 40), st.one_of(st.none(), st.floats(0, 100, allow_nan=False))), min_size=1, max_size=80
)


def run(engine: Engine, seq, t0: float = 1000.0):
    """Feed (dt, value) steps for one key; return [(time, value, transitions)]."""
    now, out = t0, []
    for dt, value in seq:
        now += dt
        flat = {} if value is None else {"disk-usage-sda-percent": value}
        out.append((now, value, engine.evaluate(now, flat)))
    return out


@settings(max_examples=300, deadline=None)
@given(steps)
def test_no_transition_without_its_dwell(seq):
    trace = run(Engine([DISK], interval=10), seq)
    above_since = None  # when the value last went above 90 (the condition of a pending alert)
    below_since = None  # when the value last went to 85 or below (the condition of a clear)
    for now, value, transitions in trace:
        if value is not None:
            above_since = (above_since or now) if value > 90 else None
            below_since = (below_since or now) if value <= 85 else None
        for t in transitions:
            if t.state == "firing":
                assert value is not None
                assert value > 85, "firing needs the condition (or, once firing, not cleared)"
                assert now - t.since >= DISK.for_s
            if t.state == "resolved" and value is not None:
                assert below_since is not None
                assert now - below_since >= DISK.clear_for_s


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.5, 40), st.floats(85.0001, 90)), min_size=1, max_size=60), st.booleans())
def test_a_value_hovering_between_clear_and_threshold_never_flaps(seq, firing_first):
    engine = Engine([DISK], interval=10)
    now = 0.0
    if firing_first:  # get it firing, then hover
        for _ in range(10):
            now += 10
            engine.evaluate(now, {"disk-usage-sda-percent": 99})
        assert engine.active()[0]["state"] == "firing"
    before = [a["state"] for a in engine.active()]
    for dt, value in seq:
        now += dt
        assert engine.evaluate(now, {"disk-usage-sda-percent": value}) == []
    assert [a["state"] for a in engine.active()] == before


def test_escalation_and_back_is_one_alert():
    rule = Threshold("disk_full", "disk-*", above=90, clear=85, critical=97, severity="warning")
    engine = Engine([rule])
    seen = []
    for t, value in enumerate([95, 98, 96, 93, 92, 86, 85]):
        seen += [(x.state, x.severity) for x in engine.evaluate(float(t), {"disk-a": value})]
    # 98 > 97 escalates; it stays critical down to 92 (= 97 minus the 5 of hysteresis) then de-escalates.
    assert seen == [("firing", "warning"), ("firing", "critical"), ("firing", "warning"), ("resolved", "warning")]
    assert len({a["fingerprint"] for a in engine.active()}) == 0


def test_below_rules_mirror_above():
    rule = Threshold("battery_low", "power-battery", below=10, clear=15, for_s=0)
    engine = Engine([rule])
    states = [[t.state for t in engine.evaluate(float(i), {"power-battery": v})] for i, v in enumerate([20, 9, 12, 16])]
    assert states == [[], ["firing"], [], ["resolved"]]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("keep", []),
        ("resolve", [("resolved", "warning")]),
    ],
)
def test_no_data_policies_for_a_firing_alert(policy, expected):
    rule = Threshold("hot", "gpu-*-temperature", above=85, no_data=policy, no_data_after=30)
    engine = Engine([rule])
    engine.evaluate(0, {"gpu-0-temperature": 90})
    assert engine.active()[0]["state"] == "firing"
    assert engine.evaluate(10, {}) == [], "a gap shorter than no_data_after changes nothing"
    got = [(t.state, t.severity) for t in engine.evaluate(40, {})]
    assert got == expected
    assert bool(engine.active()) == (policy == "keep"), "no data is never silently 'resolved' under keep"


def test_no_data_can_itself_alert():
    rule = Threshold("sensor", "env-temp", above=50, no_data="alert", no_data_after=30, severity="critical")
    engine = Engine([rule])
    engine.evaluate(0, {"env-temp": 20})
    assert engine.evaluate(20, {}) == []
    fired = engine.evaluate(31, {})
    assert [(t.state, t.severity) for t in fired] == [("firing", "critical")]
    assert "no data" in fired[0].summary
    assert [t.state for t in engine.evaluate(40, {"env-temp": 20})] == ["resolved"]


@settings(max_examples=150, deadline=None)
@given(steps, st.integers(0, 80))
def test_a_restart_keeps_pending_timers_and_firing_alerts(seq, cut):
    cut = min(cut, len(seq))
    whole = [t for _, _, ts in run(Engine([DISK], interval=10), seq) for t in ts]
    first = Engine([DISK], interval=10)
    part1 = run(first, seq[:cut])
    saved = json.loads(json.dumps(first.to_json()))  # what goes to disk
    second = Engine([DISK], interval=10)
    second.restore(saved)
    t0 = part1[-1][0] if part1 else 1000.0
    part2 = run(second, seq[cut:], t0=t0)
    resumed = [t for _, _, ts in part1 + part2 for t in ts]
    # A restart forgets only when the key last had data (no-data timing restarts from the next look).
    if all(v is not None for _, v in seq):
        assert resumed == whole


def test_a_changed_rule_starts_fresh_and_an_unchanged_one_keeps_its_state():
    engine = Engine([DISK])
    engine.evaluate(0, {"disk-usage-sda-percent": 99})
    engine.evaluate(100, {"disk-usage-sda-percent": 99})
    saved = engine.to_json()
    same = Engine([DISK])
    assert same.restore(saved) == 1
    assert same.active()[0]["state"] == "firing"
    changed = Engine([Threshold("disk_full", "disk-usage-*-percent", above=80)])
    assert changed.restore(saved) == 0


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"above": 90, "clear": 95}, "never clears"),
        ({"below": 10, "clear": 5}, "never clears"),
        ({"above": 90, "below": 10}, "exactly one"),
        ({}, "exactly one"),
        ({"above": 90, "critical": 80}, "beyond"),
        ({"above": 90, "severity": "fatal"}, "severity"),
        ({"above": 90, "no_data": "ignore"}, "no_data"),
        ({"above": 90, "summary": "{nope}"}, "summary"),
    ],
)
def test_bad_thresholds_say_why(kwargs, reason):
    with pytest.raises(ValueError, match=reason):
        Threshold("r", "cpu-percent", **kwargs)


def test_machines_of_plugin_conditions_get_the_same_dwell():
    m = Machine("trend", "disk-usage-sda", for_s=20)
    assert m.step(0, Observation(True, "warning", 1.0))[0].state == "pending"
    assert m.step(10, Observation(True)) == []
    assert m.step(20, Observation(True))[0].state == "firing"
    assert m.step(30, Observation(False))[0].state == "resolved"


@pytest.mark.parametrize(("text", "seconds"), [("0s", 0), ("90s", 90), ("5m", 300), ("1h30m", 5400), (15, 15.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "five minutes", "-1s", True])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_the_tree_path_gives_what_the_flat_path_gives_and_finds_new_keys():
    from edgemon_protocol import alerting
    from edgemon_protocol.flatten import flatten

    rule = Threshold("disk_full", "disk-usage-*-percent", above=90, for_s=0)
    by_tree, by_flat = Engine([rule]), Engine([rule])
    trees = [{"disk": {"usage": {"sda": {"percent": v}}}} for v in (50, 95, 95, 40)]
    for t, tree in enumerate(trees):
        assert by_tree.evaluate_tree(float(t), tree) == by_flat.evaluate(float(t), flatten(tree))
    grown = {"disk": {"usage": {"sda": {"percent": 40}, "sdb": {"percent": 99}}}}
    found = []
    for t in range(alerting.REMATCH_CYCLES + 1):
        found += [x.key for x in by_tree.evaluate_tree(10.0 + t, grown)]
    assert found == ["disk-usage-sdb-percent"], "a disk mounted later is found at the next full match"
