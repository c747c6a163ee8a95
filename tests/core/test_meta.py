"""Meta-tests, as datasette has: every hook is tested and documented."""

from __future__ import annotations

import ast
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


def test_every_hook_has_a_test_named_after_it_that_implements_it():
    """``test_hook_<name>`` exists and its body implements the hook (datasette's convention)."""
    tests = {}
    for path in (REPO / "tests").rglob("test_*.py"):
        module = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(module):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_hook_"):
                tests[node.name] = node
    for name in HOOKS:
        test = tests.get(f"test_hook_{name}")
        assert test is not None, f"no test_hook_{name}"
        implemented = [n for n in ast.walk(test) if isinstance(n, ast.FunctionDef) and n.name == name]
        assert implemented, f"test_hook_{name} does not implement {name}"
        asserts = [n for n in ast.walk(test) if isinstance(n, (ast.Assert, ast.With))]
        assert asserts, f"test_hook_{name} asserts nothing"
