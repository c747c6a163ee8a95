"""The payload: merging collector sub-trees, building the envelope, validating it.

The JSON Schema lives in ``edgemon/schema/payload.schema.json`` and is shared
with the server (``edgemon.payload.load_schema()``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from importlib.resources import files
from typing import Any

SCHEMA_VERSION = 1
MAX_BYTES = 128 * 1024
"""Largest serialised payload: AWS IoT Core's message size limit (the server allows 256 KB)."""


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


def utc_timestamp(epoch: float) -> str:
    """Format seconds since the epoch as RFC 3339 UTC with milliseconds and ``Z``."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def build(
    device_id: str,
    seq: int,
    epoch: float,
    interval: float,
    metrics: Mapping[str, Any],
    alerts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Return the payload envelope (see ``DESIGN.md``, *Payload*)."""
    return {
        "schema": SCHEMA_VERSION,
        "device_id": device_id,
        "ts": utc_timestamp(epoch),
        "seq": seq,
        "interval": interval,
        "metrics": dict(metrics),
        "alerts": list(alerts or []),
    }


def dumps(payload: Mapping[str, Any]) -> str:
    """Serialise compactly; NaN and infinities are refused (``ValueError``), as JSON has none."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


def subtree_sizes(payload: Mapping[str, Any]) -> list[tuple[str, int]]:
    """Serialised size of each top-level metrics sub-tree, largest first."""
    metrics = payload.get("metrics", {})
    sizes = [(name, len(json.dumps(tree, separators=(",", ":")))) for name, tree in metrics.items()]
    return sorted(sizes, key=lambda item: -item[1])


@cache
def load_schema() -> dict[str, Any]:
    """Return the payload JSON Schema shipped with ``edgemon-core``."""
    text = files("edgemon").joinpath("schema/payload.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validation_errors(payload: Any) -> list[str]:
    """Validate against the schema; return readable errors (empty when valid).

    Needs ``jsonschema`` (the ``validate`` extra); imported here only, so the
    agent's collection loop never pays for it.
    """
    import jsonschema  # noqa: PLC0415 - optional dependency, kept off the hot path

    validator = jsonschema.Draft202012Validator(load_schema())
    return [
        f"{'/'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(payload), key=lambda e: list(map(str, e.absolute_path)))
    ]
