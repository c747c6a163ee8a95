"""Nothing is lost while the broker is down, even if the agent is SIGKILLed meanwhile."""

from __future__ import annotations

import signal
import time

import pytest


def wait_seq(subscriber, n, timeout):
    return subscriber.wait_for(lambda ps: {p["seq"] for p in ps} >= set(range(1, n + 1)), timeout)


@pytest.mark.slow
def test_broker_down_30s_then_every_payload_arrives_in_order(mqtt_env, broker, subscriber, run_agent_proc):
    agent = run_agent_proc(mqtt_env("dev-out"))
    assert subscriber.wait_for(lambda ps: len(ps) >= 3, 15), agent.log.read_text()
    broker.stop()
    down_at = time.monotonic()
    before = max(p["seq"] for p in subscriber.payloads())
    time.sleep(30)
    broker.start()
    status_deadline = time.monotonic() + 60
    # The agent collected at 1 Hz all along: about 30 payloads were buffered during the outage.
    while time.monotonic() < status_deadline:
        doc = subscriber.payloads()
        if doc and doc[-1]["metrics"]["agent"]["transport"]["buffered"] == 0 and time.monotonic() - down_at > 35:
            break
        time.sleep(0.2)
    agent.stop()
    seqs = [p["seq"] for p in subscriber.payloads()]
    top = max(seqs)
    assert top >= before + 30
    assert set(range(1, top + 1)) <= set(seqs), f"missing: {sorted(set(range(1, top + 1)) - set(seqs))}"
    # The backlog (everything before the first live payload after reconnect) arrives oldest first.
    first_seen = []
    for s in seqs:
        if s not in first_seen:
            first_seen.append(s)
    backlog = [s for s in first_seen if before < s <= before + 28]  # collected while the broker was down
    assert len(backlog) == 28
    assert backlog == sorted(backlog)


@pytest.mark.slow
def test_sigkill_during_outage_then_restart_loses_nothing(mqtt_env, broker, subscriber, run_agent_proc):
    env = mqtt_env("dev-kill")
    agent = run_agent_proc(env)
    assert subscriber.wait_for(lambda ps: len(ps) >= 2, 15), agent.log.read_text()
    broker.stop()
    time.sleep(8)
    agent.stop(signal.SIGKILL)
    killed_state = agent.state_dir
    assert (killed_state / "buffer.db").exists()
    again = run_agent_proc(env)  # same state dir: same buffer and seq
    time.sleep(3)
    broker.start()
    assert subscriber.wait_for(lambda ps: len(ps) >= 16, 40), again.log.read_text()
    time.sleep(2)
    again.stop()
    seqs = [p["seq"] for p in subscriber.payloads()]
    top = max(seqs)
    assert top >= 14
    missing = sorted(set(range(1, top + 1)) - set(seqs))
    assert missing == [], f"missing after SIGKILL: {missing}"
