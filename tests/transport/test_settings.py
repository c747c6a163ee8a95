"""Transport settings: client id, CN, key permissions, plain TCP only to loopback, size limit."""

from __future__ import annotations

import json
import logging

import pytest

from edgemon import config
from edgemon.config import ConfigError
from edgemon.identity import check_clock, check_settings
from edgemon.transport import MAX_PAYLOAD, MqttSink
from edgemon_protocol.certs import validity
from edgemon_protocol.mqtt import is_loopback
from tests.conftest import run_agent


def mqtt_config(pki, tmp_path, ident=None, **mqtt):
    ident = ident or pki.issue("dev-cfg")
    env = {
        "EDGEMON_MQTT_ENDPOINT": "localhost",
        "EDGEMON_MQTT_CA": str(pki.ca_path),
        "EDGEMON_MQTT_CERT": str(ident.cert),
        "EDGEMON_MQTT_KEY": str(ident.key),
        "EDGEMON_STATE_DIR": str(tmp_path / "state"),
    }
    for key, value in mqtt.items():
        env[f"EDGEMON_{key.upper()}"] = value
    return config.load(None, environ=env)


def test_client_id_defaults_to_certificate_cn(pki, tmp_path):
    assert check_settings(mqtt_config(pki, tmp_path)) == "dev-cfg"


def test_configured_client_id_wins_with_a_warning(pki, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="edgemon"):
        assert check_settings(mqtt_config(pki, tmp_path, client_id="thing-42")) == "thing-42"
    assert "client id differs from the certificate's CN" in caplog.text
    assert "AWS IoT Core" in caplog.records[-1].reason


def test_group_readable_key_gets_a_warning_and_is_never_logged(pki, tmp_path, caplog):
    ident = pki.issue("dev-perm")
    ident.key.chmod(0o644)
    with caplog.at_level(logging.DEBUG, logger="edgemon"):
        check_settings(mqtt_config(pki, tmp_path, ident))
    assert "private key is readable by group or others" in caplog.text
    assert "PRIVATE KEY" not in caplog.text
    ident.key.chmod(0o600)


def test_plain_tcp_only_to_loopback(tmp_path):
    env = {"EDGEMON_MQTT_ENDPOINT": "192.0.2.10", "EDGEMON_MQTT_INSECURE_LOCAL": "1"}
    with pytest.raises(ConfigError, match="not a loopback address"):
        check_settings(config.load(None, environ=env))
    assert is_loopback("127.0.0.1")
    assert is_loopback("localhost")
    assert not is_loopback("192.0.2.10")


def test_mqtt_311_only_for_a_local_demo_broker():
    env = {"EDGEMON_MQTT_ENDPOINT": "broker.example", "EDGEMON_MQTT_PROTOCOL": "3.1.1"}
    with pytest.raises(ConfigError, match="only for a local demo broker"):
        check_settings(config.load(None, environ=env))
    with pytest.raises(ConfigError, match=r"is not one of 5, 3\.1\.1"):
        config.load(None, environ={"EDGEMON_MQTT_PROTOCOL": "4"})


def test_tls_requires_all_three_files(tmp_path):
    with pytest.raises(ConfigError, match=r"mqtt.ca \(EDGEMON_MQTT_CA\) is required"):
        check_settings(config.load(None, environ={"EDGEMON_MQTT_ENDPOINT": "broker.example"}))


def test_oversized_payload_is_refused_naming_the_largest_plugins(tmp_path, caplog):
    cfg = config.load(
        None,
        environ={
            "EDGEMON_MQTT_ENDPOINT": "127.0.0.1",
            "EDGEMON_MQTT_INSECURE_LOCAL": "1",
            "EDGEMON_STATE_DIR": str(tmp_path),
        },
    )
    sink = MqttSink(cfg, "dev-big")
    try:
        big = {"seq": 7, "metrics": {"huge": {f"k{i}": "x" * 200 for i in range(700)}, "cpu": {"percent": 1}}}
        with caplog.at_level(logging.ERROR, logger="edgemon"):
            sink(big)
        assert len(sink.buffer) == 0
        assert sink.status.refused_too_large == 1
        record = next(r for r in caplog.records if r.getMessage() == "payload too large; not published")
        assert f"> {MAX_PAYLOAD} B" in record.reason
        assert record.reason.index("huge") < record.reason.index("cpu")
        sink({"seq": 8, "metrics": {"cpu": {"percent": 1}}})
        assert len(sink.buffer) == 1
    finally:
        sink.stop()


@pytest.mark.slow
def test_status_command(mqtt_env, subscriber, tmp_path):
    import subprocess
    import time

    from tests.conftest import AGENT_BIN

    env = mqtt_env("dev-status")
    proc = subprocess.Popen([str(AGENT_BIN), "run"], env={**__import__("os").environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert subscriber.wait_for(lambda ps: len(ps) >= 2, 15)
        time.sleep(5.5)  # status.json is rewritten every STATUS_EVERY seconds
        result = run_agent("status", "--json", env=env)
    finally:
        proc.terminate()
        proc.wait(10)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["connection"]["state"] == "connected"
    assert status["connection"]["acked"] >= 2
    assert status["buffered"] <= 1
    assert status["dropped"] == 0
    text = run_agent("status", env=env).stdout
    assert "connection:  stopped" in text
    assert "buffer:" in text


@pytest.mark.slow  # a process of its own: end to end
def test_insecure_local_publishes_over_plain_tcp(tmp_path, pki, agent_env):
    import subprocess

    from tests.conftest import AGENT_BIN
    from tests.harness import COLLECTOR_CN, Mosquitto, Subscriber, free_port

    plain = free_port()
    broker = Mosquitto(tmp_path / "b", pki, plain_port=plain)
    broker.start()
    sub = Subscriber(broker, pki.issue(COLLECTOR_CN))
    env = {**agent_env, "EDGEMON_MQTT_ENDPOINT": "127.0.0.1", "EDGEMON_MQTT_PORT": str(plain),
           "EDGEMON_MQTT_INSECURE_LOCAL": "1", "EDGEMON_INTERVAL": "1", "EDGEMON_LOAD_PLUGINS": ""}  # fmt: skip
    proc = subprocess.Popen([str(AGENT_BIN), "run"], env={**__import__("os").environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert sub.wait_for(lambda ps: len(ps) >= 1, 15)
        assert sub.messages[0][0] == "devices/cli-device/monitoring"
    finally:
        proc.terminate()
        proc.wait(10)
        sub.stop()
        broker.stop()


def test_a_clock_before_the_certificate_or_an_expired_one_is_warned_about(pki, caplog):
    import logging
    import time

    ident = pki.issue("dev-clock")
    start, end = validity(ident.cert)
    with caplog.at_level(logging.WARNING, logger="edgemon"):
        check_clock(time.time(), start, end, str(ident.cert))
        assert caplog.records == [], "a right clock and a valid certificate say nothing"
        check_clock(946684800.0, start, end, str(ident.cert))  # an RTC back at 2000-01-01
        check_clock(end + 10, start, end, str(ident.cert))
    messages = [r.getMessage() for r in caplog.records]
    assert "the system clock is earlier than this device's certificate" in messages[0]
    assert "2000-01-01T00:00:00.000Z" in caplog.records[0].reason
    assert "certificate has expired" in messages[1]
