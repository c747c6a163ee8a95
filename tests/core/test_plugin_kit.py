"""The plugin kit: `edgemon-agent new-plugin` and the pytest fixtures edgemon-core ships (edgemon.testing)."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from edgemon import Metric, RegisterCollector, hookimpl
from edgemon.cli import main


@pytest.mark.slow  # runs pytest on the generated project in a process of its own
def test_new_plugin_writes_a_distribution_whose_own_tests_pass(tmp_path, capsys):
    assert main(["new-plugin", "room-sensors", "--dir", str(tmp_path)]) == 0
    root = tmp_path / "edgemon-room-sensors"
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    assert 'room-sensors = "edgemon_room_sensors"' in pyproject, "the entry point the agent discovers"
    assert '"edgemon-core~=0.1.0"' in pyproject, "pinned to this release line"
    for rel in ("README.md", "src/edgemon_room_sensors/__init__.py", "tests/test_room_sensors.py"):
        assert (root / rel).is_file(), rel
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout


@pytest.mark.parametrize("name", ["Room", "room_sensors", "x-", "9lives", "a" * 41])
def test_new_plugin_refuses_a_bad_name(tmp_path, capsys, name):
    assert main(["new-plugin", name, "--dir", str(tmp_path)]) == 2
    assert "lowercase words" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_new_plugin_never_overwrites(tmp_path, capsys):
    (tmp_path / "edgemon-fan").mkdir()
    assert main(["new-plugin", "fan", "--dir", str(tmp_path)]) == 2
    assert "exists" in capsys.readouterr().err


def plugin(collect) -> types.SimpleNamespace:
    @hookimpl
    def edgemon_register_collectors(register: RegisterCollector) -> None:
        register("probe", collect, metrics={"probe-t": Metric("°C")})

    return types.SimpleNamespace(edgemon_register_collectors=edgemon_register_collectors)


def test_the_fixture_fails_on_what_the_agent_would_drop(edgemon_plugin):
    good = edgemon_plugin(plugin(lambda: {"probe": {"t": 21.5}}), "probe")
    assert good.collect() == {"probe": {"t": 21.5}}
    assert good.metadata()["probe-t"].unit == "°C"
    assert good.payload()["metrics"]["probe"] == {"t": 21.5}
    bad = edgemon_plugin(plugin(lambda: {"probe": {"t": float("nan"), "bad key": 1}}), "probe-bad")
    with pytest.raises(AssertionError, match="probe") as caught:
        bad.collect()
    assert "dropped" in str(caught.value)


def test_the_fixture_reports_a_plugin_that_does_not_load(edgemon_plugin):
    class Broken:
        @hookimpl
        def edgemon_startup(self) -> None:
            raise OSError("no bus")

    with pytest.raises(AssertionError, match="did not load"):
        edgemon_plugin(Broken(), "broken")


def test_the_fake_clock_moves_only_when_told(edgemon_clock):
    start = edgemon_clock()
    assert edgemon_clock() == start
    edgemon_clock.advance(90)
    assert edgemon_clock() == start + 90


def test_docs_plugins_md_is_generated_from_the_hookspecs():
    from edgemon import hookspecs
    from tests.conftest import REPO, load_script

    module = load_script("gen_plugins_doc")
    written = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    assert written == module.render(), "out of date: run `python scripts/gen_plugins_doc.py`"
    for name in dir(hookspecs):
        if name.startswith("edgemon_"):
            assert f"### `{name}(" in written
