"""Meta-tests, as datasette has: every hook is tested and documented."""

from __future__ import annotations

import inspect
import re

from edgemon import hookspecs
from tests.conftest import REPO

HOOKS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("edgemon_"))


def test_there_are_hooks():
    assert "edgemon_register_collectors" in HOOKS
    assert len(HOOKS) == 6


def test_every_hook_is_documented_in_design():
    design = (REPO / "DESIGN.md").read_text().replace("\\|", "|")  # unescape table pipes
    for name in HOOKS:
        signature = f"{name}{inspect.signature(getattr(hookspecs, name))}"
        signature = re.sub(r"'", "", signature)
        assert name in design, f"{name} missing from DESIGN.md"
        assert signature in design, f"DESIGN.md must show the signature {signature}"


def test_every_hook_has_a_docstring_that_says_when_it_is_called():
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "Called" in doc, name


def test_every_hook_is_exercised_by_a_test():
    sources = "\n".join(p.read_text() for p in (REPO / "tests").rglob("test_*.py") if p.name != "test_meta.py")
    sources += "\n".join(p.read_text() for p in (REPO / "tests" / "plugins").rglob("*.py"))
    for name in HOOKS:
        assert f"def {name}(" in sources, f"no test plugin implements {name}"
