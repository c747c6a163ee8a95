"""Settings files shared by agent and server: TOML, then ``EDGEMON_*`` variables, then flags.

The file is read once into one frozen dataclass per section. Unknown sections and keys are errors,
and every error names the file, the line and the key, so that an operator can fix a fleet's
configuration from the log line alone.
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Debian 11 / Ubuntu 22.04 / JetPack 6: the same parser, from PyPI
    import tomli as tomllib


class ConfigError(ValueError):
    """A configuration problem, with the file and line where it is known."""


def load_sections(
    path: str | os.PathLike[str] | None,
    env: Mapping[str, str],
    overrides: Mapping[str, Mapping[str, Any]] | None,
    sections: Mapping[str, type[Any]],
    env_maps: Mapping[str, Mapping[str, str]],
    extra: tuple[str, ...] = (),
    removed: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], Where]:
    """Read a TOML file into one dataclass per section, then apply variables and flags.

    Args:
        path: the TOML file, or ``None`` for defaults only.
        env: the environment.
        overrides: ``{section: {key: value}}`` from CLI flags; ``None`` values are ignored.
        sections: section name -> dataclass with defaults.
        env_maps: section name -> {variable name: key}.
        extra: other sections the caller reads itself from the returned raw table.
        removed: ``{"section.key": why}`` of keys that once existed: refused with the reason.

    Returns:
        The settings per section, the raw TOML table, and a :class:`Where` for error messages.

    Raises:
        ConfigError: naming the file, line and key.
    """
    raw: dict[str, Any] = {}
    text = ""
    source = None
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from exc
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    where = Where(source, text)
    for section in sorted(set(raw) - {*sections, *extra}):
        raise ConfigError(f"{where.at(section, None)}unknown section [{section}]")
    parsed: dict[str, Any] = {}
    for section, cls in sections.items():
        values = raw.get(section, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{where.at(section, None)}[{section}] must be a table")
        known = {f.name for f in fields(cls)}
        for key in values:
            if f"{section}.{key}" in (removed or {}):
                raise ConfigError(f"{where.at(section, key)}{section}.{key}: {(removed or {})[f'{section}.{key}']}")
            if key not in known:
                raise ConfigError(
                    f"{where.at(section, key)}unknown key {section}.{key} (known: {', '.join(sorted(known))})"
                )
        settings = _apply(cls(), section, values, functools.partial(where.at, section))
        env_map = env_maps[section]
        env_values = {key: env[var] for var, key in env_map.items() if var in env}
        names = {key: var for var, key in env_map.items()}
        settings = _apply(settings, section, env_values, lambda key, n=names: f"variable {n[key]}: ")
        flag_values = {k: v for k, v in (overrides or {}).get(section, {}).items() if v is not None}
        settings = _apply(settings, section, flag_values, lambda key: f"option --{key.replace('_', '-')}: ")
        parsed[section] = settings
    return parsed, raw, where


def _apply(base: Any, section: str, values: Mapping[str, Any], prefix: Any) -> Any:
    changes: dict[str, Any] = {}
    for f in fields(base):
        if f.name not in values:
            continue
        try:
            changes[f.name] = coerce(values[f.name], getattr(base, f.name))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{prefix(f.name)}{section}.{f.name}: {exc}") from exc
    return replace(base, **changes)


def coerce(value: Any, default: Any) -> Any:
    """Convert ``value`` (from TOML or a string from the environment) to ``default``'s type."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
        raise TypeError(f"expected true or false, got {value!r}")
    if isinstance(default, (float, int)):
        if isinstance(value, bool):
            raise TypeError(f"expected a number, got {value!r}")
        try:
            number = float(value) if isinstance(default, float) else int(value)
        except (TypeError, ValueError, OverflowError):
            kind = "a number" if isinstance(default, float) else "an integer"
            raise TypeError(f"expected {kind}, got {value!r}") from None
        if not math.isfinite(number):
            raise TypeError(f"expected a finite number, got {value!r}")
        return number
    if isinstance(default, str):
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value
    if isinstance(default, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"expected a list of strings, got {value!r}")
        return list(value)
    return value


def check_ranges(section: str, settings: Any, ranges: Mapping[str, tuple[float, float]], where: Any) -> None:
    """Every number of ``settings`` named in ``ranges`` is finite and within its range."""
    for key, (low, high) in ranges.items():
        value = getattr(settings, key)
        if not (math.isfinite(value) and low <= value <= high):
            raise ConfigError(f"{where(key)}{section}.{key}: must be between {low:g} and {high:g}, got {value!r}")


class Where:
    """Finds the line of ``[section]`` / ``key =`` in the file text, for error messages."""

    def __init__(self, source: str | None, text: str) -> None:
        self.source = source
        self.text = text
        self.lines = text.splitlines()

    def at(self, section: str, key: str | None) -> str:
        """``"<file>:<line>: "`` of the key (or section header), ``""`` without a file."""
        if self.source is None:
            return ""
        header = re.compile(r"^\s*\[\s*" + re.escape(section).replace(r"\.", r"\s*\.\s*") + r"\s*\]")
        any_header = re.compile(r"^\s*\[")
        line_no = None
        inside = False
        for i, line in enumerate(self.lines, start=1):
            if header.match(line):
                inside = True
                if key is None:
                    line_no = i
                    break
                continue
            if inside and any_header.match(line):
                inside = False
            if inside and key is not None and re.match(r"^\s*" + re.escape(key) + r"\s*=", line):
                line_no = i
                break
        return f"{self.source}:{line_no}: " if line_no else f"{self.source}: "

    def at_table(self, array: str, index: int, key: str | None) -> str:
        """``"<file>:<line>: "`` of ``key`` in the ``index``-th ``[[array]]`` table (or of its header)."""
        if self.source is None:
            return ""
        header = re.compile(r"^\s*\[\[\s*" + re.escape(array).replace(r"\.", r"\s*\.\s*") + r"\s*\]\]")
        seen = -1
        inside = False
        for i, line in enumerate(self.lines, start=1):
            if header.match(line):
                seen += 1
                inside = seen == index
                if inside and key is None:
                    return f"{self.source}:{i}: "
                continue
            if inside and re.match(r"^\s*\[", line):
                break
            if inside and key is not None and re.match(r"^\s*" + re.escape(key) + r"\s*=", line):
                return f"{self.source}:{i}: "
        return f"{self.source}: "
