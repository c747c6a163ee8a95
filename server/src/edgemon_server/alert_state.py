"""Alert state on the server: what devices say (level-based, from each payload) and what the server sees.

**From devices.** Every payload carries the device's active set (pending and firing alerts, see
:mod:`edgemon_protocol.alerting`). Each new payload at least as recent as the device's newest one,
oldest first, is compared with the stored state (an older one, a late or resent payload, or a
backlog sent after a reconnect while live payloads go first, changes nothing: the state is the
newest word): an alert that appears or changes severity is a ``firing`` event at the device's
``changed`` time; one that is gone is ``resolved`` at the payload's ``ts``. A payload older than
what the state already reflects changes nothing, and events are unique per (device, alert, state,
severity, time), so redelivered and resent payloads store nothing twice: the state converges
through loss, duplicates and backlogs.

**From the server.** ``device_silent``: a device that sent nothing for ``silent_factor`` of its
intervals (at least ``SILENT_MIN_S``) fires, and resolves when it reports again. While a device is
silent its own alerts are shown as stale (the API), not resolved.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, and_, delete, func, select, tuple_, update

from edgemon_protocol.alerting import fingerprint
from edgemon_server.db import Base
from edgemon_server.validate import Accepted

STATE = Base.metadata.tables["alert_state"]
EVENTS = Base.metadata.tables["alert_events"]
DEVICES = Base.metadata.tables["devices"]
PAYLOADS = Base.metadata.tables["payloads"]

SILENT_RULE = "device_silent"
LOST_RULE = "payloads_lost"
LOST_RESOLVE_S = 3600.0
"""A ``payloads_lost`` alert resolves an hour after the last give-up (the loss is history, not a state)."""
BACKLOG_RULE = "send_backlog"
BACKLOG_CLEAR = 10
"""A ``send_backlog`` alert resolves once the device holds at most this many payloads."""
BACKLOG_DEFAULT = 100
"""Payloads waiting on a device that raise ``send_backlog`` by default."""
BACKLOG_KEY = "agent-transport-buffered"
"""The device's own count of payloads waiting to be sent (its self-metrics)."""
SILENT_MIN_S = 30.0
"""A device is never called silent sooner than this, however short its interval."""


def apply_payloads(conn: Connection, payloads: Sequence[Accepted], now_ms: int, insert: Callable[..., Any]) -> int:
    """Update the device alerts from new payloads' active sets; return the number of events stored."""
    if not payloads:
        return 0
    devices = sorted({p.device_id for p in payloads})
    newest = dict(conn.execute(select(DEVICES.c.id, DEVICES.c.last_ts).where(DEVICES.c.id.in_(devices))).all())
    payloads = [p for p in payloads if p.ts_ms >= newest.get(p.device_id, p.ts_ms)]
    current: dict[tuple[str, str], dict[str, Any]] = {
        (r.device_id, r.fingerprint): dict(r._mapping)
        for r in conn.execute(select(STATE).where(STATE.c.device_id.in_(devices), STATE.c.source == "device"))
    }
    dirty: set[tuple[str, str]] = set()
    gone: set[tuple[str, str]] = set()
    events: list[dict[str, Any]] = []
    for p in sorted(payloads, key=lambda p: (p.device_id, p.ts_ms)):
        active = {}
        for alert in p.alerts:
            key = str(alert.get("key") or alert.get("metric") or alert["rule"])
            active[str(alert.get("fingerprint") or fingerprint(alert["rule"], key))] = (key, alert)
        for fp, (key, alert) in active.items():
            old = current.get((p.device_id, fp))
            if old is not None and old["updated"] > p.ts_ms:
                continue  # the state already reflects a newer payload
            state = alert.get("state", "firing")
            since = int(alert.get("since_ms", p.ts_ms))
            changed = int(alert.get("changed_ms", since))
            row = {
                "device_id": p.device_id,
                "fingerprint": fp,
                "rule": alert["rule"],
                "key": key,
                "severity": alert["severity"],
                "state": state,
                "since": since,
                "changed": changed,
                "updated": p.ts_ms,
                "value": alert.get("value"),
                "message": alert["message"],
                "source": "device",
            }
            was = (old["state"], old["severity"]) if old is not None else ("ok", "")
            if state == "firing" and was != ("firing", alert["severity"]):
                events.append(_event(row, "firing", changed, now_ms))
            current[(p.device_id, fp)] = row
            dirty.add((p.device_id, fp))
            gone.discard((p.device_id, fp))
        for (device, fp), old in current.items():
            if device != p.device_id or fp in active or old["state"] == "resolved" or old["updated"] > p.ts_ms:
                continue
            if old["state"] == "firing":
                events.append(_event(old, "resolved", p.ts_ms, now_ms))
                old.update(state="resolved", changed=p.ts_ms, updated=p.ts_ms)
                dirty.add((device, fp))
            else:  # pending that never fired: nothing to remember
                gone.add((device, fp))
                dirty.discard((device, fp))
    _write(conn, [current[k] for k in sorted(dirty)], insert)
    if gone:
        conn.execute(delete(STATE).where(tuple_(STATE.c.device_id, STATE.c.fingerprint).in_(sorted(gone))))
    return _events(conn, events, insert)


def apply_transitions(
    conn: Connection, transitions: Sequence[dict[str, Any]], now_ms: int, insert: Callable[..., Any]
) -> int:
    """Store exact transitions from ``devices/<id>/alerts`` (the history); return how many were new.

    The events are the same rows the payload path writes (same device time), so whichever arrives
    second stores nothing. The current state moves only for a transition newer than what it reflects.
    """
    events = []
    keys = sorted({(t["device_id"], t["fingerprint"]) for t in transitions})
    current = {
        (r.device_id, r.fingerprint): dict(r._mapping)
        for r in conn.execute(select(STATE).where(tuple_(STATE.c.device_id, STATE.c.fingerprint).in_(keys)))
    }
    dirty = set()
    for t in sorted(transitions, key=lambda t: (t["device_id"], t["seq"])):
        row = {
            "device_id": t["device_id"],
            "fingerprint": t["fingerprint"],
            "rule": t["rule"],
            "key": t["key"],
            "severity": t["severity"],
            "state": t["state"],
            "since": t["since_ms"],
            "changed": t["at_ms"],
            "updated": t["at_ms"],
            "value": t["value"],
            "message": t["message"],
            "source": "device",
        }
        if t["state"] != "pending":
            events.append(_event(row, t["state"], t["at_ms"], now_ms))
        old = current.get((t["device_id"], t["fingerprint"]))
        if old is None or old["updated"] < t["at_ms"]:
            current[(t["device_id"], t["fingerprint"])] = row
            dirty.add((t["device_id"], t["fingerprint"]))
    _write(conn, [current[k] for k in sorted(dirty)], insert)
    return _events(conn, events, insert)


def server_row(
    device: str, rule: str, severity: str, since: int, now_ms: int, value: Any, message: str
) -> dict[str, Any]:
    """A row of ``alert_state`` for one of the server's own rules (key: the device)."""
    return {
        "device_id": device,
        "fingerprint": fingerprint(rule, device),
        "rule": rule,
        "key": device,
        "severity": severity,
        "state": "firing",
        "since": since,
        "changed": now_ms,
        "updated": now_ms,
        "value": value,
        "message": message,
        "source": "server",
    }


def payloads_lost(
    conn: Connection, lost: Sequence[tuple[str, int, int, str]], now_ms: int, insert: Callable[..., Any]
) -> list[dict[str, Any]]:
    """Fire (or extend) ``payloads_lost`` for gaps the server gave up on: (device, first, last, why)."""
    by_device: dict[str, list[tuple[int, int, str]]] = {}
    for device, first, last, why in lost:
        by_device.setdefault(device, []).append((first, last, why))
    current = {
        r.device_id: dict(r._mapping)
        for r in conn.execute(
            select(STATE).where(STATE.c.rule == LOST_RULE, STATE.c.source == "server", STATE.c.device_id.in_(by_device))
        )
    }
    rows, events = [], []
    for device, gaps in by_device.items():
        count = sum(last - first + 1 for first, last, _ in gaps)
        first, last, why = gaps[-1]
        old = current.get(device)
        firing = old is not None and old["state"] == "firing"
        total = count + (int(old["value"] or 0) if firing and old is not None else 0)
        since = old["since"] if firing and old is not None else now_ms
        row = server_row(
            device,
            LOST_RULE,
            "warning",
            since,
            now_ms,
            total,
            f"{total} payloads never arrived (last: seq {first}..{last}, {why})",
        )
        rows.append(row)
        if not firing:
            events.append(_event(row, "firing", now_ms, now_ms))
    _write(conn, rows, insert)
    _events(conn, events, insert)
    return events


def backlog(
    conn: Connection, payloads: Sequence[Accepted], threshold: int, now_ms: int, insert: Callable[..., Any]
) -> int:
    """``send_backlog``: the device holds ``threshold`` payloads or more it could not send; resolved at 10."""
    newest: dict[str, Accepted] = {}
    for p in payloads:
        if BACKLOG_KEY in p.samples and (p.device_id not in newest or p.ts_ms > newest[p.device_id].ts_ms):
            newest[p.device_id] = p
    if threshold <= 0 or not newest:
        return 0
    current = {
        r.device_id: dict(r._mapping)
        for r in conn.execute(
            select(STATE).where(STATE.c.rule == BACKLOG_RULE, STATE.c.source == "server", STATE.c.device_id.in_(newest))
        )
    }
    rows, events = [], []
    for device, p in newest.items():
        held = p.samples[BACKLOG_KEY]
        old = current.get(device)
        firing = old is not None and old["state"] == "firing"
        if held >= threshold and not firing:
            row = server_row(
                device,
                BACKLOG_RULE,
                "warning",
                p.ts_ms,
                now_ms,
                held,
                f"{held:.0f} payloads waiting to be sent on the device",
            )
            rows.append(row)
            events.append(_event(row, "firing", now_ms, now_ms))
        elif firing and held <= BACKLOG_CLEAR:
            assert old is not None
            _resolve(old, now_ms, held, f"the device's backlog is down to {held:.0f}", rows, events)
    _write(conn, rows, insert)
    return _events(conn, events, insert)


def sweep_silent(conn: Connection, now_ms: int, factor: float, insert: Callable[..., Any]) -> list[dict[str, Any]]:
    """Fire ``device_silent`` for devices that stopped reporting, resolve it for those back; return the events."""
    rows = conn.execute(select(DEVICES.c.id, DEVICES.c.last_seen, DEVICES.c.interval)).all()
    states = {
        r.device_id: dict(r._mapping)
        for r in conn.execute(select(STATE).where(STATE.c.rule == SILENT_RULE, STATE.c.source == "server"))
    }
    changed: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for past in conn.execute(
        select(STATE).where(
            STATE.c.rule == LOST_RULE, STATE.c.state == "firing", STATE.c.changed < now_ms - LOST_RESOLVE_S * 1000
        )
    ):
        row = dict(past._mapping)
        _resolve(row, now_ms, row["value"], f"no payload lost for an hour ({row['message']})", changed, events)
    for device, last_seen, interval in rows:
        after_ms = int(max(SILENT_MIN_S, factor * interval) * 1000)
        silent = now_ms - last_seen > after_ms
        old = states.get(device)
        firing = old is not None and old["state"] == "firing"
        if silent and not firing:
            away = (now_ms - last_seen) / 1000
            message = f"no payload for {away:.0f} s ({factor:g} x its {interval:g} s)"
            row = server_row(device, SILENT_RULE, "critical", last_seen, now_ms, away, message)
            changed.append(row)
            events.append(_event(row, "firing", now_ms, now_ms))
        elif firing and not silent:
            assert old is not None
            away = (last_seen - old["since"]) / 1000
            _resolve(old, now_ms, None, f"{BACK} after {away:.0f} s without a payload", changed, events)
    _write(conn, changed, insert)
    _events(conn, events, insert)
    judge_silences(conn, now_ms, {device: interval for device, _seen, interval in rows})
    return events


BACK = "reporting again"
VERDICT_WAIT_S = 600.0
"""How long after a device comes back its backlog may take to arrive before the silence is judged."""


def judge_silences(conn: Connection, now_ms: int, intervals: dict[str, float]) -> None:
    """Say why a device was silent, once its backlog had time to arrive.

    If the payloads stored for the silent span cover it (90 %), the device kept collecting and its
    buffer sent them later: a network outage. If they do not, ``VERDICT_WAIT_S`` after it came back,
    the device itself was down or rebooted. The verdict replaces the message of the resolved alert and
    of its ``resolved`` event.
    """
    rows = conn.execute(
        select(STATE).where(
            STATE.c.rule == SILENT_RULE,
            STATE.c.state == "resolved",
            STATE.c.changed > now_ms - 2 * VERDICT_WAIT_S * 1000,
            STATE.c.message.startswith(BACK),
        )
    ).all()
    for row in rows:
        interval_ms = max(1.0, intervals.get(row.device_id, 10.0) * 1000)
        span_ms = max(0, row.changed - row.since)
        expected = max(1, round(span_ms / interval_ms) - 1)
        count = conn.execute(
            select(func.count())
            .select_from(PAYLOADS)
            .where(PAYLOADS.c.device_id == row.device_id, PAYLOADS.c.ts > row.since, PAYLOADS.c.ts < row.changed)
        ).scalar_one()
        if count >= 0.9 * expected:
            verdict = (
                f"network outage of {span_ms / 1000:.0f} s: the device kept collecting "
                f"({count} of {expected} payloads for the silence arrived later)"
            )
        elif now_ms - row.changed >= VERDICT_WAIT_S * 1000:
            verdict = (
                f"the device was down or rebooted for about {span_ms / 1000:.0f} s "
                f"(only {count} of {expected} payloads exist for the silence)"
            )
        else:
            continue  # its backlog may still be arriving
        conn.execute(
            update(STATE)
            .where(STATE.c.device_id == row.device_id, STATE.c.fingerprint == row.fingerprint)
            .values(message=verdict)
        )
        conn.execute(
            update(EVENTS)
            .where(
                EVENTS.c.device_id == row.device_id,
                EVENTS.c.fingerprint == row.fingerprint,
                EVENTS.c.state == "resolved",
                EVENTS.c.at == row.changed,
            )
            .values(message=verdict)
        )


def silent_devices(conn: Connection, devices: Sequence[str] | None = None) -> set[str]:
    """Devices whose ``device_silent`` alert is firing (their own alerts are stale)."""
    query = select(STATE.c.device_id).where(
        and_(STATE.c.rule == SILENT_RULE, STATE.c.source == "server", STATE.c.state == "firing")
    )
    if devices is not None:
        query = query.where(STATE.c.device_id.in_(devices))
    return {row[0] for row in conn.execute(query)}


def _resolve(
    row: dict[str, Any], now_ms: int, value: Any, message: str, rows: list[dict[str, Any]], events: list[dict[str, Any]]
) -> None:
    """Mark one of the server's own alerts resolved now: the row to write and its event."""
    row.update(state="resolved", changed=now_ms, updated=now_ms, value=value, message=message)
    rows.append(row)
    events.append(_event(row, "resolved", now_ms, now_ms))


def _event(row: dict[str, Any], state: str, at: int, now_ms: int) -> dict[str, Any]:
    return {
        "device_id": row["device_id"],
        "fingerprint": row["fingerprint"],
        "rule": row["rule"],
        "key": row["key"],
        "severity": row["severity"],
        "state": state,
        "at": at,
        "value": row["value"] if state == "firing" else row.get("value"),
        "message": row["message"],
        "received": now_ms,
    }


def _write(conn: Connection, rows: list[dict[str, Any]], insert: Callable[..., Any]) -> None:
    if not rows:
        return
    stmt = insert(STATE)
    columns = ("rule", "key", "severity", "state", "since", "changed", "updated", "value", "message", "source")
    stmt = stmt.on_conflict_do_update(
        index_elements=["device_id", "fingerprint"], set_={c: getattr(stmt.excluded, c) for c in columns}
    )
    conn.execute(stmt, rows)


def _events(conn: Connection, events: list[dict[str, Any]], insert: Callable[..., Any]) -> int:
    if not events:
        return 0
    # RETURNING tells what was new; a driver's rowcount after an upsert may not (psycopg 3 said 0).
    return len(conn.execute(insert(EVENTS).on_conflict_do_nothing().returning(EVENTS.c.id), events).all())
