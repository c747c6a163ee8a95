"""The agent over real MQTT: a real mosquitto, real mutual TLS, the per-device ACL."""

from __future__ import annotations

import json
import time

import pytest


def seqs(payloads):
    return [p["seq"] for p in payloads]


@pytest.mark.slow
def test_payload_reaches_a_subscriber_on_devices_plus_monitoring(mqtt_env, subscriber, run_agent_proc):
    agent = run_agent_proc(mqtt_env("dev-1"))
    assert subscriber.wait_for(lambda ps: len(ps) >= 3, timeout=15), agent.log.read_text()
    topic = subscriber.messages[-1][0]
    assert topic == "devices/dev-1/monitoring"
    doc = subscriber.payloads()[-1]
    assert doc["device_id"] == "dev-1", "client id defaults to the certificate's CN"
    assert doc["metrics"]["agent"]["transport"]["connected"] is True
    assert agent.stop() == 0


@pytest.mark.slow
def test_payload_arrives_within_a_second_of_collection(mqtt_env, subscriber, run_agent_proc):
    from datetime import datetime

    run_agent_proc(mqtt_env("dev-lat"))
    assert subscriber.wait_for(lambda ps: len(ps) >= 4, timeout=15)
    for doc, arrived in list(zip(subscriber.payloads(), subscriber.received_at))[1:]:
        collected = datetime.fromisoformat(doc["ts"].replace("Z", "+00:00")).timestamp()
        assert 0 <= arrived - collected < 1.0, (doc["seq"], arrived - collected)


@pytest.mark.slow
def test_other_devices_topic_is_not_authorized(mqtt_env, subscriber, run_agent_proc, pki):
    # Certificate of dev-a, but claiming to be dev-b: the ACL allows devices/dev-a/# only.
    env = mqtt_env(identity=pki.issue("dev-a"), EDGEMON_CLIENT_ID="dev-b")
    agent = run_agent_proc(env)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        errors = [r for r in agent.records() if "not authorized" in str(r.get("reason", ""))]
        if errors:
            break
        time.sleep(0.1)
    assert errors, agent.log.read_text()
    assert "135" in errors[0]["reason"]
    assert errors[0]["level"] == "error"
    time.sleep(1.5)
    assert subscriber.payloads() == [], "nothing may be delivered to another device's topic"
    warnings = [r for r in agent.records() if r.get("msg") == "client id differs from the certificate's CN"]
    assert warnings
    assert agent.proc.poll() is None, "the agent keeps running"


@pytest.mark.parametrize("kind", ["foreign", "expired", "missing"])
@pytest.mark.slow
def test_bad_client_certificates_log_one_clear_error_and_back_off(mqtt_env, run_agent_proc, pki, broker, kind):
    if kind == "missing":
        ident = pki.issue("dev-nocert")
        env = mqtt_env(identity=ident)
        env["EDGEMON_MQTT_CERT"] = str(ident.cert.with_name("nope.crt"))
        agent = run_agent_proc(env)
        assert agent.proc.wait(15) == 2
        assert "mqtt.cert: cannot read" in agent.log.read_text()
        return
    ident = pki.issue("dev-bad", foreign=kind == "foreign", expired=kind == "expired")
    agent = run_agent_proc(mqtt_env(identity=ident))
    time.sleep(6)
    assert agent.proc.poll() is None, "no crash"
    failures = [r for r in agent.records() if r.get("msg") == "cannot connect to the broker; retrying with back-off"]
    assert len(failures) == 1, "one clear error, not one per attempt"
    assert "certificate" in failures[0]["reason"]
    status = json.loads((agent.state_dir / "status.json").read_text())
    assert 2 <= status["connect_failures"] <= 40, "retries with back-off, no spinning"
    assert status["state"] == "disconnected"


@pytest.mark.slow  # a process of its own: end to end
def test_agent_sends_acknowledged_payloads_again_when_the_server_asks(mqtt_env, subscriber, run_agent_proc):
    from awscrt import mqtt5

    agent = run_agent_proc(mqtt_env("dev-resend", EDGEMON_INTERVAL="0.3"))
    assert subscriber.wait_for(lambda ps: {1, 2, 3, 4} <= {p["seq"] for p in ps}, 30)
    command = mqtt5.PublishPacket(
        topic="devices/dev-resend/commands/resend", payload=b'{"from": 1, "to": 3}', qos=mqtt5.QoS.AT_LEAST_ONCE
    )
    subscriber.client.publish(command).result(10)

    def resent(ps):
        seqs = [p["seq"] for p in ps]
        return all(seqs.count(s) >= 2 for s in (1, 2, 3))

    assert subscriber.wait_for(resent, 20), [p["seq"] for p in subscriber.payloads()]
    first = {p["seq"]: p for p in reversed(subscriber.payloads())}
    again = [p for p in subscriber.payloads() if p["seq"] == 2]
    assert again[0] == again[1] == first[2], "byte-for-byte the same payload (same ts): the server sees a duplicate"
    logged = [r for r in agent.records() if r.get("msg") == "server asked for payloads again"]
    assert logged[0]["reason"] == "seq 1..3: 3 requeued, 0 no longer kept"


@pytest.mark.slow  # a process of its own: end to end
def test_bad_resend_commands_are_logged_and_ignored(mqtt_env, subscriber, run_agent_proc):
    from awscrt import mqtt5

    agent = run_agent_proc(mqtt_env("dev-badcmd", EDGEMON_INTERVAL="0.3"))
    assert subscriber.wait_count(2, 30)
    for body in (b"nope", b'{"from": 5, "to": 1}', b'{"from": "a", "to": 1}'):
        packet = mqtt5.PublishPacket(
            topic="devices/dev-badcmd/commands/resend", payload=body, qos=mqtt5.QoS.AT_LEAST_ONCE
        )
        subscriber.client.publish(packet).result(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        bad = [r for r in agent.records() if r.get("msg") == "bad resend command ignored"]
        if len(bad) == 3:
            break
        time.sleep(0.1)
    assert [r["reason"].split(":")[0] for r in bad] == [
        "not JSON",
        "range 5..1 is empty or longer than 100000",
        "'from' and 'to' must be integers >= 0",
    ]
    assert agent.proc.poll() is None, "still running"


@pytest.mark.slow
def test_a_broker_policy_without_the_config_topic_pauses_remote_config_not_payloads(
    mqtt_env, broker, subscriber, run_agent_proc
):
    # A broker set up before remote configuration: devices may not publish to devices/<id>/config, and
    # mosquitto drops a client that tries. The agent must notice, stop asking, and keep sending payloads.
    broker.stop()
    acl = broker.workdir / "acl"
    acl.write_text("\n".join(line for line in acl.read_text().splitlines() if not line.endswith("/config")) + "\n")
    broker.start()
    subscriber.client.stop()
    from tests.harness import SUBSCRIBER_CN, Subscriber

    fresh = Subscriber(broker, broker.pki.issue(SUBSCRIBER_CN))
    try:
        agent = run_agent_proc(mqtt_env("dev-oldacl", EDGEMON_INTERVAL="0.5"))
        assert fresh.wait_for(lambda ps: len({p["seq"] for p in ps}) >= 10, 40), agent.log.read_text()[-3000:]
        records = agent.records()
        paused = [r for r in records if str(r.get("msg", "")).startswith("remote configuration paused")]
        assert len(paused) == 1, "said once, with the reason"
        assert paused[0]["topic"] == "devices/dev-oldacl/config"
    finally:
        fresh.stop()
