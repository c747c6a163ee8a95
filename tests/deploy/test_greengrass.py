"""deploy/greengrass/: the component recipe is valid and maps its configuration onto real agent settings."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import REPO

HERE = REPO / "deploy" / "greengrass"
KEEP_CASE = ("defaultconfiguration", "setenv")
"""Below these, keys are values (configuration names, environment variables): their case matters."""


def lowered(node: Any, keep: bool = False) -> Any:
    """The recipe with its (case-insensitive) keys lowercased, as Greengrass reads them."""
    if isinstance(node, dict):
        return {(k if keep else k.lower()): lowered(v, keep or k.lower() in KEEP_CASE) for k, v in node.items()}
    if isinstance(node, list):
        return [lowered(v, keep) for v in node]
    return node


def recipe() -> dict[str, Any]:
    doc: dict[str, Any] = lowered(yaml.safe_load((HERE / "com.edgemon.Agent.yaml").read_text(encoding="utf-8")))
    return doc


def schema() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((HERE / "recipe.schema.json").read_text(encoding="utf-8"))
    return doc


def test_the_recipe_validates_against_the_recipe_schema():
    jsonschema.Draft7Validator.check_schema(schema())
    jsonschema.validate(recipe(), schema())


@pytest.mark.parametrize(
    "broken",
    [
        {"recipeformatversion": "2021-01-01"},
        {"componentname": "com edgemon"},
        {"manifests": []},
        {"surprise": 1},
    ],
)
def test_the_schema_rejects_what_greengrass_would(broken):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**recipe(), **broken}, schema())


def agent_variables() -> set[str]:
    """Every EDGEMON_* variable the agent's settings read (the generated reference's "Agent:" sections)."""
    sections = (REPO / "docs" / "reference.md").read_text(encoding="utf-8").split("\n## ")
    agent = "\n".join(s for s in sections if s.startswith("Agent:"))
    return set(re.findall(r"`(EDGEMON_[A-Z0-9_]+)`", agent))


def test_every_setenv_is_an_agent_setting_and_every_configuration_key_is_used():
    doc = recipe()
    known = agent_variables()
    config = doc["componentconfiguration"]["defaultconfiguration"]
    for manifest in doc["manifests"]:
        run = manifest["lifecycle"]["run"]
        assert run["script"].startswith("exec "), "the agent replaces the shell: Greengrass signals it directly"
        for name, value in run["setenv"].items():
            assert name in known, f"{name} is not a setting of the agent"
            for used in re.findall(r"\{configuration:/(\w+)\}", str(value)):
                assert used in config, used
        used_keys = set(re.findall(r"\{configuration:/(\w+)\}", json.dumps(run["setenv"])))
        assert used_keys == set(config), "no configuration key without an effect"


def test_the_artifacts_are_bundles_the_install_step_unpacks_without_a_service():
    version = next(
        line.split('"')[1]
        for line in (REPO / "edgemon-core" / "pyproject.toml").read_text(encoding="utf-8").splitlines()
        if line.startswith("version = ")
    )
    doc = recipe()
    assert doc["componentversion"] == version
    arch = {"aarch64": "aarch64", "amd64": "x86_64"}
    for manifest in doc["manifests"]:
        bundle = f"edgemon-agent-{version}-py310-{arch[manifest['platform']['architecture']]}"
        (artifact,) = manifest["artifacts"]
        assert artifact["uri"].endswith(f"/{bundle}.tar.gz")
        install = manifest["lifecycle"]["install"]["script"]
        assert f"{bundle}/install.sh --prefix {{work:path}}/venv --no-service" in install
