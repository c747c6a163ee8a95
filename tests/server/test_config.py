"""Server settings: file, then variables, then flags; errors name the file and line."""

from __future__ import annotations

import pytest

from edgemon.config import ConfigError
from edgemon_server.config import api_token, load, split_bind


def test_file_then_environment_then_flags(tmp_path):
    conf = tmp_path / "server.toml"
    conf.write_text('[server]\ndatabase_url = "sqlite:///a.db"\nshared_group = "g1"\n\n[mqtt]\nendpoint = "b"\n')
    config = load(conf, environ={"EDGEMON_SHARED_GROUP": "g2", "EDGEMON_MQTT_PORT": "18883"})
    assert config.server.database_url == "sqlite:///a.db"
    assert config.server.shared_group == "g2"
    assert (config.mqtt.endpoint, config.mqtt.port) == ("b", 18883)
    flags = load(conf, environ={}, overrides={"server": {"shared_group": "g3", "client_id": None}, "mqtt": {}})
    assert flags.server.shared_group == "g3"


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ('[server]\n\nbatch_rows = "many"\n', ":3:", "server.batch_rows: expected an integer"),
        ("[server]\ncolour = 1\n", ":2:", "unknown key server.colour"),
        ('[server]\nhttp_bind = "nowhere"\n', ":2:", "is not host:port"),
        ('[server]\nshared_group = "a/b"\n', ":2:", "server.shared_group"),
        ('[server]\nrate_limit = "lots"\n', ":2:", "server.rate_limit"),
        ("[servr]\n", ":1:", "unknown section [servr]"),
        ("[mqtt]\nport = 70000\n", ":2:", "mqtt.port"),
    ],
)
def test_errors_name_the_line(tmp_path, text, where, message):
    conf = tmp_path / "server.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(conf, environ={})
    assert f"{conf}{where}" in str(info.value)
    assert message in str(info.value)


def test_token_file_and_bind(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-s3cret-s3cret\n")
    config = load(None, environ={"EDGEMON_API_TOKEN_FILE": str(token)})
    assert api_token(config.server) == "s3cret-s3cret-s3cret"
    token.write_text("x\n")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        api_token(config.server)
    with pytest.raises(ConfigError, match=r"server\.api_token: a token must be at least 16"):
        api_token(load(None, environ={"EDGEMON_API_TOKEN": " "}).server)
    token.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        api_token(config.server)
    assert split_bind("127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert split_bind("[::1]:9") == ("::1", 9)


@pytest.mark.slow  # a process of its own: end to end
def test_bad_config_file_makes_the_cli_exit_2_naming_the_line(tmp_path):
    import subprocess

    from tests.server.conftest import SERVER_BIN

    conf = tmp_path / "server.toml"
    conf.write_text("[server]\nmax_depth = 0\n")
    out = subprocess.run([str(SERVER_BIN), "db", "current", "--config", str(conf)], capture_output=True, text=True)
    assert out.returncode == 2
    assert f"{conf}:2: server.max_depth: must be >= 1" in out.stderr
