"""``edgemon-agent``: the command line of the agent.

Commands::

    edgemon-agent once [--config F]          one cycle, payload JSON on stdout, no network
    edgemon-agent run [--output stdout]      the daemon loop
    edgemon-agent plugins [--json]           discovered plugins and their status
    edgemon-agent plugins test NAME          one plugin's sub-tree, checked against the payload rules
    edgemon-agent describe                   the metric metadata document (units, kinds, headlines)
    edgemon-agent rules [--json]             alert rules and their alerts as the running agent saved them
    edgemon-agent rules test                 one live cycle judged by every rule (ignoring `for`)
    edgemon-agent check-config [--config F]  every check ``run`` makes before connecting; prints the result
    edgemon-agent status [--json]            the send buffer and the connection (reads only)
    edgemon-agent new-plugin NAME [--dir D]  a plugin distribution to start from (passes its own test)

``-c/--config`` may come before or after the sub-command. Exit codes: 0 success,
1 runtime failure, 2 bad configuration or usage, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from edgemon import __version__, cli_rules, isolate, metadata
from edgemon.agent import Agent
from edgemon.config import Config, ConfigError, load
from edgemon.daemon import Daemon, output_of
from edgemon.plugin_check import run_collectors
from edgemon.plugins import allowed_from_env
from edgemon_protocol import logs

log = logging.getLogger("edgemon.cli")


def _parser() -> argparse.ArgumentParser:
    # Every option defaults to SUPPRESS, so that one given before the sub-command (``-c F plugins``)
    # is not overwritten by the sub-command's default, and ``plugins -c F test X`` keeps F.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--config", "-c", help="TOML file (default: $EDGEMON_CONFIG or /etc/edgemon/agent.toml)")
    common.add_argument("--client-id", help="device id (default: host name)")
    common.add_argument("--interval", type=float, help="seconds between payloads")
    common.add_argument("--timeout", type=float, help="default per-collector timeout, seconds")
    common.add_argument("--state-dir", help="directory for seq and the send buffer")
    common.add_argument("--log-format", choices=["text", "json"])
    common.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    parser = argparse.ArgumentParser(
        prog="edgemon-agent", description="edgemon device agent", parents=[common], conflict_handler="resolve"
    )
    parser.add_argument("--version", action="version", version=f"edgemon-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("once", parents=[common], help="collect one cycle and print the payload")
    mqtt = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    mqtt.add_argument("--mqtt-endpoint", help="broker host name")
    mqtt.add_argument("--mqtt-port", type=int, help="broker port (default 8883)")
    mqtt.add_argument("--mqtt-ca", help="CA bundle (PEM) that signed the broker's certificate")
    mqtt.add_argument("--mqtt-cert", help="this device's certificate (PEM)")
    mqtt.add_argument("--mqtt-key", help="this device's private key (PEM)")
    mqtt.add_argument(
        "--insecure-local", action="store_const", const=True, help="plain TCP to a loopback broker (development)"
    )
    run = sub.add_parser("run", parents=[common, mqtt], help="collect every interval until stopped")
    run.add_argument(
        "--output", choices=["auto", "stdout", "mqtt"], help="where payloads go (auto: mqtt if configured)"
    )
    status = sub.add_parser("status", parents=[common], help="send buffer and connection state of the agent")
    status.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    plugins = sub.add_parser("plugins", parents=[common], help="list plugins")
    plugins.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    psub = plugins.add_subparsers(dest="plugins_command")
    ptest = psub.add_parser("test", parents=[common], help="run one plugin's collectors once")
    ptest.add_argument("name")
    sub.add_parser("check-config", parents=[common], help="validate and print the effective configuration")
    new = sub.add_parser("new-plugin", help="write a new plugin distribution (edgemon-NAME/) that passes its test")
    new.add_argument("name", help="lowercase words joined by '-', e.g. room-sensors")
    new.add_argument("--dir", default=".", help="where to create edgemon-NAME/ (default: here)")
    sub.add_parser("describe", parents=[common], help="print the metric metadata document the agent sends")
    rules = sub.add_parser("rules", parents=[common], help="alert rules and their state")
    rules.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    rsub = rules.add_subparsers(dest="rules_command")
    rsub.add_parser("test", parents=[common], help="judge one live cycle: what would fire now")
    return parser


def _config(args: argparse.Namespace, remote_doc: Mapping[str, Any] | None = None, remote_version: int = 0) -> Config:
    agent = {
        key: getattr(args, key, None)
        for key in ("client_id", "interval", "timeout", "state_dir", "log_format", "log_level", "output")
    }
    mqtt = {
        "endpoint": getattr(args, "mqtt_endpoint", None),
        "port": getattr(args, "mqtt_port", None),
        "ca": getattr(args, "mqtt_ca", None),
        "cert": getattr(args, "mqtt_cert", None),
        "key": getattr(args, "mqtt_key", None),
        "insecure_local": getattr(args, "insecure_local", None),
    }
    return load(
        getattr(args, "config", None),
        overrides={"agent": agent, "mqtt": mqtt},
        remote_doc=remote_doc,
        remote_version=remote_version,
    )


class _LogStdout(io.TextIOBase):
    """``sys.stdout`` while the agent runs: what plugins print goes to the log, one record per line.

    stdout carries payloads (``once``, ``run --output stdout``); a plugin's ``print`` must not
    corrupt them. The plugin is named when the line comes from a thread running its code.
    """

    def __init__(self) -> None:
        super().__init__()
        self._partial: dict[int, str] = {}
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        ident = threading.get_ident()
        with self._lock:
            buffered = self._partial.pop(ident, "") + text
            *lines, rest = buffered.split("\n")
            if rest:
                self._partial[ident] = rest[-4096:]
        for line in lines:
            if line.strip():
                log.warning(
                    "plugin wrote to stdout", extra={"plugin": isolate.current_plugin() or "?", "reason": line[:500]}
                )
        return len(text)


@contextlib.contextmanager
def _payload_stream() -> Iterator[TextIO]:
    """Yield the stream payloads and command output go to; route all other stdout writes to the log.

    At the file-descriptor level too: fd 1 is pointed at stderr for the duration, so a plugin's
    native library writing to fd 1 cannot corrupt the payload stream either.
    """
    original = sys.stdout
    out: TextIO = original
    saved_fd = None
    if original is sys.__stdout__ and original is not None:
        try:
            original.flush()
            saved_fd = os.dup(1)
            out = os.fdopen(os.dup(saved_fd), "w", encoding="utf-8")
            os.dup2(2, 1)
        except OSError:  # no usable fd 1 (closed): plain stdout is all there is
            saved_fd = None
            out = original
    sys.stdout = _LogStdout()
    try:
        yield out
    finally:
        sys.stdout = original
        if saved_fd is not None:
            out.flush()
            out.close()
            os.dup2(saved_fd, 1)
            os.close(saved_fd)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    args = _parser().parse_args(argv)  # before stdout is guarded: --help and --version print to it
    try:
        with _payload_stream() as out:
            return _main(args, out)
    except KeyboardInterrupt:
        print("edgemon-agent: interrupted", file=sys.stderr)
        return 130


def _main(args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "new-plugin":
        return _new_plugin(args.name, Path(args.dir))
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"edgemon-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.agent.log_level, config.agent.log_format, config.device_id)
    # Only `run` keeps alert state: a one-shot command beside a running agent must not write its file.
    agent = Agent(config, allowed=allowed_from_env(), keep_alert_state=args.command == "run")
    try:
        return _dispatch(args, agent, out)
    except ConfigError as exc:
        print(f"edgemon-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    finally:
        agent.close()


def _dispatch(args: argparse.Namespace, agent: Agent, out: TextIO) -> int:
    as_json = getattr(args, "json", False)
    if args.command == "check-config":
        return _check_config(agent, out)
    if args.command == "status":
        return _status(agent.config, as_json, out)
    if args.command == "plugins" and args.plugins_command == "test":
        return _plugins_test(agent, args.name, out)
    if args.command == "plugins":
        return _plugins_list(agent, as_json, out)
    if args.command == "rules":
        if getattr(args, "rules_command", None) == "test":
            return cli_rules.test_rules(agent, out)
        return cli_rules.list_rules(agent, as_json, out)
    if args.command == "describe":
        agent.start()
        out.write(agent.describe().decode() + "\n")
        return 0
    if args.command == "once":
        agent.start()
        payload, _body = agent.cycle_body()
        print(json.dumps(payload, indent=2, allow_nan=False), file=out)
        return 0
    return Daemon(agent, out, lambda doc, version: _config(args, doc, version)).run()


def _new_plugin(name: str, parent: Path) -> int:
    from edgemon.scaffold import ScaffoldError, new_plugin  # noqa: PLC0415 - a developer's command

    try:
        root = new_plugin(name, parent)
    except ScaffoldError as exc:
        print(f"edgemon-agent: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {root}: cd {root} && pip install -e '.[test]' && pytest", file=sys.stderr)
    return 0


def _check_config(agent: Agent, out: TextIO) -> int:
    """Every check ``run`` does before it connects: the file, the plugins' settings, the MQTT files and identity."""
    agent.load()
    config = agent.config
    device_id = config.device_id
    output = output_of(config)
    if output == "mqtt":
        from edgemon.identity import check_settings  # noqa: PLC0415 - only in MQTT mode

        device_id = check_settings(config)
    failed = {n: r.reason for n, r in agent.records.items() if r.status == "failed"}
    result = {
        "source": config.source,
        "agent": asdict(config.agent),
        "mqtt": {k: v for k, v in asdict(config.mqtt).items() if k != "key"} if output == "mqtt" else None,
        "output": output,
        "device_id": device_id,
        "plugins": agent.settings,
        "failed_plugins": failed,
    }
    print(json.dumps(result, indent=2, sort_keys=True, default=str), file=out)
    for name, reason in failed.items():
        print(f"edgemon-agent: plugin {name} failed to load: {reason}", file=sys.stderr)
    return 0


def _plugins_list(agent: Agent, as_json: bool, out: TextIO) -> int:
    agent.load()
    agent.start()  # startup decides "unavailable"
    records = list(agent.records.values())
    if as_json:
        collectors = {c.name: {"plugin": c.plugin} for c in agent.collectors}
        described = {pattern: m.to_json() for pattern, m in metadata.document(agent.collectors).items()}
        doc = {"plugins": [r.to_json() for r in records], "collectors": collectors, "metrics": described}
        print(json.dumps(doc, indent=2, ensure_ascii=False), file=out)
        return 0
    width = max(len(r.name) for r in records)
    for r in records:
        kind = "builtin" if r.builtin else f"{r.dist} {r.version}"
        line = f"{r.name:<{width}}  {r.status:<11}  {kind}"
        if r.reason:
            line += f"  ({r.reason})"
        print(line, file=out)
        if r.hooks:
            print(f"{'':<{width}}  hooks: {', '.join(r.hooks)}", file=out)
    return 0


def _plugins_test(agent: Agent, name: str, out: TextIO) -> int:
    """Run one plugin's collectors once; print its sub-tree; report what breaks the payload rules.

    Needs nothing beyond the agent: the checks are the agent's own (``edgemon.sanitize``).
    """
    agent.load()
    record = agent.records.get(name)
    if record is None:
        print(f"edgemon-agent: no plugin named {name!r} (see 'edgemon-agent plugins')", file=sys.stderr)
        return 2
    agent.start()
    if record.status != "loaded":
        print(f"edgemon-agent: plugin {name} is {record.status}: {record.reason}", file=sys.stderr)
        return 1
    checked = run_collectors(agent, name, agent.config.agent.timeout)
    for trace in checked.tracebacks:
        print(trace, file=sys.stderr)
    tree, problems, collectors = checked.tree, checked.problems, checked.collectors
    print(json.dumps(tree, indent=2, allow_nan=False), file=out)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if not collectors:
        print(f"edgemon-agent: plugin {name} registers no collector", file=sys.stderr)
    elif not tree:
        print(f"edgemon-agent: plugin {name} produced nothing", file=sys.stderr)
    return 1 if problems or not tree else 0


def _status(config: Config, as_json: bool, out: TextIO) -> int:
    """Print the send buffer and the running agent's connection state; reads only, changes nothing."""
    import sqlite3  # noqa: PLC0415 - the stdout mode never loads SQLite

    from edgemon.buffer import inspect  # noqa: PLC0415

    state = Path(config.agent.state_dir)
    path = state / "buffer.db"
    if not path.exists():
        print(f"edgemon-agent: no send buffer in {state} (has the agent run in MQTT mode?)", file=sys.stderr)
        return 1
    result: dict[str, Any] = {"state_dir": str(state)}
    try:
        info = inspect(path)
    except sqlite3.Error as exc:
        reason = f"{type(exc).__name__}: {exc}"
        result["buffer_error"] = f"{path}: {reason} (left as it is; the agent moves a corrupt file aside)"
        info = {}
    created = info.get("oldest_created")
    age = time.time() - created if created is not None else None
    result.update(
        {
            "buffered": info.get("buffered"),
            "buffered_bytes": info.get("buffered_bytes"),
            "oldest_unsent_age_s": round(age, 1) if age is not None else None,
            "dropped": info.get("dropped"),
            "last_seq": info.get("last_seq"),
        }
    )
    try:
        transport = json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        transport = {"state": "unknown (no status.json)"}
    if transport.get("updated") and time.time() - transport["updated"] > 30 and transport.get("state") != "stopped":
        transport["state"] = f"{transport.get('state')} (stale: agent not running?)"
    result["connection"] = transport
    try:
        saved = json.loads((state / "remote_config.json").read_text())
        applied = saved.get("applied") or {}
        result["remote_config"] = {
            "version": applied.get("version", 0),
            "expires_at": applied.get("expires_at"),
            "awaiting_confirmation": "confirm_after" in saved,
            "rejected": saved.get("rejected", 0),
        }
    except (OSError, ValueError, AttributeError):
        result["remote_config"] = {"version": 0}
    if as_json:
        print(json.dumps(result, indent=2), file=out)
        return 1 if "buffer_error" in result else 0
    if "buffer_error" in result:
        print(f"buffer:      UNREADABLE: {result['buffer_error']}", file=out)
    else:
        sizes = f"{result['buffered']} payloads, {result['buffered_bytes']} bytes, dropped {result['dropped']}"
        print(f"buffer:      {sizes}", file=out)
        print(f"oldest:      {result['oldest_unsent_age_s'] if age is not None else '-'} s", file=out)
    health = transport.get("buffer") or {}
    if health and not health.get("disk_ok", True):
        print(f"disk:        FAILING: {health.get('disk_error')}; {health.get('in_memory')} held in memory", file=out)
    print(f"connection:  {transport.get('state')}", file=out)
    print(f"last error:  {transport.get('last_error') or '-'}", file=out)
    counters = ("published", "acked", "failed", "refused_too_large", "connects", "connect_failures")
    print("counters:    " + ", ".join(f"{k}={transport.get(k, 0)}" for k in counters), file=out)
    remote = result["remote_config"]
    if remote.get("version") or remote.get("rejected"):
        extra = [
            f"until {remote['expires_at']}" if remote.get("expires_at") else "",
            "awaiting a payload to confirm it" if remote.get("awaiting_confirmation") else "",
            f"refused v{remote['rejected']}" if remote.get("rejected") else "",
        ]
        print(f"remote config: v{remote['version']} " + "; ".join(e for e in extra if e), file=out)
    return 1 if "buffer_error" in result else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
