"""Notifications: a local HTTP receiver, routes, silences, retries, exactly once."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from sqlalchemy import select

from edgemon_protocol import meta
from edgemon_protocol.config import ConfigError, Where
from edgemon_protocol.meta import Metric
from edgemon_protocol.payload import utc_timestamp
from edgemon_server import notify, notify_config, notify_deliver, notify_messages, silences
from edgemon_server.db import Notification
from edgemon_server.notify_config import NotifyConfig, Receiver
from edgemon_server.store import Message
from tests.server.notifying import Clock, alert, fire, notifier


def test_history_from_before_notifications_were_configured_is_not_sent(store, engine, receiver):
    clock = Clock()
    fire(store, "old", 1, [alert("disk_full", "disk-a", "critical", clock.t)], clock.t)
    n = notifier(engine, receiver, clock)
    assert n.enqueue() == 0
    fire(store, "old", 2, [], clock.t + 1)
    assert n.enqueue() == 1, "what happens from now on is"
    n.send_due("ops")
    assert [b["state"] for b in receiver.bodies] == ["resolved"]


def test_firing_then_resolved_each_delivered_once_with_a_key(store, engine, receiver):
    clock = Clock()
    n = notifier(engine, receiver, clock)
    fire(store, "d1", 1, [alert("disk_full", "disk-a", "critical", clock.t - 1)], clock.t)
    disk = alert("disk_full", "disk-a", "critical", clock.t - 1)
    fire(store, "d1", 2, [disk, alert("cpu_high", "cpu-percent", "warning", clock.t)], clock.t + 1)  # not routed
    assert n.enqueue() == 1
    assert n.send_due("ops") == 1
    fire(store, "d1", 3, [], clock.t + 2)
    assert n.enqueue() == 1
    assert n.send_due("ops") == 1
    assert n.enqueue() == 0
    assert n.send_due("ops") == 0, "nothing is sent twice"
    assert [(b["rule"], b["state"], b["device"]) for b in receiver.bodies] == [
        ("disk_full", "firing", "d1"),
        ("disk_full", "resolved", "d1"),
    ]
    assert len(set(receiver.keys)) == 2
    assert receiver.keys == [b["id"] for b in receiver.bodies]


def test_a_failing_receiver_is_retried_with_back_off_and_loses_nothing(store, engine, receiver):
    clock = Clock()
    n = notifier(engine, receiver, clock)
    receiver.status = 500
    fire(store, "d2", 1, [alert("disk_full", "disk-a", "critical", clock.t)], clock.t)
    n.enqueue()
    assert n.send_due("ops") == 0
    assert n.send_due("ops") == 0, "not before its back-off"
    receiver.status = 200
    clock.t += 4
    assert n.send_due("ops") == 0
    clock.t += 2  # 5 s after the first try
    assert n.send_due("ops") == 1
    assert [b["rule"] for b in receiver.bodies] == ["disk_full"]
    with engine.connect() as conn:
        row = conn.execute(
            select(Notification.status, Notification.attempts).where(Notification.receiver == "ops")
        ).one()
    assert tuple(row) == ("sent", 2)


def test_silenced_until_expiry_then_notified(store, engine, receiver):
    clock = Clock()
    n = notifier(engine, receiver, clock)
    silence = silences.add_silence(
        engine, {"device": "press-*", "rule": "disk_full"}, clock.t + 60, "disk swap", clock.t
    )
    fire(store, "press-1", 1, [alert("disk_full", "disk-a", "critical", clock.t)], clock.t)
    fire(store, "other", 1, [alert("disk_full", "disk-a", "critical", clock.t)], clock.t)
    n.enqueue()
    n.send_due("ops")
    assert [b["device"] for b in receiver.bodies] == ["other"], "the silence mutes press-1 only"
    clock.t += 61  # the silence ended
    fire(store, "press-1", 2, [], clock.t)
    n.enqueue()
    n.send_due("ops")
    assert [(b["device"], b["state"]) for b in receiver.bodies] == [("other", "firing"), ("press-1", "resolved")]
    with pytest.raises(ValueError, match="ends"):
        silences.add_silence(engine, {"device": "x"}, clock.t - 1, "", clock.t)
    with pytest.raises(ValueError, match="at least one"):
        silences.add_silence(engine, {}, clock.t + 10, "", clock.t)
    assert silences.expire_silence(engine, silence, clock.t) is False, "already over"


def test_a_silent_devices_other_alerts_are_held_back(store, engine, receiver):
    clock = Clock()
    n = notifier(engine, receiver, clock, match={})
    fire(store, "quiet", 1, [], clock.t - 120)
    store.sweep_silent(clock.t, factor=5)
    fire(store, "quiet", 0, [alert("disk_full", "disk-a", "critical", clock.t - 121)], clock.t - 121)  # late, old
    n.enqueue()
    n.send_due("ops")
    assert [b["rule"] for b in receiver.bodies] == ["device_silent"]


@pytest.mark.parametrize(
    ("toml", "reason"),
    [
        ('[[notify.receiver]]\nname = "ops"\nurl = "https://hooks.slack.com/services/SECRET"\n', "url_env or url_file"),
        ('[[notify.receiver]]\nname = "ops"\nurl_env = "NOPE"\n', "NOPE is not set"),
        (
            '[[notify.receiver]]\nname = "ops"\nurl = "http://localhost/x"\n\n[[notify.route]]\nreceivers = ["dev"]\n',
            "no receiver named 'dev'",
        ),
        ('[[notify.receiver]]\nname = "ops"\nurl = "ftp://localhost/x"\n', "apprise does not understand ftp://"),
        ("[notify]\nloud = 1\n", "unknown key notify.loud"),
    ],
)
def test_bad_notify_config_says_where_and_why(tmp_path, toml, reason):
    import tomllib

    path = tmp_path / "server.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=r"server\.toml:") as err:
        notify_config.parse(tomllib.loads(toml).get("notify"), Where(str(path), toml), environ={})
    assert reason in str(err.value)


def test_receiver_kinds_from_their_urls():
    assert notify_config.kind_of("https://hooks.slack.com/services/T/B/X") == "slack"
    assert notify_config.kind_of("ntfys://ntfy.sh/edgemon") == "ntfy"
    assert notify_config.kind_of("https://example.net/hook") == "webhook"


def test_cli_silences_and_notify_test(tmp_path, receiver, sqlite_url):
    from edgemon_server import cli

    cfg = tmp_path / "server.toml"
    cfg.write_text(
        f'[server]\ndatabase_url = "{sqlite_url}"\n\n[[notify.receiver]]\nname = "ops"\nurl = "{receiver.url}"\n'
    )
    assert cli.main(["notify", "test", "ops", "-c", str(cfg)]) == 0
    assert receiver.bodies[0]["rule"] == "notify_test"
    assert cli.main(["notify", "test", "nobody", "-c", str(cfg)]) == 2
    until = utc_timestamp(time.time() + 3600)
    assert cli.main(["silence", "add", "--match", "device=press-*", "--until", until, "-c", str(cfg)]) == 0
    assert cli.main(["silence", "add", "--match", "colour=red", "--until", until, "-c", str(cfg)]) == 2
    assert cli.main(["silence", "add", "--until", until, "-c", str(cfg)]) == 2
    assert cli.main(["silence", "expire", "1", "-c", str(cfg)]) == 0
    assert cli.main(["silence", "expire", "1", "-c", str(cfg)]) == 1


def test_silences_are_listed_in_the_api(engine):
    from edgemon_server.api import ApiSettings, create_app

    now = time.time()
    silences.add_silence(engine, {"device": "press-*"}, now + 600, "disk swap", now)
    client = create_app(engine, ApiSettings(rate_limit="")).test_client()
    (silence,) = client.get("/api/v1/silences").get_json()["silences"]
    assert silence["matchers"] == {"device": "press-*"}
    assert silence["comment"] == "disk swap"


def test_two_notifiers_on_one_database_send_each_notification_once(store, engine, receiver):
    clock = Clock()
    a, b = notifier(engine, receiver, clock), notifier(engine, receiver, clock)
    for i in range(5):
        fire(store, f"dev{i}", 1, [alert("disk_full", "disk-a", "critical", clock.t)], clock.t)
    a.enqueue()
    b.enqueue()
    a.send_due("ops")
    b.send_due("ops")
    assert sorted(x["device"] for x in receiver.bodies) == [f"dev{i}" for i in range(5)]


def test_an_outage_of_twenty_transitions_is_one_digest(store, engine, receiver):
    clock = Clock()
    n = notifier(engine, receiver, clock, match={})
    start = clock.t - 3600  # they happened an hour ago: the device's backlog arrives now
    for i in range(10):  # fire and resolve ten times: 20 transitions
        fire(store, "offline", 2 * i, [alert("disk_full", "disk-a", "critical", start + 60 * i)], start + 60 * i)
        fire(store, "offline", 2 * i + 1, [], start + 60 * i + 30)
    # (the level path skips payloads older than the newest; here each arrives in order, as live ones)
    n.enqueue()
    assert n.send_due("ops") == 0, "late transitions are not sent one by one"
    assert n.send_digests("ops") == 0, "not while the backlog is still arriving"
    clock.t += 31
    assert n.send_digests("ops") == 1
    (body,) = receiver.bodies
    assert body["state"] == "digest"
    assert len(body["transitions"]) == 20
    assert body["message"].startswith("while offline: 10 fired, 10 resolved")
    assert n.send_digests("ops") == 0, "sent once"


def test_routes_are_muted_inside_their_time_interval():
    from datetime import datetime
    from zoneinfo import ZoneInfo

    raw = {
        "receiver": [{"name": "ops", "url": "http://localhost/x"}],
        "route": [{"receivers": ["ops"], "mute_time_intervals": ["nightly"]}],
        "time_interval": [
            {
                "name": "nightly",
                "weekdays": ["monday:friday"],
                "times": [{"start": "01:00", "end": "02:00"}],
                "location": "Europe/Berlin",
            }
        ],
    }
    config = notify_config.parse(raw, Where(None, ""), environ={})
    nightly = config.time_intervals["nightly"]
    berlin = ZoneInfo("Europe/Berlin")
    assert nightly.contains(datetime(2026, 12, 1, 1, 30, tzinfo=berlin).timestamp())  # a Tuesday
    assert not nightly.contains(datetime(2026, 12, 1, 2, 0, tzinfo=berlin).timestamp()), "the end is excluded"
    assert not nightly.contains(datetime(2026, 12, 6, 1, 30, tzinfo=berlin).timestamp()), "a Sunday"
    n = notify.Notifier(None, config)  # type: ignore[arg-type]
    event = {"device_id": "d", "rule": "r", "severity": "critical", "key": "k", "state": "firing"}
    night = n._receivers_for(event, datetime(2026, 12, 1, 1, 30, tzinfo=berlin).timestamp())
    noon = n._receivers_for(event, datetime(2026, 12, 1, 12, 0, tzinfo=berlin).timestamp())
    assert {r: muted for r, (_, _, muted) in night.items()} == {"ops": True}
    assert {r: muted for r, (_, _, muted) in noon.items()} == {"ops": False}
    with pytest.raises(ConfigError, match="not a day"):
        notify_config.parse({**raw, "time_interval": [{"name": "x", "weekdays": ["funday"]}]}, Where(None, ""), {})


def test_an_apprise_url_reaches_the_local_receiver(receiver):
    url = receiver.url.replace("http://", "json://")
    config = notify_config.parse(
        {"receiver": [{"name": "any", "url": url}], "route": [{"receivers": ["any"]}]}, Where(None, ""), {}
    )
    target = config.receivers["any"]
    assert target.kind == "apprise"
    notify_deliver.deliver(target, notify_messages.test_message("any"))
    (body,) = receiver.bodies
    assert "notify_test" in body["message"]


def test_without_apprise_such_a_receiver_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "apprise", None)  # import apprise -> ImportError
    with pytest.raises(ConfigError, match=r"edgemon-server\[notify\]"):
        notify_config.parse({"receiver": [{"name": "tg", "url": "json://localhost/x"}]}, Where(None, ""), {})


def test_killed_between_the_send_and_its_record_repeats_only_the_same_key(store, engine, receiver, monkeypatch):
    clock = Clock()
    first = notifier(engine, receiver, clock)
    fire(store, "d9", 1, [alert("disk_full", "disk-a", "critical", clock.t)], clock.t)
    first.enqueue()
    real = notify_deliver.deliver

    def deliver_then_die(target, body):
        real(target, body)
        raise SystemExit("killed after the receiver answered, before the commit")

    monkeypatch.setattr(notify, "deliver", deliver_then_die)
    with pytest.raises(SystemExit):
        first.send_due("ops")
    monkeypatch.setattr(notify, "deliver", real)
    second = notifier(engine, receiver, clock)  # the restarted server
    assert second.send_due("ops") == 0, "the row is leased to the sender that died"
    clock.t += 45  # past the lease (timeout + 30 s)
    assert second.send_due("ops") == 1
    assert second.send_due("ops") == 0
    assert len(receiver.bodies) == 2, "delivered twice: the kill came after the receiver took it"
    assert receiver.keys[0] == receiver.keys[1], "with the same key, so the receiver can drop the repeat"


def test_the_periodic_summary_goes_once_per_period(store, engine, receiver):
    clock = Clock()
    config = NotifyConfig(
        {"ops": Receiver("ops", receiver.url)}, (), {}, 600.0, summary_every=3600.0, summary_receivers=("ops",)
    )
    n = notify.Notifier(engine, config, clock)
    fire(store, "s1", 1, [alert("disk_full", "disk-a", "critical", clock.t)], clock.t)
    fire(store, "s2", 50, [], clock.t)
    cpu = {"cpu-percent": Metric("%", headline="CPU")}
    for device in ("s1", "s2"):
        store.write([Message(f"devices/{device}/meta", meta.encode(device, utc_timestamp(clock.t), cpu), clock.t)])
    assert n.enqueue_summary() == 1
    assert n.enqueue_summary() == 0, "once per period, whatever restarts"
    assert n.send_summaries("ops") == 1
    assert n.send_summaries("ops") == 0
    (body,) = receiver.bodies
    assert body["state"] == "summary"
    assert body["summary"]["devices"] == 2
    assert body["summary"]["firing"]["critical"] == 1
    assert body["summary"]["top_devices"] == [{"device": "s1", "firing": 1}]
    assert "2 devices" in body["message"]
    busiest = body["summary"]["top_by_headline"]["CPU"]
    assert [(b["device"], b["value"]) for b in busiest] == [("s2", 50.5), ("s1", 1.5)], "the busiest first"
    assert "top CPU: s2 50.5 %" in body["message"]
    clock.t += 3600
    assert n.enqueue_summary() == 1, "the next period's"


@pytest.mark.slow
def test_a_collector_sigkilled_between_the_send_and_its_record_repeats_only_that_key(
    receiver, collector_env, sqlite_url, tmp_path
):
    from sqlalchemy import func

    from edgemon_server.db import make_engine
    from edgemon_server.gaps import GapTracker
    from edgemon_server.store import Store
    from tests.server.conftest import CollectorProc

    cfg = tmp_path / "server.toml"
    cfg.write_text(
        f'[[notify.receiver]]\nname = "ops"\nurl = "{receiver.url}"\ntimeout = 1\n\n'
        '[[notify.route]]\nmatch = { rule = "disk_full" }\nreceivers = ["ops"]\ngroup_wait = "0s"\n'
    )
    env = collector_env(sqlite_url)
    first = CollectorProc(env, tmp_path / "first.log", ("-c", str(cfg))).start()
    first.wait_subscribed()
    engine = make_engine(sqlite_url)
    deadline = time.monotonic() + 20
    with engine.connect() as conn:  # the notifier has started: it counts from the newest event
        while not conn.execute(select(func.count()).select_from(Notification)).scalar() and time.monotonic() < deadline:
            time.sleep(0.1)
    receiver.gate = threading.Event()
    store = Store(engine, gaps=GapTracker(engine, resend_after=60))
    fire(store, "k9", 1, [alert("disk_full", "disk-a", "critical", time.time())], time.time())
    assert receiver.arrived.wait(20), first.log.read_text()
    first.stop(signal.SIGKILL)  # the receiver has it; the collector never hears its answer
    receiver.gate.set()
    with engine.connect() as conn:
        status = conn.execute(select(Notification.status).where(Notification.receiver == "ops")).scalar()
    assert status == "sending", "not recorded as sent"
    second = CollectorProc(env, tmp_path / "second.log", ("-c", str(cfg))).start()
    try:
        deadline = time.monotonic() + 60  # the dead sender's lease (timeout + 30 s) runs out first
        while len(receiver.tried) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # nothing more comes
    finally:
        second.stop()
    assert len(receiver.tried) == 2, "sent again once: never lost"
    assert receiver.tried[0] == receiver.tried[1], "with the same key, for the receiver to drop the repeat"
    with engine.connect() as conn:
        status = conn.execute(select(Notification.status).where(Notification.receiver == "ops")).scalar()
    assert status == "sent"
    engine.dispose()
