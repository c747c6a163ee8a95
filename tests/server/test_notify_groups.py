"""Notification groups (group_by, group_wait, group_interval, repeat_interval), slow and absent receivers, e-mail."""

from __future__ import annotations

import logging
import time
from email import message_from_bytes
from typing import Any

import pytest
from sqlalchemy import func, select

from edgemon_protocol.config import ConfigError, Where
from edgemon_server import notify, notify_config, notify_deliver, notify_messages, notify_periodic, silences
from edgemon_server.db import Notification, NotifyGroup
from edgemon_server.notify_config import NotifyConfig, Receiver, Route
from tests.harness import free_port
from tests.server.notifying import Clock, Receiver_, alert, fire, notifier

HOUR = 3600.0


def groups(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(NotifyGroup)).scalar_one())


def test_a_group_waits_for_its_alerts_then_sends_changes_each_group_interval(store, engine, receiver):
    clock = Clock()
    n = notifier(engine, receiver, clock, match={}, group_by=("device",), group_wait=30.0, group_interval=300.0)
    t = clock.t
    disk, cpu = alert("disk_full", "disk-a", "critical", t), alert("cpu_high", "cpu-percent", "warning", t)
    fire(store, "g1", 1, [disk, cpu], t)
    fire(store, "g2", 1, [disk], t)
    n.enqueue()
    assert n.send_due("ops") == 0, "a new group waits group_wait for more of its alerts"
    clock.t += 10
    memory = alert("memory_high", "memory-percent", "warning", clock.t)
    fire(store, "g1", 2, [disk, cpu, memory], clock.t)
    n.enqueue()
    clock.t += 21  # 31 s after the group began
    assert n.send_due("ops") == 2, "one message per device"
    by_device = {b["device"]: b for b in receiver.bodies}
    assert sorted(a["rule"] for a in by_device["g1"]["alerts"]) == ["cpu_high", "disk_full", "memory_high"]
    assert by_device["g1"]["rule"] == "disk_full", "the top-level fields are the most severe alert's"
    assert by_device["g1"]["group"] == {"device": "g1"}
    assert [a["rule"] for a in by_device["g2"]["alerts"]] == ["disk_full"]

    clock.t += 60
    fire(store, "g1", 3, [disk], clock.t)  # cpu and memory resolve
    n.enqueue()
    assert n.send_due("ops") == 0, "a change waits for the group's next group_interval"
    clock.t += 240  # 300 s after the last message
    assert n.send_due("ops") == 1
    change = receiver.bodies[-1]
    assert change["state"] == "firing", "disk_full still fires"
    assert sorted((a["rule"], a["state"]) for a in change["alerts"]) == [
        ("cpu_high", "resolved"),
        ("memory_high", "resolved"),
    ]
    assert change["message"].startswith("1 firing, 2 resolved (device=g1)")
    assert [a["rule"] for a in change["also_firing"]] == ["disk_full"], "what still fires, told before"

    clock.t += 300
    fire(store, "g1", 4, [], clock.t)
    n.enqueue()
    assert n.send_due("ops") == 1
    assert receiver.bodies[-1]["state"] == "resolved"
    assert groups(engine) == 1, "g1's group closed once nothing in it fired; g2's is open"
    clock.t += 1
    fire(store, "g1", 5, [alert("disk_full", "disk-a", "critical", clock.t)], clock.t)
    n.enqueue()
    assert n.send_due("ops") == 0, "a new group again: group_wait"
    clock.t += 30
    assert n.send_due("ops") == 1
    assert len(receiver.bodies) == 5
    assert len(set(receiver.keys)) == 5, "every message its own key"


def test_what_still_fires_is_repeated_each_repeat_interval_but_not_while_silenced(store, engine, receiver):
    clock = Clock()
    n = notifier(engine, receiver, clock, repeat_interval=4 * HOUR)
    disk = alert("disk_full", "disk-a", "critical", clock.t)
    fire(store, "r1", 1, [disk], clock.t)
    n.enqueue()
    assert n.send_due("ops") == 1
    clock.t += 4 * HOUR - 1
    assert n.send_repeats("ops") == 0
    clock.t += 1
    assert n.send_repeats("ops") == 1
    assert n.send_repeats("ops") == 0, "once per repeat_interval"
    reminder = receiver.bodies[-1]
    assert reminder["repeat"] is True
    assert reminder["state"] == "firing"
    assert reminder["message"].startswith("still firing")
    assert reminder["id"] != receiver.bodies[0]["id"]

    silences.add_silence(engine, {"device": "r1"}, clock.t + 4 * HOUR + 600, "disk swap", clock.t)
    clock.t += 4 * HOUR
    assert n.send_repeats("ops") == 0, "silenced: no reminder"
    clock.t += 601  # the silence ended
    assert n.send_repeats("ops") == 1
    assert len(receiver.bodies) == 3

    fire(store, "r1", 2, [], clock.t)
    n.enqueue()
    assert n.send_due("ops") == 1
    assert receiver.bodies[-1]["state"] == "resolved"
    clock.t += 5 * HOUR
    assert n.send_repeats("ops") == 0, "resolved: no more reminders"
    assert groups(engine) == 0


def test_a_reminder_killed_after_its_send_is_repeated_with_the_same_key(store, engine, receiver, monkeypatch):
    clock = Clock()
    first = notifier(engine, receiver, clock, repeat_interval=HOUR)
    fire(store, "k1", 1, [alert("disk_full", "disk-a", "critical", clock.t)], clock.t)
    first.enqueue()
    first.send_due("ops")
    clock.t += HOUR
    real = notify_deliver.deliver

    def deliver_then_die(target: Receiver, body: dict[str, Any]) -> None:
        real(target, body)
        raise SystemExit("killed after the receiver answered, before the commit")

    monkeypatch.setattr(notify_periodic, "deliver", deliver_then_die)
    with pytest.raises(SystemExit):
        first.send_repeats("ops")
    monkeypatch.setattr(notify_periodic, "deliver", real)
    second = notifier(engine, receiver, clock, repeat_interval=HOUR)
    assert second.send_repeats("ops") == 0, "leased to the sender that died"
    clock.t += 45
    assert second.send_repeats("ops") == 1
    assert receiver.keys[1] == receiver.keys[2], "the repeat of the reminder has its key"


def test_a_retried_batch_is_the_same_rows_under_the_same_key(store, engine, receiver):
    clock = Clock()
    n = notifier(engine, receiver, clock, match={}, group_by=("device",))
    disk = alert("disk_full", "disk-a", "critical", clock.t)
    receiver.status = 500
    fire(store, "b1", 1, [disk], clock.t)
    n.enqueue()
    assert n.send_due("ops") == 0
    fire(store, "b1", 2, [disk, alert("cpu_high", "cpu-percent", "warning", clock.t)], clock.t + 1)
    n.enqueue()  # a new alert of the same group while the first message is backing off
    receiver.status = 200
    clock.t += 6
    assert n.send_due("ops") == 2
    assert receiver.tried[0] == receiver.keys[0], "the retry is the same send"
    assert [[a["rule"] for a in b["alerts"]] for b in receiver.bodies] == [["disk_full"], ["cpu_high"]]


def test_an_absent_receiver_is_logged_with_device_and_reason_and_retried(store, engine, caplog):
    clock = Clock()
    down = Receiver_()
    down.close()  # nothing listens on its port any more
    n = notifier(engine, down, clock)
    fire(store, "a1", 1, [alert("disk_full", "disk-a", "critical", clock.t)], clock.t)
    n.enqueue()
    with caplog.at_level(logging.ERROR, logger="edgemon_server.notify"):
        assert n.send_due("ops") == 0
    (record,) = [r for r in caplog.records if r.name == "edgemon_server.notify"]
    assert record.device == "a1"
    assert "ops: URLError" in record.reason
    with engine.connect() as conn:
        status, attempts, error = conn.execute(
            select(Notification.status, Notification.attempts, Notification.last_error).where(
                Notification.receiver == "ops"
            )
        ).one()
    assert (status, attempts) == ("pending", 1)
    assert "refused" in (error or "").lower()


@pytest.mark.slow
def test_a_slow_receiver_delays_neither_ingest_nor_the_other_receivers(store, engine):
    slow, fast = Receiver_(), Receiver_()
    slow.delay = 3.0
    config = NotifyConfig(
        {"slow": Receiver("slow", slow.url, timeout=10.0), "fast": Receiver("fast", fast.url)},
        (Route({}, ("slow", "fast"), group_wait=0.0, group_interval=0.0),),
    )
    n = notify.Notifier(engine, config)
    n.enqueue()
    n.start()
    try:
        fire(store, "s1", 1, [alert("disk_full", "disk-a", "critical", time.time())], time.time())
        deadline = time.monotonic() + 10
        while not (fast.bodies and slow.tried) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fast.bodies, "the fast receiver got its message"
        assert slow.tried, "the slow one was asked"
        assert not slow.bodies, "and is still answering"
        started = time.monotonic()
        for seq in range(2, 22):  # ingest goes on meanwhile
            fire(store, "s1", seq, [alert("disk_full", "disk-a", "critical", time.time())], time.time())
        assert time.monotonic() - started < 2.0, "ingest does not wait for a receiver"
        while not slow.bodies and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [b["rule"] for b in slow.bodies] == ["disk_full"], "and the slow one got it in the end"
    finally:
        n.stop()
        slow.close()
        fast.close()


def test_mail_over_smtp_to_a_local_server():
    from aiosmtpd.controller import Controller

    got: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
            got.append(envelope)
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        url = f"smtp://localhost:{port}/?to=ops@example.com,oncall@example.com&from=edgemon@example.com"
        config = notify_config.parse({"receiver": [{"name": "mail", "url": url}]}, Where(None, ""), {})
        target = config.receivers["mail"]
        assert target.kind == "smtp"
        body = notify_messages.test_message("mail")
        notify_deliver.deliver(target, body)
    finally:
        controller.stop()
    (envelope,) = got
    assert envelope.rcpt_tos == ["ops@example.com", "oncall@example.com"]
    mail = message_from_bytes(envelope.content)
    assert "notify_test" in mail["Subject"]
    assert mail["Message-ID"] == f"<edgemon-{body['id']}.mail@example.com>", "the key, for a repeat to be dropped"
    assert '"rule": "notify_test"' in mail.get_payload()
    with pytest.raises(ConfigError, match=r"\?to="):
        notify_config.parse({"receiver": [{"name": "mail", "url": f"smtp://localhost:{port}/"}]}, Where(None, ""), {})


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ({"group_by": ["colour"]}, "group_by: a list of device, rule, severity, key"),
        ({"group_by": ["device", "device"]}, "each once"),
        ({"group_wait": "soon"}, "group_wait: 'soon' is not a duration"),
        ({"repeat_interval": "10s"}, "repeat_interval: at least 60 s"),
    ],
)
def test_bad_grouping_says_why(route, reason):
    raw = {"receiver": [{"name": "ops", "url": "http://localhost/x"}], "route": [{"receivers": ["ops"], **route}]}
    with pytest.raises(ConfigError, match=r"notify\.route") as err:
        notify_config.parse(raw, Where(None, ""), {})
    assert reason in str(err.value)


def test_groups_are_keyed_by_route_and_labels():
    route = Route({}, ("ops",), group_by=("device", "rule"))
    event = {"device_id": "d", "rule": "disk_full", "severity": "critical", "key": "disk-a"}
    key, labels = notify_periodic.group_of(0, route, event)
    assert labels == {"device": "d", "rule": "disk_full"}
    assert key == notify_periodic.group_of(0, route, {**event, "key": "disk-b"})[0], "key is not a group_by label here"
    assert key != notify_periodic.group_of(0, route, {**event, "device_id": "e"})[0]
    assert key != notify_periodic.group_of(1, route, event)[0], "another route's group"
    config = NotifyConfig({}, (route,))
    assert notify_periodic.route_of(config, key) == (0, route)
    assert notify_periodic.route_of(config, notify_periodic.group_of(3, route, event)[0]) is None, (
        "a route no longer configured"
    )
