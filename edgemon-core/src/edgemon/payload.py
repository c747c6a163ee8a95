"""The payload: merging collector sub-trees into one tree, and measuring it.

The envelope, its JSON Schema and its limits are the protocol's (:mod:`edgemon_protocol.payload`),
re-exported here for the agent's modules.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgemon_protocol.payload import (
    MAX_BYTES,
    SCHEMA_VERSION,
    build,
    dumps,
    load_schema,
    utc_timestamp,
    validation_errors,
)

__all__ = [
    "MAX_BYTES",
    "SCHEMA_VERSION",
    "Clash",
    "build",
    "dumps",
    "load_schema",
    "merge",
    "subtree_sizes",
    "utc_timestamp",
    "validation_errors",
]


@dataclass(frozen=True)
class Clash:
    """Two plugins wrote the same path of the metrics tree; the first one kept it."""

    path: str
    kept: str
    dropped: str


def merge(parts: Iterable[tuple[str, Mapping[str, Any]]], copy: bool = True) -> tuple[dict[str, Any], list[Clash]]:
    """Deep-merge ``(owner, sub-tree)`` pairs into one tree.

    Sub-trees may share inner objects (two plugins can both add under
    ``gpu``), but never a leaf, and never a leaf where the other has an
    object. On such a clash the value already there is kept, the newcomer's is
    left out, and a :class:`Clash` is returned so the core can count and log
    it: nothing is silently overwritten.

    Args:
        parts: ``(owner, sub-tree)`` pairs, in the order of precedence.
        copy: copy the sub-trees (``False`` when they are fresh dicts the caller gives away:
            the agent's checked copies, which saves a copy per cycle).

    Returns:
        The merged tree (with ``copy``, new dicts: the inputs are not modified) and the clashes.
    """
    merged: dict[str, Any] = {}
    owners: dict[str, str] = {}
    clashes: list[Clash] = []

    def walk(dst: dict[str, Any], src: Mapping[str, Any], prefix: str, owner: str) -> None:
        for key, value in src.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in dst:
                dst[key] = _copy(value) if copy else value
                owners[path] = owner
            elif isinstance(dst[key], dict) and isinstance(value, Mapping):
                owners.setdefault(path, owner)
                walk(dst[key], value, path, owner)
            else:
                clashes.append(Clash(path, _owner_of(path), owner))

    def _owner_of(path: str) -> str:
        while path not in owners and "." in path:
            path = path.rsplit(".", 1)[0]
        return owners.get(path, "?")

    for owner, tree in parts:
        walk(merged, tree, "", owner)
    return merged, clashes


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    return value


def subtree_sizes(payload: Mapping[str, Any]) -> list[tuple[str, int]]:
    """Serialised size of each top-level metrics sub-tree, largest first."""
    metrics = payload.get("metrics", {})
    sizes = [(name, len(json.dumps(tree, separators=(",", ":")))) for name, tree in metrics.items()]
    return sorted(sizes, key=lambda item: -item[1])
