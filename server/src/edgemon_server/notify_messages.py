"""What notifications say: the JSON bodies receivers get (documented in DESIGN.md) and their text.

- :func:`message`: one alert transition; :func:`group_message`: a flush of a notification group
  (the same fields, of its most severe alert, plus ``alerts``, every transition in it);
- :func:`repeat_message`: a group's alerts still firing after ``repeat_interval``;
- :func:`digest`: an outage's backlog of one device; :func:`fleet_summary`: the periodic summary;
- :func:`text`: one line for people (Slack, ntfy, e-mail subjects).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select

from edgemon_protocol.payload import utc_timestamp
from edgemon_server import alert_state, queries
from edgemon_server.db import Base

EVENTS = Base.metadata.tables["alert_events"]
STATE = Base.metadata.tables["alert_state"]
SEVERITIES = ("info", "warning", "critical")


def message(note: Mapping[str, Any], key: int | str) -> dict[str, Any]:
    """The generic JSON body (documented in DESIGN.md): what happened, where, when, and a key."""
    return {
        "id": str(key),
        "device": note["device_id"],
        "rule": note["rule"],
        "key": note["key"],
        "severity": note["severity"],
        "state": note["state"],
        "at": rfc3339(note["at"]),
        "value": note["value"],
        "message": note["message"],
    }


def rfc3339(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC."""
    return utc_timestamp(ms / 1000)


def text(body: Mapping[str, Any]) -> str:
    """One line for people (Slack, ntfy)."""
    icon = {"resolved": "resolved", "firing": "FIRING"}.get(body["state"], body["state"])
    return f"[{icon} {body['severity']}] {body['device']}: {body['rule']} on {body['key']}: {body['message']}"


def group_message(
    items: Sequence[Mapping[str, Any]],
    labels: Mapping[str, str],
    key: int | str,
    firing_before: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """One flush of a notification group: ``alerts``, every transition in it, oldest first.

    ``firing_before`` are the group's alerts notified earlier that still fire (listed as
    ``also_firing``). The top-level fields are those of the group's most severe alert still firing (or,
    when none fires, the latest resolved one), so ``state`` says whether anything in the group still
    fires. A flush of one transition is the single-transition :func:`message` plus ``group``,
    ``alerts`` and ``also_firing``.
    """
    ordered = sorted(items, key=lambda i: (i["at"], i["id"]))
    alerts = [message(i, key) for i in ordered]
    for a in alerts:
        del a["id"]
    now = {(i["device_id"], i["fingerprint"]): i for i in [*firing_before, *ordered]}  # each alert's latest
    firing = [i for i in now.values() if i["state"] == "firing"]
    lead = max(firing or list(now.values()), key=lambda i: (SEVERITIES.index(i["severity"]), i["at"]))
    body = message(lead, key)
    also = [message(i, key) for i in firing_before if now[(i["device_id"], i["fingerprint"])] is i]
    for a in also:
        del a["id"]
    if len(now) > 1:
        resolved = len(now) - len(firing)
        where = ", ".join(f"{k}={v}" for k, v in labels.items()) or "all"
        body["message"] = f"{len(firing)} firing, {resolved} resolved ({where}); {lead['message']}"
    body["group"] = dict(labels)
    body["alerts"] = alerts
    body["also_firing"] = also
    return body


def repeat_message(items: Sequence[Mapping[str, Any]], labels: Mapping[str, str], key: str) -> dict[str, Any]:
    """A reminder: the group's alerts that are still firing ``repeat_interval`` after the last notification."""
    body = group_message(items, labels, key)
    body["state"] = "firing"
    body["repeat"] = True
    body["message"] = f"still firing: {len(items)} alert{'s' if len(items) > 1 else ''}; " + (
        items[0]["message"] if len(items) == 1 else body["message"]
    )
    return body


def digest(device: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """One message for an outage's worth of transitions of one device (documented in DESIGN.md)."""
    transitions = [
        {
            "rule": i["rule"],
            "key": i["key"],
            "severity": i["severity"],
            "state": i["state"],
            "at": rfc3339(i["at"]),
            "message": i["message"],
        }
        for i in sorted(items, key=lambda i: (i["at"], i["id"]))
    ]
    fired = sum(t["state"] == "firing" for t in transitions)
    resolved = sum(t["state"] == "resolved" for t in transitions)
    return {
        "id": f"digest-{items[0]['id']}-{items[-1]['id']}",
        "device": device,
        "rule": "digest",
        "key": device,
        "severity": max((t["severity"] for t in transitions), key=SEVERITIES.index),
        "state": "digest",
        "at": transitions[-1]["at"],
        "value": None,
        "message": f"while offline: {fired} fired, {resolved} resolved "
        f"({transitions[0]['at']} to {transitions[-1]['at']})",
        "transitions": transitions,
    }


def fleet_summary(conn: Any, start_ms: int, end_ms: int, key: int) -> dict[str, Any]:
    """The periodic summary: the fleet now, and what its alerts did in the period (documented in DESIGN.md)."""
    devices = alert_state.DEVICES
    total, received, span = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(devices.c.received), 0),
            func.coalesce(func.sum(devices.c.max_seq - devices.c.first_seq + 1), 0),
        )
    ).one()
    silent = len(alert_state.silent_devices(conn))
    counts = dict(
        conn.execute(
            select(EVENTS.c.state, func.count())
            .where(EVENTS.c.received >= start_ms, EVENTS.c.received < end_ms)
            .group_by(EVENTS.c.state)
        ).all()
    )
    firing = dict(
        conn.execute(
            select(STATE.c.severity, func.count()).where(STATE.c.state == "firing").group_by(STATE.c.severity)
        ).all()
    )
    top = conn.execute(
        select(STATE.c.device_id, func.count().label("n"))
        .where(STATE.c.state == "firing")
        .group_by(STATE.c.device_id)
        .order_by(func.count().desc(), STATE.c.device_id)
        .limit(5)
    ).all()
    received, span = int(received), int(span)  # SUM is a Decimal on PostgreSQL
    busiest = top_by_headline(conn)
    completeness = 100.0 * received / span if span else 100.0
    worst = next((s for s in ("critical", "warning", "info") if firing.get(s)), "info")
    return {
        "id": f"summary-{key}",
        "device": "fleet",
        "rule": "summary",
        "key": "fleet",
        "severity": worst,
        "state": "summary",
        "at": rfc3339(end_ms),
        "value": None,
        "message": (
            f"{total} devices, {silent} silent; in the period {counts.get('firing', 0)} alerts fired and "
            f"{counts.get('resolved', 0)} resolved; firing now: {firing.get('critical', 0)} critical, "
            f"{firing.get('warning', 0)} warning; payloads complete: {completeness:.1f} %"
            + "".join(f"; top {label}: {top_line(rows[0])}" for label, rows in busiest.items())
        ),
        "summary": {
            "from": rfc3339(start_ms),
            "to": rfc3339(end_ms),
            "devices": int(total),
            "silent": silent,
            "fired": int(counts.get("firing", 0)),
            "resolved": int(counts.get("resolved", 0)),
            "firing": {s: int(firing.get(s, 0)) for s in ("critical", "warning", "info")},
            "top_devices": [{"device": d, "firing": int(n)} for d, n in top],
            "top_by_headline": busiest,
            "payload_completeness_percent": round(completeness, 2),
        },
    }


def top_line(row: Mapping[str, Any]) -> str:
    """``"press-7 97.5 %"``."""
    return f"{row['device']} {row['value']:g}" + (f" {row['unit']}" if row["unit"] else "")


def top_by_headline(conn: Any, n: int = 3) -> dict[str, list[dict[str, Any]]]:
    """The ``n`` devices with the highest value of each headline (CPU, Memory, Disk, GPU), as declared."""
    devices = alert_state.DEVICES
    ids = [row[0] for row in conn.execute(select(devices.c.id))]
    if not ids:
        return {}
    ranked: dict[str, list[dict[str, Any]]] = {}
    for device, heads in queries.headlines(conn, ids, queries.metadata(conn, ids)).items():
        for head in heads:
            if head["value"] is not None:
                ranked.setdefault(head["label"], []).append(
                    {"device": device, "key": head["key"], "value": head["value"], "unit": head["unit"]}
                )
    return {label: sorted(rows, key=lambda r: (-r["value"], r["device"]))[:n] for label, rows in ranked.items()}


def test_message(receiver: str) -> dict[str, Any]:
    """The body ``edgemon-server notify test`` sends."""
    return {
        "id": f"test-{int(time.time())}",
        "device": "edgemon-server",
        "rule": "notify_test",
        "key": receiver,
        "severity": "info",
        "state": "firing",
        "at": rfc3339(round(time.time() * 1000)),
        "value": None,
        "message": f"a test message to receiver {receiver!r}",
    }
