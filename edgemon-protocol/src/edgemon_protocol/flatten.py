"""Nested metrics <-> flat, dash-separated keys.

``{"disk": {"sda": {"read_bytes": 1}}}`` becomes ``{"disk-sda-read_bytes": 1}``.

Rules (DESIGN.md, "Flattening"):

- Keys are joined with ``-``. Payload keys may hold only ``[A-Za-z0-9_]``, so
  for a valid payload the flat key identifies exactly one path and
  :func:`unflatten` is the inverse of :func:`flatten`.
- Objects are walked; anything else is a leaf and is kept as it is here (what
  becomes a sample, an attribute or nothing is :mod:`edgemon_server.validate`'s
  business).
- An empty object holds no leaf and leaves no trace: ``unflatten(flatten(t))``
  equals ``t`` with empty objects pruned.
- Two paths that would give the same flat key (possible only with keys that
  contain ``-``, which validation refuses) raise :class:`CollisionError`: never a
  silent overwrite.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SEP = "-"


class CollisionError(ValueError):
    """Two leaves would get the same flat key."""


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten nested mappings into ``{"a-b-c": leaf}``.

    Raises:
        CollisionError: when two leaves map to one key.
    """
    out: dict[str, Any] = {}
    _walk(tree, "", out)
    return out


def _walk(node: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in node.items():
        flat = f"{prefix}{SEP}{key}" if prefix else key
        if isinstance(value, Mapping):
            _walk(value, flat, out)
        elif flat in out:
            raise CollisionError(f"two leaves map to the key {flat!r}")
        else:
            out[flat] = value


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Re-nest flat keys (the inverse of :func:`flatten` for keys without ``-``).

    Raises:
        CollisionError: when a key is both a leaf and a branch (``a`` and ``a-b``).
    """
    root: dict[str, Any] = {}
    for key, value in flat.items():
        *branch, leaf = key.split(SEP)
        node = root
        for part in branch:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise CollisionError(f"{key!r}: {part!r} is a leaf and a branch")
            node = child
        if leaf in node:
            raise CollisionError(f"{key!r} is a leaf and a branch")
        node[leaf] = value
    return root
