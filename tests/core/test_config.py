"""Configuration: file, then environment, then flags; every error names its place."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgemon import config
from edgemon.config import ConfigError
from tests.conftest import run_agent


def write(tmp_path, text):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_file_then_env_then_flags(tmp_path):
    path = write(tmp_path, '[agent]\ninterval = 30\nclient_id = "from-file"\nlog_format = "json"\n')
    cfg = config.load(path, environ={})
    assert (cfg.agent.interval, cfg.agent.client_id, cfg.agent.log_format) == (30.0, "from-file", "json")
    cfg = config.load(path, environ={"EDGEMON_INTERVAL": "20", "EDGEMON_CLIENT_ID": "from-env"})
    assert (cfg.agent.interval, cfg.agent.client_id) == (20.0, "from-env")
    cfg = config.load(
        path, environ={"EDGEMON_INTERVAL": "20"}, overrides={"agent": {"interval": 5.0, "client_id": None}}
    )
    assert (cfg.agent.interval, cfg.agent.client_id) == (5.0, "from-file")


def test_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, '[agent]\ninterval = 10\nclient_id = "unterminated\n')
    with pytest.raises(ConfigError, match=r"agent\.toml: .*line 3"):
        config.load(path, environ={})


def test_unknown_key_is_an_error_naming_file_and_line(tmp_path):
    path = write(tmp_path, "[agent]\ninterval = 10\n\nintervall = 5\n")
    with pytest.raises(ConfigError, match=r"agent\.toml:4: unknown key agent\.intervall"):
        config.load(path, environ={})


def test_unknown_section_is_an_error(tmp_path):
    path = write(tmp_path, "[agent]\n[agnet]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"agent\.toml:2: unknown section \[agnet\]"):
        config.load(path, environ={})


def test_wrong_type_names_key_and_line(tmp_path):
    path = write(tmp_path, '[agent]\nclient_id = "a"\ninterval = "often"\n')
    with pytest.raises(ConfigError, match=r"agent\.toml:3: agent\.interval: expected a number"):
        config.load(path, environ={})


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match="EDGEMON_INTERVAL"):
        config.load(None, environ={"EDGEMON_INTERVAL": "soon"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[agent]\ntimeout = 20\ninterval = 10\n", r":2: agent\.timeout: must be > 0 and below agent\.interval"),
        ("[agent]\ninterval = 0\n", r":2: agent\.interval: must be between 0\.1 and 86400, got 0\.0"),
        ("[agent]\ninterval = 1e-9\n", r":2: agent\.interval: must be between 0\.1 and 86400"),
        ("[agent]\ninterval = inf\n", r":2: agent\.interval: expected a finite number, got inf"),
        ("[agent]\ninterval = 1e300\n", r":2: agent\.interval: must be between 0\.1 and 86400"),
        ("[agent]\nbuffer_max_mb = nan\n", r":2: agent\.buffer_max_mb: expected a finite number"),
        ("[agent]\nbuffer_max_mb = 0\n", r":2: agent\.buffer_max_mb: must be between 1 and"),
        ("[agent]\nbuffer_max_mb = -5\n", r":2: agent\.buffer_max_mb: must be between 1 and"),
        ("[mqtt]\ndrain_rate = nan\n", r":2: mqtt\.drain_rate: expected a finite number"),
        ("[mqtt]\ndrain_rate = inf\n", r":2: mqtt\.drain_rate: expected a finite number"),
        ("[mqtt]\nconnect_timeout = nan\n", r":2: mqtt\.connect_timeout: expected a finite number"),
        ("[mqtt]\nkeep_alive = 70000\n", r":2: mqtt\.keep_alive: must be between 0 and 65535"),
        ("[mqtt]\nmax_reconnect_delay = inf\n", r":2: mqtt\.max_reconnect_delay: expected a finite number"),
        ("[mqtt]\nmax_inflight = 0\n", r":2: mqtt\.max_inflight: must be between 1 and 65535"),
        ('[agent]\nlog_format = "xml"\n', r":2: agent\.log_format: 'xml' is not one of text, json"),
        ('[agent]\nclient_id = "a/b"\n', r":2: agent\.client_id"),
    ],
)
def test_invalid_values(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        config.load(write(tmp_path, text), environ={})


def test_plugin_section_unknown_key_and_type(tmp_path):
    path = write(tmp_path, "[agent]\n\n[plugins.cpu]\npercpu = false\nperccpu = true\n")
    cfg = config.load(path, environ={})
    assert config.plugin_settings(config.load(write(tmp_path, "[plugins.cpu]\npercpu = false\n"), environ={}),
                                  "cpu", {"percpu": True}) == {
        "enabled": True, "interval": 0.0, "timeout": 0.0, "percpu": False,
    }  # fmt: skip
    with pytest.raises(ConfigError, match=r"agent\.toml:5: unknown key plugins\.cpu\.perccpu"):
        config.plugin_settings(cfg, "cpu", {"percpu": True})
    cfg = config.load(write(tmp_path, '[plugins.cpu]\npercpu = "no way"\n'), environ={})
    with pytest.raises(ConfigError, match=r":2: plugins\.cpu\.percpu: expected true or false"):
        config.plugin_settings(cfg, "cpu", {"percpu": True})
    for text, message in (
        ("[plugins.cpu]\ninterval = nan\n", r":2: plugins\.cpu\.interval: expected a finite number"),
        ("[plugins.cpu]\ntimeout = 1e9\n", r":2: plugins\.cpu\.timeout: must be between 0 and 86400"),
        ("[plugins.cpu]\nfreq_every = inf\n", r":2: plugins\.cpu\.freq_every: expected a finite number"),
    ):
        cfg = config.load(write(tmp_path, text), environ={})
        with pytest.raises(ConfigError, match=message):
            config.plugin_settings(cfg, "cpu", {"freq_every": 60.0})


def test_plugin_validate_hook_message_is_reported(tmp_path):
    def validate(settings):
        raise ValueError("freq_every must be >= 0 seconds")

    cfg = config.load(write(tmp_path, "[plugins.cpu]\nfreq_every = -1.0\n"), environ={})
    with pytest.raises(ConfigError, match=r":1: plugins\.cpu: freq_every must be >= 0"):
        config.plugin_settings(cfg, "cpu", {"freq_every": 60.0}, validate)


@given(st.text(max_size=30))
def test_arbitrary_text_never_crashes_the_loader(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "agent.toml"
    path.write_text(text)
    error = None
    try:
        cfg = config.load(path, environ={})
    except ConfigError as exc:
        error = str(exc)
    if error is not None:
        assert str(path) in error
    else:
        assert cfg.agent.interval > 0


@pytest.mark.slow  # a process of its own: end to end
def test_check_config_cli(tmp_path, agent_env):
    good = write(tmp_path, '[agent]\ninterval = 15\n\n[plugins.disk]\nexclude_mounts = ["/snap/*"]\n')
    result = run_agent("check-config", "--config", str(good), env=agent_env)
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["agent"]["interval"] == 15.0
    assert effective["plugins"]["disk"]["exclude_mounts"] == ["/snap/*"]
    assert effective["device_id"] == "cli-device"

    bad = write(tmp_path, "[agent]\ninterval = 15\n\n[plugins.disk]\nexclude_mount = 1\n")
    result = run_agent("check-config", "--config", str(bad), env=agent_env)
    assert result.returncode == 2
    assert f"{bad}:5: unknown key plugins.disk.exclude_mount" in result.stderr

    typo = write(tmp_path, "[plugins.dsik]\ninterval = 60\n")
    result = run_agent("once", "--config", str(typo), env=agent_env)
    assert result.returncode == 2
    assert "[plugins.dsik] names no installed plugin" in result.stderr


def test_default_timeout_follows_a_short_interval():
    assert config.load(None, environ={}).agent.timeout == 2.0
    assert config.load(None, environ={"EDGEMON_INTERVAL": "1"}).agent.timeout == 0.5
