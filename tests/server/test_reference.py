"""docs/reference.md is generated from the code, and every configuration key is described."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import REPO, load_script


def generator():
    return load_script("gen_reference")


def test_the_reference_is_up_to_date():
    written = (REPO / "docs" / "reference.md").read_text(encoding="utf-8")
    assert written == generator().render(), "out of date: run `python scripts/gen_reference.py`"


def test_every_config_key_has_a_row():
    from edgemon import config as agent_config
    from edgemon_server import config as server_config

    written = (REPO / "docs" / "reference.md").read_text(encoding="utf-8")
    for cls in (agent_config.AgentSettings, agent_config.MqttSettings, server_config.ServerSettings):
        for field in dataclasses.fields(cls):
            assert f"| `{field.name}` |" in written, f"{cls.__name__}.{field.name} is not in docs/reference.md"


def test_a_key_without_a_description_fails_the_generator():
    @dataclasses.dataclass(frozen=True)
    class Settings:
        """Settings.

        Attributes:
            documented: has a line.
        """

        documented: int = 1
        forgotten: int = 2

    with pytest.raises(SystemExit, match=r"demo\.forgotten has no description"):
        generator().settings_table(Settings, "demo", "EDGEMON_", {})
