"""``edgemon-server config push | status | rollouts``: remote configuration from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from edgemon_protocol.alerting import parse_duration
from edgemon_protocol.config import ConfigError, Where
from edgemon_server import fleet_config
from edgemon_server.params import ApiError, iso, parse_time


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``config`` command and its subcommands."""
    config = sub.add_parser("config", help="remote configuration of devices: push, status, rollouts")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    push = config_sub.add_parser(
        "push", parents=[common], help="set the fleet's, a group's or a device's layer from a TOML file"
    )
    target = push.add_mutually_exclusive_group(required=True)
    target.add_argument("--all", action="store_true", help="the fleet's layer (every device)")
    target.add_argument("--group", metavar="NAME", help="a group's layer (devices whose id matches --match)")
    target.add_argument("--device", metavar="ID", help="one device's layer")
    push.add_argument("--match", metavar="GLOB", help="the device ids of a new group (press-*)")
    push.add_argument("--match-tag", metavar="NAME=VALUE", help="or the devices of a new group by tag (site=berlin)")
    push.add_argument("--canary", default="0%", help="share of the devices that get it first (5%%); 0%%: all at once")
    push.add_argument("--wait", default="15m", help="how long the canary runs before the rest get it (15m)")
    push.add_argument(
        "--abort-on-rejects", type=int, default=1, help="canary rejects or rollbacks that abort the rollout (1)"
    )
    push.add_argument("--expires", help="an override's end: a time, or +DURATION (+1h); the devices revert then")
    push.add_argument(
        "file",
        help="a TOML file in the agent's vocabulary: [agent], [mqtt] drain_rate, [plugins.<name>], [alerts]",
    )
    status = config_sub.add_parser("status", parents=[common], help="per device: desired and applied version")
    status.add_argument("--device", action="append", help="only these devices")
    status.add_argument("--json", action="store_true", help="as JSON")
    config_sub.add_parser("rollouts", parents=[common], help="the newest rollouts and their state")


def run(args: argparse.Namespace, engine: Any) -> int:
    """Carry out ``config <subcommand>``; 0 done, 1 drift or failure to report, 2 bad input."""
    if args.config_command == "push":
        return _push(args, engine)
    with engine.connect() as conn:
        if args.config_command == "rollouts":
            for r in fleet_config.rollouts(conn):
                target = {"fleet": "all", "group": f"group {r['name']}", "device": f"device {r['name']}"}[r["scope"]]
                print(f"{r['id']:>5}  {iso(r['created'])}  {target:<24} {r['state']:<9} {r['reason']}")
            return 0
        rows = fleet_config.status(conn, args.device)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'device':<32} {'desired':>7} {'applied':>7}  status       error")
        for r in rows:
            mark = "  DRIFT" if r["drift"] else ""
            print(
                f"{r['device']:<32} {r['desired_version'] or '-':>7} {r['applied_version'] or '-':>7}  "
                f"{r['status'] or '-':<12} {r['error'] or ''}{mark}"
            )
    return 1 if any(r["drift"] for r in rows) else 0


def _push(args: argparse.Namespace, engine: Any) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
        document = tomllib.loads(text)
        canary = float(str(args.canary).rstrip("%"))
        wait = parse_duration(args.wait)
        now_ms = round(time.time() * 1000)
        expires = None
        if args.expires and args.expires.startswith("+"):  # "+1h": from now on
            expires = now_ms + round(parse_duration(args.expires[1:]) * 1000)
        elif args.expires:
            expires = parse_time(args.expires, "expires", now_ms)
        if expires is not None and expires <= now_ms:
            raise ValueError("--expires must be in the future")
        if not 0 <= canary <= 100:
            raise ValueError("--canary: a share between 0% and 100%")
        if args.match_tag and "=" not in args.match_tag:
            raise ValueError("--match-tag: name=value")
        scope, name = ("fleet", "") if args.all else ("group", args.group) if args.group else ("device", args.device)
        rollout = fleet_config.push(
            engine,
            scope,
            name,
            document,
            where=Where(str(path), text),
            match=f"tag:{args.match_tag}" if args.match_tag else args.match,
            canary_percent=canary,
            wait_s=wait,
            abort_on_rejects=args.abort_on_rejects,
            expires_at=expires,
            now_ms=now_ms,
        )
    except OSError as exc:
        print(f"edgemon-server: {path}: cannot read: {exc.strerror}", file=sys.stderr)
        return 2
    except tomllib.TOMLDecodeError as exc:
        print(f"edgemon-server: {path}: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"edgemon-server: {exc.message}", file=sys.stderr)
        return 2
    except (ConfigError, ValueError) as exc:
        print(f"edgemon-server: {exc}", file=sys.stderr)
        return 2
    print(f"rollout {rollout['id']}: {rollout['state']} ({rollout['reason']})")
    return 0
