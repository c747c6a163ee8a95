"""``[notify]`` in the server's TOML: receivers and the routes that choose them.

::

    [[notify.receiver]]
    name = "ops"
    url_env = "EDGEMON_OPS_WEBHOOK"       # or url = "...", url_file = "..."

    [[notify.route]]
    match = { severity = "critical" }     # on device, rule, severity, key, "tag.site" (globs)
    receivers = ["ops"]
    send_resolved = true
    group_by = ["device", "rule"]         # one notification per device and rule (default: per alert)
    group_wait = "30s"                    # a new group waits this long for more of its alerts
    group_interval = "5m"                 # then sends what changed at most this often
    repeat_interval = "4h"                # and reminds of what still fires this often

A receiver's kind comes from its URL: ``https://hooks.slack.com/...`` is a Slack incoming webhook,
``ntfy://host/topic`` (or ``ntfys://``) an ntfy topic, ``smtp://`` or ``smtps://`` e-mail
(``smtp://user:password@host:587/?to=ops@example.com&from=edgemon@example.com``), any other
``http(s)://`` a generic JSON webhook, and any other scheme an apprise URL. Secrets come from a
file or a variable; a URL written in the file itself is accepted for
local receivers only (``localhost``, ``127.0.0.1``). Every error names the file, the line and the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgemon_protocol.alerting import parse_duration
from edgemon_protocol.config import ConfigError, Where
from edgemon_protocol.ids import RULE_RE

MATCH_FIELDS = ("device", "rule", "severity", "key")
KINDS = ("webhook", "slack", "ntfy", "smtp", "apprise")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
GROUP_LABELS = MATCH_FIELDS


@dataclass(frozen=True)
class Receiver:
    """Where notifications go."""

    name: str
    url: str = field(repr=False)
    kind: str = "webhook"
    timeout: float = 10.0


@dataclass(frozen=True)
class Route:
    """Which alerts go to which receivers, and how they are grouped (every matching route applies).

    Alerts with the same values of ``group_by`` form a group, notified together: the first
    ``group_wait`` after the group began, then what changed at most every ``group_interval``, and what
    still fires again every ``repeat_interval``. The default groups by every field: one alert a group.
    """

    match: Mapping[str, str]
    receivers: tuple[str, ...]
    send_resolved: bool = True
    mute_time_intervals: tuple[str, ...] = ()
    group_by: tuple[str, ...] = GROUP_LABELS
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 4 * 3600.0


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class TimeInterval:
    """When notifications of a route are muted (``[[notify.time_interval]]``), in a time zone.

    ``weekdays`` (``["monday:friday", "sunday"]``) and ``times`` (``[{start = "01:00", end = "02:00"}]``,
    end excluded) must both hold; an empty list holds always.
    """

    name: str
    weekdays: frozenset[int] = frozenset()
    times: tuple[tuple[int, int], ...] = ()
    """(start, end) in minutes after midnight."""
    location: str = "UTC"

    def contains(self, epoch: float) -> bool:
        """Whether ``epoch`` falls in the interval (local time of ``location``)."""
        from datetime import datetime  # noqa: PLC0415
        from zoneinfo import ZoneInfo  # noqa: PLC0415

        local = datetime.fromtimestamp(epoch, ZoneInfo(self.location))
        if self.weekdays and local.weekday() not in self.weekdays:
            return False
        minute = local.hour * 60 + local.minute
        return not self.times or any(start <= minute < end for start, end in self.times)


@dataclass(frozen=True)
class NotifyConfig:
    """The ``[notify]`` section."""

    receivers: Mapping[str, Receiver] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    time_intervals: Mapping[str, TimeInterval] = field(default_factory=dict)
    late_after: float = 600.0
    """Transitions that reach the server this many seconds after they happened go out as one digest."""
    summary_every: float = 0.0
    """Seconds between two fleet summaries (``[notify.summary] every``); 0: none."""
    summary_receivers: tuple[str, ...] = ()


def kind_of(url: str) -> str:
    """The receiver kind a URL means (see the module docstring)."""
    parts = urlsplit(url)
    if parts.scheme in ("ntfy", "ntfys"):
        return "ntfy"
    if parts.scheme in ("smtp", "smtps"):
        return "smtp"
    if parts.hostname == "hooks.slack.com":
        return "slack"
    if parts.scheme in ("http", "https"):
        return "webhook"
    return "apprise"


APPRISE_MISSING = "needs apprise: pip install 'edgemon-server[notify]'"


def load_apprise() -> Any:
    """Import the optional apprise (raises ``ImportError``); its own deprecation warnings are not ours."""
    import warnings  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise  # noqa: PLC0415 - the optional extra, only when such a receiver is configured
    return apprise


def parse(raw: Any, where: Where, environ: Mapping[str, str] | None = None) -> NotifyConfig:
    """Read ``[notify]``.

    Raises:
        ConfigError: naming the file, line and key.
    """
    if raw is None:
        return NotifyConfig()
    env = os.environ if environ is None else environ
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.at('notify', None)}[notify] must be a table")
    for key in raw:
        if key not in ("receiver", "route", "time_interval", "late_after", "summary"):
            raise ConfigError(
                f"{where.at('notify', key)}unknown key notify.{key} (known: late_after, receiver, route, time_interval)"
            )
    receivers: dict[str, Receiver] = {}
    for i, table in enumerate(_tables(raw, "receiver", where)):
        receiver = _receiver(table, i, where, env)
        if receiver.name in receivers:
            raise ConfigError(f"{where.at_table('notify.receiver', i, 'name')}notify.receiver: {receiver.name!r} twice")
        receivers[receiver.name] = receiver
    intervals = {}
    for i, table in enumerate(_tables(raw, "time_interval", where)):
        interval = _interval(table, i, where)
        intervals[interval.name] = interval
    routes = tuple(_route(t, i, where, receivers, intervals) for i, t in enumerate(_tables(raw, "route", where)))
    late_after = raw.get("late_after", "10m")
    try:
        late = parse_duration(late_after)
    except ValueError as exc:
        raise ConfigError(f"{where.at('notify', 'late_after')}notify.late_after: {exc}") from None
    every, to = _summary(raw.get("summary"), where, receivers)
    return NotifyConfig(receivers, routes, intervals, late, every, to)


def _summary(table: Any, where: Where, receivers: Mapping[str, Receiver]) -> tuple[float, tuple[str, ...]]:
    """``[notify.summary] every = "24h", receivers = [...]`` (default: every receiver)."""
    if table is None:
        return 0.0, ()
    if not isinstance(table, dict) or set(table) - {"every", "receivers"}:
        raise ConfigError(f"{where.at('notify.summary', None)}[notify.summary]: keys are every, receivers")
    try:
        every = parse_duration(table.get("every", "24h"))
    except ValueError as exc:
        raise ConfigError(f"{where.at('notify.summary', 'every')}notify.summary.every: {exc}") from None
    if every < 60:
        raise ConfigError(f"{where.at('notify.summary', 'every')}notify.summary.every: at least 1m")
    names = table.get("receivers", list(receivers))
    if not isinstance(names, list) or not all(isinstance(n, str) and n in receivers for n in names):
        raise ConfigError(f"{where.at('notify.summary', 'receivers')}notify.summary.receivers: names of receivers")
    return every, tuple(names)


def _interval(table: Mapping[str, Any], i: int, where: Where) -> TimeInterval:
    def at(key: str | None) -> str:
        return where.at_table("notify.time_interval", i, key if key in table else None)

    known = {"name", "weekdays", "times", "location"}
    for key in table:
        if key not in known:
            raise ConfigError(f"{at(key)}unknown key notify.time_interval.{key} (known: {', '.join(sorted(known))})")
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{at('name')}notify.time_interval.name is required")
    days: set[int] = set()
    for item in table.get("weekdays", []):
        first, _, last = str(item).lower().partition(":")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ConfigError(f"{at('weekdays')}notify.time_interval.weekdays: {item!r} is not a day or day:day")
        a, b = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    times = []
    for item in table.get("times", []):
        try:
            start, end = (_minutes(item[k]) for k in ("start", "end"))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f'{at("times")}notify.time_interval.times: {{start = "HH:MM", end = "HH:MM"}}') from None
        if end <= start:
            raise ConfigError(f"{at('times')}notify.time_interval.times: end must be after start")
        times.append((start, end))
    location = table.get("location", "UTC")
    try:
        from zoneinfo import ZoneInfo  # noqa: PLC0415

        ZoneInfo(str(location))
    except (ValueError, OSError, KeyError) as exc:
        raise ConfigError(f"{at('location')}notify.time_interval.location: {location!r}: {exc}") from None
    return TimeInterval(name, frozenset(days), tuple(times), str(location))


def _minutes(text: Any) -> int:
    hours, _, minutes = str(text).partition(":")
    value = int(hours) * 60 + int(minutes)
    if not 0 <= value <= 24 * 60 or len(minutes) != 2:
        raise ValueError(text)
    return value


def _tables(raw: Mapping[str, Any], name: str, where: Where) -> list[dict[str, Any]]:
    tables = raw.get(name, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{where.at('notify', name)}notify.{name}: use [[notify.{name}]] tables")
    return tables


def _receiver(table: Mapping[str, Any], i: int, where: Where, env: Mapping[str, str]) -> Receiver:
    def at(key: str | None) -> str:
        return where.at_table("notify.receiver", i, key if key in table else None)

    known = {"name", "url", "url_env", "url_file", "timeout"}
    for key in table:
        if key not in known:
            raise ConfigError(f"{at(key)}unknown key notify.receiver.{key} (known: {', '.join(sorted(known))})")
    name = table.get("name")
    if not isinstance(name, str) or not RULE_RE.fullmatch(name):
        raise ConfigError(f"{at('name')}notify.receiver.name: lower-case letters, digits, _ and . are required")
    given = [k for k in ("url", "url_env", "url_file") if k in table]
    if len(given) != 1:
        raise ConfigError(f"{at(None)}notify.receiver {name!r}: give exactly one of url, url_env, url_file")
    source = given[0]
    value = table[source]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{at(source)}notify.receiver.{source}: expected a string")
    if source == "url_env":
        if value not in env:
            raise ConfigError(f"{at(source)}notify.receiver {name!r}: variable {value} is not set")
        url = env[value].strip()
    elif source == "url_file":
        try:
            url = Path(value).read_text(encoding="utf-8").strip().splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ConfigError(f"{at(source)}notify.receiver {name!r}: cannot read a URL from {value}: {exc}") from None
    else:
        url = value
        host = urlsplit(url).hostname or ""
        if host not in LOCAL_HOSTS:
            raise ConfigError(
                f"{at(source)}notify.receiver {name!r}: a URL with a secret in it belongs in url_env or url_file "
                "(url is for a local receiver only)"
            )
    scheme = urlsplit(url).scheme
    if not scheme:
        raise ConfigError(f"{at(source)}notify.receiver {name!r}: not a URL")
    if kind_of(url) == "smtp":
        from edgemon_server.notify_deliver import mail_settings  # noqa: PLC0415 - it imports this module

        try:
            mail_settings(url)
        except ValueError as exc:
            raise ConfigError(f"{at(source)}notify.receiver {name!r}: {exc}") from None
    if kind_of(url) == "apprise":
        try:
            apprise = load_apprise()
        except ImportError:
            raise ConfigError(f"{at(source)}notify.receiver {name!r}: {scheme}:// {APPRISE_MISSING}") from None
        if apprise.Apprise.instantiate(url) is None:
            raise ConfigError(f"{at(source)}notify.receiver {name!r}: apprise does not understand {scheme}:// here")
    timeout = table.get("timeout", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.1 <= timeout <= 120:
        raise ConfigError(f"{at('timeout')}notify.receiver.timeout: seconds between 0.1 and 120")
    return Receiver(name, url, kind_of(url), float(timeout))


def _route(
    table: Mapping[str, Any],
    i: int,
    where: Where,
    receivers: Mapping[str, Receiver],
    intervals: Mapping[str, TimeInterval],
) -> Route:
    def at(key: str | None) -> str:
        return where.at_table("notify.route", i, key if key in table else None)

    known = {
        "match",
        "receivers",
        "send_resolved",
        "mute_time_intervals",
        "group_by",
        "group_wait",
        "group_interval",
        "repeat_interval",
    }
    for key in table:
        if key not in known:
            raise ConfigError(f"{at(key)}unknown key notify.route.{key} (known: {', '.join(sorted(known))})")
    match = table.get("match", {})
    if not isinstance(match, dict) or not all(
        (k in MATCH_FIELDS or k.startswith("tag.")) and isinstance(v, str) for k, v in match.items()
    ):
        raise ConfigError(
            f'{at("match")}notify.route.match: a table of {", ".join(MATCH_FIELDS)}, "tag.<name>" = "glob"'
        )
    names = table.get("receivers")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{at('receivers')}notify.route.receivers: a list of receiver names is required")
    for n in names:
        if n not in receivers:
            raise ConfigError(f"{at('receivers')}notify.route: no receiver named {n!r}")
    send_resolved = table.get("send_resolved", True)
    if not isinstance(send_resolved, bool):
        raise ConfigError(f"{at('send_resolved')}notify.route.send_resolved: true or false")
    mutes = table.get("mute_time_intervals", [])
    if not isinstance(mutes, list) or not all(isinstance(m, str) and m in intervals for m in mutes):
        raise ConfigError(
            f"{at('mute_time_intervals')}notify.route.mute_time_intervals: names of [[notify.time_interval]]"
        )
    group_by = table.get("group_by", list(GROUP_LABELS))
    if (
        not isinstance(group_by, list)
        or not all(g in GROUP_LABELS for g in group_by)
        or len(set(group_by)) < len(group_by)
    ):
        raise ConfigError(f"{at('group_by')}notify.route.group_by: a list of {', '.join(GROUP_LABELS)}, each once")
    times = {}
    for key, default, least in (
        ("group_wait", "30s", 0.0),
        ("group_interval", "5m", 1.0),
        ("repeat_interval", "4h", 60.0),
    ):
        try:
            times[key] = parse_duration(table.get(key, default))
        except ValueError as exc:
            raise ConfigError(f"{at(key)}notify.route.{key}: {exc}") from None
        if times[key] < least:
            raise ConfigError(f"{at(key)}notify.route.{key}: at least {least:g} s")
    return Route(
        dict(match),
        tuple(names),
        send_resolved,
        tuple(mutes),
        tuple(g for g in GROUP_LABELS if g in group_by),
        times["group_wait"],
        times["group_interval"],
        times["repeat_interval"],
    )
