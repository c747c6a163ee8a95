"""``edgemon-server``: the command line of the server.

Commands::

    edgemon-server collect [--config F]      the MQTT collector (storage only)
    edgemon-server db upgrade [--config F]   create or upgrade the schema (alembic)
    edgemon-server db current [--config F]   the schema revision of the database

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
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from edgemon import logs
from edgemon.config import ConfigError
from edgemon_server import __version__, migrations
from edgemon_server.config import ServerConfig, load
from edgemon_server.db import make_engine
from edgemon_server.gaps import GapTracker
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
    collect = sub.add_parser("collect", parents=[common], help="run the MQTT collector")
    collect.add_argument("--shared-group", help="join $share/<group>/devices/+/monitoring")
    collect.add_argument("--client-id", help="MQTT client id (default: the certificate's CN)")
    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", parents=[common], help="create or upgrade the schema")
    db_sub.add_parser("current", parents=[common], help="print the schema revision")
    return parser


def _config(args: argparse.Namespace) -> ServerConfig:
    server = {
        key: getattr(args, key, None)
        for key in ("database_url", "log_format", "log_level", "shared_group", "client_id")
    }
    return load(args.config, overrides={"server": server, "mqtt": {}})


def limits_of(config: ServerConfig) -> Limits:
    """The validation limits of ``[server]``."""
    s = config.server
    return Limits(s.max_payload_kb * 1024, s.max_depth, s.max_leaves, s.max_future_s)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``edgemon-server``."""
    args = _parser().parse_args(argv)
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
        return _collect(config, engine)
    except ConfigError as exc:
        print(f"edgemon-server: configuration error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        log.error("database error", extra={"reason": str(exc).splitlines()[0][:300]})
        return 1


def _collect(config: ServerConfig, engine: Any) -> int:
    from edgemon_server.collector import Collector  # noqa: PLC0415 - awscrt only where it is used

    gaps = GapTracker(engine, config.server.resend_after)
    collector = Collector(config, Store(engine, limits_of(config), gaps))
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    collector.start()
    log.info("collector started", extra={"topic": collector.topic, "reason": f"client id {collector.client_id}"})
    done.wait()
    collector.stop()
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
