"""``edgemon-server``: the command line of the server.

Commands::

    edgemon-server run [--config F]          collector + HTTP API (+ dashboard), one process
    edgemon-server collect [--config F]      the MQTT collector (storage only)
    edgemon-server api [--config F]          the read-only HTTP API alone
    edgemon-server db upgrade [--config F]   create or upgrade the schema (alembic)
    edgemon-server db current [--config F]   the schema revision of the database
    edgemon-server certs init [--dir D]      a local CA, broker and collector certificates, an ACL
    edgemon-server certs device NAME         a device certificate (CN = NAME; reserved names refused)
    edgemon-server certs collector NAME      another collector (edgemon-collector-<n>), added to the ACL

Settings: ``--config`` TOML file, then ``EDGEMON_*`` variables (``EDGEMON_DATABASE_URL``,
``EDGEMON_SHARED_GROUP``, ``EDGEMON_MQTT_*`` as for the agent), then flags.
Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from edgemon_protocol import logs
from edgemon_protocol.config import ConfigError
from edgemon_protocol.mqtt import is_loopback
from edgemon_server import __version__, cli_config, migrations
from edgemon_server.config import ServerConfig, api_token, load, split_bind
from edgemon_server.db import make_engine
from edgemon_server.gaps import GapTracker
from edgemon_server.params import ApiError, iso, parse_time
from edgemon_server.store import Store
from edgemon_server.validate import Limits

log = logging.getLogger("edgemon_server.cli")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", help="TOML file with [server] and [mqtt] sections")
    common.add_argument("--database-url", help="SQLAlchemy URL (default sqlite:///var/edgemon.db)")
    common.add_argument("--log-format", choices=["text", "json"])
    common.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser = argparse.ArgumentParser(prog="edgemon-server", description="edgemon server")
    parser.add_argument("--version", action="version", version=f"edgemon-server {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    mqtt = argparse.ArgumentParser(add_help=False)
    mqtt.add_argument("--shared-group", help="join the shared subscriptions $share/<group>/devices/+/...")
    mqtt.add_argument("--client-id", help="MQTT client id (default: the certificate's CN)")
    http = argparse.ArgumentParser(add_help=False)
    http.add_argument("--http-bind", help="host:port of the HTTP API (default 127.0.0.1:8000)")
    http.add_argument(
        "--no-auth", action="store_true", help="allow a non-loopback bind without a token (not recommended)"
    )
    sub.add_parser("run", parents=[common, mqtt, http], help="collector and HTTP API together")
    sub.add_parser("collect", parents=[common, mqtt], help="run the MQTT collector")
    sub.add_parser("api", parents=[common, http], help="run the HTTP API alone")
    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", parents=[common], help="create or upgrade the schema")
    db_sub.add_parser("current", parents=[common], help="print the schema revision")
    certs = sub.add_parser("certs", help="a local CA for a home lab (AWS IoT Core issues its own)")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True)
    init = certs_sub.add_parser("init", help="create the CA, broker and collector certificates and an ACL")
    init.add_argument("--dir", default="var/pki")
    init.add_argument("--broker-name", action="append", default=[], help="another host name of the broker (repeatable)")
    dev = certs_sub.add_parser("device", help="issue a device certificate")
    dev.add_argument("name")
    dev.add_argument("--dir", default="var/pki")
    col = certs_sub.add_parser("collector", help="issue another collector's certificate and allow it in the ACL")
    col.add_argument("name", help="edgemon-collector-<suffix>, e.g. edgemon-collector-2")
    col.add_argument("--dir", default="var/pki")
    silence = sub.add_parser("silence", help="mute notifications of matching alerts until a time")
    silence_sub = silence.add_subparsers(dest="silence_command", required=True)
    add = silence_sub.add_parser("add", parents=[common], help="add a silence (it always ends)")
    add.add_argument("--match", action="append", default=[], help="field=glob: device, rule, severity, key")
    add.add_argument("--until", required=True, help="end: ISO 8601 (UTC without an offset) or epoch seconds")
    add.add_argument("--comment", default="", help="why (shown next to the alerts it mutes)")
    silence_sub.add_parser("list", parents=[common], help="silences in force")
    expire = silence_sub.add_parser("expire", parents=[common], help="end a silence now")
    expire.add_argument("id", type=int)
    notify = sub.add_parser("notify", help="notifications")
    notify_sub = notify.add_subparsers(dest="notify_command", required=True)
    ntest = notify_sub.add_parser("test", parents=[common], help="send a test message to a receiver")
    ntest.add_argument("receiver")
    cli_config.add_parsers(sub, common)
    maintain = sub.add_parser(
        "maintain", parents=[common], help="roll up, recompute late buckets, apply [retention], once"
    )
    maintain.add_argument(
        "--vacuum",
        action="store_true",
        help="SQLite: rewrite the file once with auto_vacuum=INCREMENTAL (older files; stop writers first)",
    )
    return parser


def _certs(args: argparse.Namespace) -> int:
    from edgemon_server.pki import LocalCA, check_device_name, mosquitto_conf  # noqa: PLC0415 - cryptography here only

    ca = LocalCA(args.dir)
    print(
        "note: for your own broker only; AWS IoT Core issues device certificates itself",
        file=sys.stderr,
    )
    if args.certs_command == "init":
        if ca.exists():
            print(f"edgemon-server: {ca.ca_path} exists; not overwriting", file=sys.stderr)
            return 2
        ca.init(broker_names=tuple(args.broker_name))
        (ca.dir / "mosquitto.conf").write_text(mosquitto_conf(ca, 8883, ca.dir.resolve() / "mosquitto"))
        print(f"CA, broker (localhost) and collector certificates, an ACL and a mosquitto.conf in {ca.dir}")
        return 0
    if not ca.exists():
        print(f"edgemon-server: no CA in {ca.dir}: run 'edgemon-server certs init' first", file=sys.stderr)
        return 2
    try:
        if args.certs_command == "collector":
            cert, key = ca.add_collector(args.name)
        else:
            check_device_name(args.name)
            cert, key = ca.issue(args.name)
    except (ValueError, FileExistsError) as exc:
        print(f"edgemon-server: {exc}", file=sys.stderr)
        return 2
    print(f"{cert}\n{key}")
    return 0


def _config(args: argparse.Namespace) -> ServerConfig:
    server = {
        key: getattr(args, key, None)
        for key in ("database_url", "log_format", "log_level", "shared_group", "client_id", "http_bind")
    }
    return load(args.config, overrides={"server": server, "mqtt": {}})


def limits_of(config: ServerConfig) -> Limits:
    """The validation limits of ``[server]``."""
    s = config.server
    return Limits(s.max_payload_kb * 1024, s.max_depth, s.max_leaves, s.max_future_s)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``edgemon-server``."""
    args = _parser().parse_args(argv)
    if args.command == "certs":
        return _certs(args)
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"edgemon-server: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.server.log_level, config.server.log_format, loggers=("edgemon", "edgemon_server"))
    try:
        engine = make_engine(config.server.database_url)
        if args.command == "db":
            if args.db_command == "upgrade":
                migrations.upgrade(engine)
            print(f"{migrations.current(engine) or 'empty'} (head: {migrations.head()})")
            return 0
        migrations.upgrade(engine)
        if args.command == "silence":
            return _silence(args, engine)
        if args.command == "notify":
            return _notify_test(config, args.receiver)
        if args.command == "config":
            return cli_config.run(args, engine)
        if args.command == "maintain":
            from edgemon_server import rollups  # noqa: PLC0415

            if args.vacuum and engine.dialect.name == "sqlite":
                with engine.connect() as c:
                    c.exec_driver_sql("PRAGMA auto_vacuum=INCREMENTAL")
                    c.exec_driver_sql("VACUUM")
            report = rollups.maintain(engine, config.retention)
            print(" ".join(f"{k}={v}" for k, v in report.items()))
            return 1 if report.get("partitions_default") else 0
        if args.command == "collect":
            return _collect(config, engine)
        return _serve(config, engine, with_collector=args.command == "run", no_auth=args.no_auth)
    except ConfigError as exc:
        print(f"edgemon-server: configuration error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        log.error("database error", extra={"reason": str(exc).splitlines()[0][:300]})
        return 1


def _silence(args: argparse.Namespace, engine: Any) -> int:
    from edgemon_server import silences  # noqa: PLC0415

    now = time.time()
    if args.silence_command == "add":
        matchers = {}
        for item in args.match:
            name, sep, glob = item.partition("=")
            if not sep or not glob:
                print(f"edgemon-server: --match {item!r}: use field=glob, e.g. device=press-*", file=sys.stderr)
                return 2
            matchers[name.strip()] = glob.strip()
        try:
            until = parse_time(args.until, "until", round(now * 1000)) / 1000
            silence_id = silences.add_silence(engine, matchers, until, args.comment, now)
        except ApiError as exc:
            print(f"edgemon-server: {exc.message}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"edgemon-server: {exc}", file=sys.stderr)
            return 2
        print(f"silence {silence_id} until {iso(round(until * 1000))}")
        return 0
    if args.silence_command == "expire":
        if not silences.expire_silence(engine, args.id, now):
            print(f"edgemon-server: no silence {args.id} in force", file=sys.stderr)
            return 1
        print(f"silence {args.id} expired")
        return 0
    with engine.connect() as conn:
        for s in silences.active_silences(conn, round(now * 1000)):
            match = " ".join(f"{k}={v}" for k, v in s["matchers"].items())
            print(f"{s['id']:>5}  until {iso(s['ends'])}  {match}  {s['comment']}")
    return 0


def _notify_test(config: ServerConfig, receiver: str) -> int:
    from edgemon_server.notify_deliver import deliver  # noqa: PLC0415
    from edgemon_server.notify_messages import test_message  # noqa: PLC0415

    target = config.notify.receivers.get(receiver)
    if target is None:
        known = ", ".join(sorted(config.notify.receivers)) or "none configured"
        print(f"edgemon-server: no receiver {receiver!r} ([[notify.receiver]]: {known})", file=sys.stderr)
        return 2
    try:
        deliver(target, test_message(receiver))
    except Exception as exc:  # noqa: BLE001 - the outcome is what the operator asked for
        print(
            f"edgemon-server: {receiver} ({target.kind}) did not take it: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 1
    print(f"{receiver} ({target.kind}): delivered")
    return 0


def _serve(config: ServerConfig, engine: Any, with_collector: bool, no_auth: bool) -> int:
    from waitress.server import create_server  # noqa: PLC0415

    from edgemon_server.api import DASHBOARD, ApiSettings, create_app  # noqa: PLC0415

    host, port = split_bind(config.server.http_bind)
    token = api_token(config.server)
    if not is_loopback(host) and not token:
        if not no_auth:
            raise ConfigError(
                f"server.http_bind: {host} is not a loopback address and no API token is set "
                "(EDGEMON_API_TOKEN or api_token_file); refusing to serve fleet data without auth "
                "(--no-auth to do it anyway)"
            )
        log.warning("HTTP API without authentication on a non-loopback address", extra={"reason": host})
    collector = None
    if with_collector:
        from edgemon_server.collector import Collector  # noqa: PLC0415

        collector = Collector(config, Store(engine, limits_of(config), GapTracker(engine, config.server.resend_after)))
    settings = ApiSettings(
        token=token,
        cors_origins=tuple(config.server.cors_origins),
        rate_limit=config.server.rate_limit,
        online_factor=config.server.online_factor,
    )
    dashboard = Path(config.server.dashboard_dir) if config.server.dashboard_dir else DASHBOARD
    app = create_app(engine, settings, (lambda: collector.stats) if collector is not None else None, dashboard)
    server = create_server(app, host=host, port=port, threads=8, ident="edgemon")
    done = threading.Event()

    def stop(*_: Any) -> None:
        done.set()
        server.close()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    if collector is not None:
        collector.on_fatal = lambda _reason: stop()
        collector.start()
    actual = getattr(server, "effective_port", port)
    log.info("HTTP API listening", extra={"reason": f"http://{host}:{actual}/"})
    print(f"edgemon-server: http://{host}:{actual}/", flush=True)
    try:
        server.run()
    except OSError:  # closed by stop()
        if not done.is_set():
            raise
    if collector is not None:
        collector.stop()
        if collector.stats.fatal:
            return EXIT_WRITER_FAILED
    return 0


EXIT_WRITER_FAILED = 70
"""Exit status when the collector's writer died (EX_SOFTWARE): a supervisor restarts the process."""


def _collect(config: ServerConfig, engine: Any) -> int:
    from edgemon_server.collector import Collector  # noqa: PLC0415 - awscrt only where it is used

    gaps = GapTracker(engine, config.server.resend_after)
    collector = Collector(config, Store(engine, limits_of(config), gaps))
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    collector.on_fatal = lambda _reason: done.set()
    collector.start()
    log.info(
        "collector started", extra={"topic": " ".join(collector.topics), "reason": f"client id {collector.client_id}"}
    )
    done.wait()
    collector.stop()
    if collector.stats.fatal:
        return EXIT_WRITER_FAILED
    st = collector.stats
    log.info(
        "collector stopped",
        extra={
            "reason": f"received {st.received} stored {st.stored} duplicates {st.duplicates} rejected {st.rejected}"
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
