"""Nothing is lost while the broker is down, even if the agent is SIGKILLed meanwhile."""

from __future__ import annotations

import signal
import time

import pytest


def wait_seq(subscriber, n, timeout):
    return subscriber.wait_for(lambda ps: {p["seq"] for p in ps} >= set(range(1, n + 1)), timeout)


def wait_buffered(agent, n, timeout):
    """Wait (on the agent's own buffer, read-only) until it holds ``n`` payloads; return how many it holds."""
    from edgemon.buffer import inspect

    deadline = time.monotonic() + timeout
    held = 0
    while time.monotonic() < deadline:
        path = agent.state_dir / "buffer.db"
        if path.exists():
            held = int(inspect(path)["buffered"])
            if held >= n:
                break
        time.sleep(0.1)
    return held


@pytest.mark.slow
def test_broker_down_then_every_payload_arrives_in_order(mqtt_env, broker, subscriber, run_agent_proc):
    agent = run_agent_proc(mqtt_env("dev-out", EDGEMON_INTERVAL="0.5"))
    assert subscriber.wait_for(lambda ps: len(ps) >= 3, 15), agent.log.read_text()
    broker.stop()
    before = max(p["seq"] for p in subscriber.payloads())
    # An outage of 20 cycles, however long they take: the agent buffers them on disk.
    held = wait_buffered(agent, 20, 60)
    assert held >= 20, agent.log.read_text()
    broker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        doc = subscriber.payloads()
        if doc and doc[-1]["seq"] > before + held and doc[-1]["metrics"]["agent"]["transport"]["buffered"] == 0:
            break
        time.sleep(0.2)
    agent.stop()
    seqs = [p["seq"] for p in subscriber.payloads()]
    top = max(seqs)
    assert top >= before + held
    assert set(range(1, top + 1)) <= set(seqs), f"missing: {sorted(set(range(1, top + 1)) - set(seqs))}"
    # The backlog (collected while the broker was down) arrives oldest first.
    first_seen = list(dict.fromkeys(seqs))
    backlog = [s for s in first_seen if before < s <= before + held - 2]
    assert len(backlog) == held - 2
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
