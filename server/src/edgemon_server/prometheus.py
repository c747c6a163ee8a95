"""``GET /metrics``: every device's latest values in the Prometheus text format (version 0.0.4).

So Prometheus can scrape (or federate from) edgemon and Grafana can chart it. Each flat key becomes
a metric family named after the key, with the device as a label; where the device's metadata
declares the key by a pattern with ``*`` (one level: an instance such as a disk or a GPU), that
level becomes a label named after the key's first segment::

    disk-usage-sda-percent  (pattern disk-usage-*-percent)  ->  disk_usage_percent{device="press-17",disk="sda"}
    cpu-percent                                              ->  cpu_percent{device="press-17"}

``# TYPE`` is the declared kind (gauge or counter; untyped for undescribed keys), ``# HELP`` the
description and unit. ``edgemon_device_up`` (1 online, 0 not) and ``edgemon_device_last_seen_seconds``
come with every device, so stale values of an offline device can be told apart. Large fleets:
``device=GLOB`` and ``limit`` (devices, 1,000 by default, at most 10,000) with ``after=ID`` to page;
a page that stops short says so in ``edgemon_exporter_truncated`` and a comment with the next ``after``.
"""

from __future__ import annotations

import fnmatch
import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Blueprint, Response
from sqlalchemy import select

from edgemon_protocol.meta import Metric, compile_pattern
from edgemon_server import queries as q
from edgemon_server.lookup import conn, online
from edgemon_server.params import ApiError, int_arg, text_arg

prometheus = Blueprint("prometheus", __name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NAME_RE = re.compile(r"[^a-zA-Z0-9_]")
MAX_DEVICES = 10_000


class Family:
    """The samples of one metric name, with its type and help."""

    def __init__(self, kind: str, help_text: str) -> None:
        self.kind = kind
        self.help = help_text
        self.samples: list[tuple[dict[str, str], float]] = []


def metric_name(text: str) -> str:
    """A valid Prometheus metric or label name (``[a-zA-Z_][a-zA-Z0-9_]*``)."""
    name = NAME_RE.sub("_", text)
    return "_" + name if not name or name[0].isdigit() else name


def split(key: str, pattern: str | None) -> tuple[str, dict[str, str]]:
    """A flat key as (metric name, labels) by the pattern that declared it (see the module docstring)."""
    parts = key.split("-")
    glob = pattern.split("-") if pattern else []
    if "**" in glob or len(glob) != len(parts) or "*" not in glob:
        return metric_name("_".join(parts)), {}
    labels: dict[str, str] = {}
    name = []
    for part, g in zip(parts, glob, strict=True):
        if g == "*":
            label = metric_name(parts[0] if not labels else f"{parts[0]}_{len(labels) + 1}")
            labels[label if label != "device" else "instance"] = part  # "device" is ours
        else:
            name.append(part)
    return metric_name("_".join(name)), labels


def escape(value: str) -> str:
    """A label value in the text format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value: float) -> str:
    """A sample value in the text format."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def families(rows: Iterable[Any], described: Mapping[str, list[tuple[str, Metric]]]) -> dict[str, Family]:
    """Group (device, key, value) rows into families, by each device's metadata."""
    out: dict[str, Family] = {}
    compiled: dict[str, re.Pattern[str]] = {}
    for device, key, value in rows:
        if value is None:
            continue
        pattern, metric = None, None
        for p, m in described.get(device, []):  # the first match wins, as everywhere
            if (compiled.get(p) or compiled.setdefault(p, compile_pattern(p))).fullmatch(key):
                pattern, metric = p, m
                break
        name, labels = split(key, pattern)
        family = out.get(name)
        if family is None:
            kind = metric.kind if metric is not None else "untyped"
            unit = f"[{metric.unit}]" if metric is not None and metric.unit else ""
            help_text = " ".join(t for t in (metric.description if metric else "", unit) if t)
            family = out[name] = Family(kind, help_text or f"edgemon key {pattern or key}")
        family.samples.append(({"device": device, **labels}, float(value)))
    return out


@prometheus.get("/metrics")
def metrics() -> Response:
    """The exposition (see the module docstring)."""
    glob = text_arg("device", 128) or "*"
    after = text_arg("after", 128)
    limit = int_arg("limit", 1000, 1, MAX_DEVICES)
    c = conn()
    query = select(q.DEVICES).order_by(q.DEVICES.c.id)
    if after:
        query = query.where(q.DEVICES.c.id > after)
    prefix = glob.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
    if prefix:
        query = query.where(q.DEVICES.c.id.startswith(prefix, autoescape=True))
    rows = [r for r in c.execute(query) if fnmatch.fnmatchcase(r.id, glob)]
    truncated = len(rows) > limit
    rows = rows[:limit]
    ids = [r.id for r in rows]
    described = q.metadata(c, ids) if ids else {}
    values = c.execute(q.latest_values_query(ids)).all() if ids else []
    now_ms = round(time.time() * 1000)
    lines: list[str] = []
    fams = families(values, described)
    fams["edgemon_device_up"] = Family("gauge", "1 when the device sent a payload within 3 of its intervals")
    fams["edgemon_device_last_seen_seconds"] = Family("gauge", "when the server last heard from the device [epoch_s]")
    for r in rows:
        fams["edgemon_device_up"].samples.append(({"device": r.id}, 1.0 if online(r, now_ms) else 0.0))
        fams["edgemon_device_last_seen_seconds"].samples.append(({"device": r.id}, r.last_seen / 1000))
    fams["edgemon_device_info"] = Family("gauge", "1 per device, its tags as labels (tag_<name>)")
    for device, tags in (q.device_tags(c, ids) if ids else {}).items():
        labels = {"device": device, **{metric_name(f"tag_{k}"): v for k, v in sorted(tags.items())}}
        fams["edgemon_device_info"].samples.append((labels, 1.0))
    fams["edgemon_exporter_truncated"] = Family("gauge", "1 when more devices match than limit")
    fams["edgemon_exporter_truncated"].samples.append(({}, 1.0 if truncated else 0.0))
    for name, family in sorted(fams.items()):
        lines.append(f"# HELP {name} {family.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        lines.append(f"# TYPE {name} {family.kind}")
        for labels, value in family.samples:
            label_text = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{label_text}}} {number(value)}" if label_text else f"{name} {number(value)}")
    if truncated and ids:
        lines.append(f"# truncated: the next page is after={ids[-1]}")
    return Response("\n".join(lines) + "\n", content_type=CONTENT_TYPE)


@prometheus.get("/metrics/<path:rest>")
def not_here(rest: str) -> Response:
    """Anything under ``/metrics/`` is a plain-text 404, never the dashboard."""
    raise ApiError(404, f"no such endpoint: /metrics/{rest[:200]} (the exposition is at /metrics)")
