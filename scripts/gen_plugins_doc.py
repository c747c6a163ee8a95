"""Write docs/plugins.md: the plugin guide, its hook reference generated from edgemon.hookspecs.

Run: ``.venv/bin/python scripts/gen_plugins_doc.py``; tests/core/test_plugin_kit.py fails when the
file is out of date.
"""

from __future__ import annotations

import inspect
import sys
import textwrap
from pathlib import Path

from edgemon import hookspecs, testing
from edgemon_protocol import meta

OUT = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"

GUIDE = """# Writing an edgemon plugin

A plugin is a Python distribution with an entry point in the group `edgemon`; the agent discovers
it at start-up (`edgemon-agent plugins` lists what it found, `edgemon-agent plugins test NAME` runs
one plugin's collectors once and checks their output). A plugin that raises, hangs or returns
something malformed loses its own data for that cycle, never the agent's or another plugin's.

Start from a working one:

    edgemon-agent new-plugin room-sensors      # writes edgemon-room-sensors/
    cd edgemon-room-sensors
    pip install -e '.[test]'
    pytest                                     # passes as generated

The generated `pyproject.toml` pins `edgemon-core~=<this release line>`: a plugin is built against
one hook contract, and the pin keeps a same-named package from another index from satisfying it.
**edgemon is not published on PyPI yet**: install edgemon-core from the offline bundle
(`make bundle`, then `wheels/` in the tarball: `pip install --no-index --find-links wheels
edgemon-core`) or from a checkout (`pip install ./edgemon-protocol ./edgemon-core`).

## What a collector returns

One sub-tree under the plugin's own top-level key(s): nested dicts of numbers, booleans and short
strings. Keys are `[a-z0-9_]` words (`safe_key()` makes one from a device or interface name); the
server stores each leaf under its dash-joined path (`{"room": {"t": 21.5}}` -> `room-t`). A key
that breaks the rules is dropped with a logged reason (plugin, key, reason); the rest of the
payload is kept. Declare what the values mean with `metrics={pattern: Metric(unit, kind,
description, headline=...)}` when registering; units are one of: UNITS.

## Testing a plugin

edgemon-core ships a pytest plugin (entry point `pytest11`), so these fixtures exist wherever
edgemon-core and pytest are installed:

FIXTURES

## Hook reference

Implement any subset of these hooks (decorate with `edgemon.hookimpl`), with any subset of each
hook's arguments.

"""


def render() -> str:
    """The text of docs/plugins.md."""
    fixtures = []
    for fixture in (testing.edgemon_plugin, testing.edgemon_clock):
        doc = inspect.getdoc(getattr(fixture, "__wrapped__", fixture)) or ""
        fixtures.append(f"- `{fixture.__name__}`: {doc}")
    methods = []
    for name in ("collect", "payload", "metadata", "alerts", "close"):
        doc = (inspect.getdoc(getattr(testing.PluginHarness, name)) or "").splitlines()[0]
        methods.append(f"  - `.{name}()`: {doc}")
    example = (inspect.getdoc(testing) or "").split("::", 1)[1].split("\n\nThe plugin runs", 1)[0].strip("\n")
    text = GUIDE.replace("UNITS", ", ".join(f"`{u}`" for u in meta.UNITS))
    block = "\n\n```python\n" + textwrap.dedent(example) + "\n```"
    text = text.replace("FIXTURES", "\n".join(fixtures + methods) + block)
    hooks = [(n, f) for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("edgemon_")]
    for name, fn in sorted(hooks, key=lambda nf: inspect.getsourcelines(nf[1])[1]):  # the order of the contract
        signature = str(inspect.signature(fn)).replace("'", "")
        text += f"### `{name}{signature}`\n\n{inspect.getdoc(fn)}\n\n"
    return text.rstrip() + "\n"


def main() -> int:
    """Write the file (``--check``: exit 1 when it differs)."""
    if "--check" in sys.argv:
        return 0 if OUT.read_text(encoding="utf-8") == render() else 1
    OUT.write_text(render(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
