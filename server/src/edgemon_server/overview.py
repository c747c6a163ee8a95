"""``/api/v1/overview`` and ``/api/v1/sparklines``: the dashboard's fleet page, sorted and paged here.

The browser asks for one page (50 devices) of a view (search, sort key, order) and gets the page, the
number of matching devices, the fleet's headline columns and a summary (online, offline, silent,
firing alerts, by tag): at 10,000 devices it never downloads the fleet. Sorting works on every
column: status, device, last seen, alerts (worst severity, then count) and any headline label (the
largest of the device's keys that the label's metadata patterns match, as the column shows).

``/api/v1/sparklines`` gives the 15-minute lines of every headline of a page of devices in one
request (one grouped query), so a page costs two requests however many devices it shows.
"""

from __future__ import annotations

import fnmatch
import threading
import time
import weakref
from collections import Counter
from typing import Any, NamedTuple

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import Connection, Engine, and_, func, literal_column, or_, select

from edgemon_protocol.meta import Metric
from edgemon_server import queries as q
from edgemon_server.alert_state import SILENT_RULE
from edgemon_server.devices import summaries
from edgemon_server.lookup import conn
from edgemon_server.params import DEVICE_RE, ApiError, int_arg, iso, text_arg

overview = Blueprint("overview", __name__, url_prefix="/api/v1")

PAGE = 50
SORTS = ("status", "id", "last_seen", "alerts")
"""Sort keys besides ``h:<headline label>``."""
RANK = {"critical": 3, "warning": 2, "info": 1}
META_TTL_S = 15.0
"""The fleet's headline labels and patterns are read again after this long (metadata rarely changes)."""
TAG_VALUES = 20
"""Values per tag in the summary (the most common)."""

_meta_lock = threading.Lock()


class Declared(NamedTuple):
    """A headline label across the fleet: the key patterns declared for it, and by which devices."""

    patterns: set[str]
    devices: set[str]


class FleetMeta(NamedTuple):
    """What the fleet's metadata documents say, read at most every ``META_TTL_S``."""

    labels: list[str]
    """Headline labels, in order of first appearance."""
    declared: dict[str, Declared]
    tags: dict[str, dict[str, str]]


_meta_cache: weakref.WeakKeyDictionary[Engine, tuple[float, FleetMeta]] = weakref.WeakKeyDictionary()


def fleet_meta(c: Connection) -> FleetMeta:
    """The fleet's headline labels (who declared them, with which patterns) and its devices' tags.

    Parsing 10,000 metadata documents costs about 0.1 s; they change when an agent's plugins do, so
    they are read again only after ``META_TTL_S``.
    """
    with _meta_lock:
        cached = _meta_cache.get(c.engine)
        if cached is not None and time.monotonic() - cached[0] < META_TTL_S:
            return cached[1]
    declared: dict[str, Declared] = {}
    tags: dict[str, dict[str, str]] = {}
    query = select(q.META.c.device_id, q.META.c.entries, q.META.c.tags).order_by(q.META.c.device_id)
    for device, entries, device_tags in c.execute(query):
        tags[device] = dict(device_tags or {})
        for pattern, fields in entries:
            label = Metric(**fields).headline
            if label:
                one = declared.setdefault(label, Declared(set(), set()))
                one.patterns.add(pattern)
                one.devices.add(device)
    meta = FleetMeta(list(declared), declared, tags)
    with _meta_lock:
        _meta_cache[c.engine] = (time.monotonic(), meta)
    return meta


def headline_values(c: Connection, declared: Declared) -> dict[str, float]:
    """Per device that declared the label, the largest latest value of its keys matching its patterns."""
    patterns = declared.patterns
    dialect = c.dialect.name
    wanted = []
    for p in sorted(patterns):
        ranged = q.key_prefix(p, dialect)
        like = q.SERIES.c.key.like(q.like(p), escape="!")
        wanted.append(and_(ranged, like) if ranged is not None else like)
    query = (
        select(q.SERIES.c.device_id, func.max(q.SERIES.c.last_value)).where(or_(*wanted)).group_by(q.SERIES.c.device_id)
    )
    out = {}
    for device, value in c.execute(query):
        if value is not None and device in declared.devices:
            out[device] = float(value)
    return out


def matches(device: str, tags: dict[str, str], search: str) -> bool:
    """The dashboard's search: part of the id, or ``name=value`` on a tag (a value's start, or a glob)."""
    if search in device.lower():
        return True
    name, sep, value = search.partition("=")
    if not sep:
        return False
    tag = tags.get(name.strip())
    if tag is None:
        return False
    value = value.strip()
    return tag.lower().startswith(value) or fnmatch.fnmatchcase(tag.lower(), value)


@overview.get("/overview")
def fleet_overview() -> Response:
    """One page of the fleet as the dashboard shows it, sorted and searched here; and the fleet's summary."""
    now_ms = round(time.time() * 1000)
    sort = text_arg("sort", 140) or "status"
    if sort not in SORTS and not sort.startswith("h:"):
        raise ApiError(400, f"sort: {sort!r} is not one of {', '.join(SORTS)} or h:<headline label>")
    descending = request.args.get("desc", "0") in ("1", "true")
    page = int_arg("page", 1, 1, 1_000_000)
    limit = int_arg("limit", PAGE, 1, 500)
    search = text_arg("q", 200).strip().lower()
    c = conn()
    d = q.DEVICES.c
    rows: list[Any] = list(c.execute(select(d.id, d.first_seen, d.last_seen, d.last_ts, d.interval)).all())
    meta = fleet_meta(c)
    tags, labels, patterns = meta.tags, meta.labels, meta.declared
    alerts = q.alert_counts(c, None)
    silent = {
        r[0]
        for r in c.execute(
            select(q.ALERTS.c.device_id).where(q.ALERTS.c.rule == SILENT_RULE, q.ALERTS.c.state == "firing")
        )
    }
    factor = current_app.extensions["edgemon_api"].online_factor  # as lookup.online, without a lookup per row
    status = {r.id: now_ms - r.last_seen <= max(5000.0, factor * r.interval * 1000) for r in rows}
    summary = _summary(rows, status, tags, alerts, silent)
    if search:
        rows = [r for r in rows if matches(r.id, tags.get(r.id, {}), search)]
    if sort.startswith("h:"):
        label = sort[2:]
        if label not in patterns:
            raise ApiError(400, f"sort: no device declares a headline {label!r} (columns: {', '.join(labels)})")
        values = headline_values(c, patterns[label])
        have = sorted((r for r in rows if r.id in values), key=lambda r: r.id)
        have.sort(key=lambda r: values[r.id], reverse=descending)  # stable: ties stay in id order
        rows = have + sorted((r for r in rows if r.id not in values), key=lambda r: r.id)  # no value: last
    else:
        value = {
            "status": lambda r: status[r.id],
            "id": lambda r: r.id,
            "last_seen": lambda r: r.last_seen,
            "alerts": lambda r: (RANK.get(alerts.get(r.id, (0, None))[1] or "", 0), alerts.get(r.id, (0, None))[0]),
        }[sort]
        rows.sort(key=lambda r: r.id)
        rows.sort(key=value, reverse=descending)
    total = len(rows)
    pages = max(1, -(-total // limit))
    page = min(page, pages)
    shown = rows[(page - 1) * limit : page * limit]
    return jsonify(
        {
            "total": total,
            "page": page,
            "pages": pages,
            "limit": limit,
            "sort": sort,
            "desc": descending,
            "labels": labels,
            "summary": summary,
            "devices": summaries(shown, now_ms),
        }
    )


def _summary(
    rows: list[Any],
    status: dict[str, bool],
    tags: dict[str, dict[str, str]],
    alerts: dict[str, tuple[int, str | None]],
    silent: set[str],
) -> dict[str, Any]:
    """Online, offline, silent and alerting devices, overall and per value of each tag."""
    severities = Counter(worst for _n, worst in alerts.values() if worst)
    critical = {d for d, (_n, worst) in alerts.items() if worst == "critical"}
    by_tag: dict[str, dict[str, dict[str, int]]] = {}
    for device, up in status.items():
        for name, value in tags.get(device, {}).items():
            cell = by_tag.setdefault(name, {}).setdefault(value, {"devices": 0, "offline": 0, "critical": 0})
            cell["devices"] += 1
            if not up:
                cell["offline"] += 1
            if device in critical:
                cell["critical"] += 1
    for name, values in by_tag.items():
        top = sorted(values.items(), key=lambda kv: (-kv[1]["offline"] - kv[1]["critical"], -kv[1]["devices"], kv[0]))
        by_tag[name] = dict(top[:TAG_VALUES])
    online_count = sum(status.values())
    return {
        "devices": len(rows),
        "online": online_count,
        "offline": len(rows) - online_count,
        "silent": len(silent),
        "critical": severities.get("critical", 0),
        "warning": severities.get("warning", 0),
        "by_tag": by_tag,
    }


@overview.get("/sparklines")
def sparklines() -> Response:
    """The last ``minutes`` (15) of every headline key of up to 100 ``device`` s, ``points`` (30) averages each."""
    devices = request.args.getlist("device")[:100]
    for d in devices:
        if not DEVICE_RE.fullmatch(d):
            raise ApiError(400, f"device: {d[:140]!r} is not a device id")
    minutes = int_arg("minutes", 15, 1, 1440)
    points = int_arg("points", 30, 2, 200)
    now_ms = round(time.time() * 1000)
    start = now_ms - minutes * 60_000
    width = max(1, (now_ms - start) // points)
    c = conn()
    heads = q.headlines(c, devices, q.metadata(c, devices)) if devices else {}
    wanted = {(d, h["key"]) for d, hs in heads.items() for h in hs if h["key"]}
    ids: dict[int, tuple[str, str]] = {}
    if wanted:
        query = select(q.SERIES.c.id, q.SERIES.c.device_id, q.SERIES.c.key).where(
            q.SERIES.c.device_id.in_(devices), q.SERIES.c.key.in_(sorted({k for _d, k in wanted}))
        )
        ids = {sid: (d, k) for sid, d, k in c.execute(query) if (d, k) in wanted}
    lines: dict[str, dict[str, list[float | None]]] = {d: {} for d in devices}
    if ids:
        s = q.raw_rows(sorted(ids), start, now_ms, c.dialect.name)
        bucket = ((s.c.ts - start) // literal_column(str(int(width)))).label("b")
        query = select(s.c.series_id, bucket, func.avg(s.c.value)).group_by(s.c.series_id, bucket)
        for sid, b, avg in c.execute(query):
            device, key = ids[sid]
            line = lines[device].setdefault(key, [None] * points)
            if 0 <= int(b) < points:
                line[int(b)] = None if avg is None else round(float(avg), 4)
    return jsonify({"from": iso(start), "to": iso(now_ms), "points": points, "lines": lines})
