"""``edgemon-agent``: the command line of the agent.

Commands::

    edgemon-agent once [--config F]          one cycle, payload JSON on stdout, no network
    edgemon-agent run [--output stdout]      the daemon loop
    edgemon-agent plugins [--json]           discovered plugins and their status
    edgemon-agent plugins test NAME          one plugin's sub-tree, checked against the schema
    edgemon-agent check-config [--config F]  validate and print the effective configuration

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgemon import __version__, logs
from edgemon import payload as payload_mod
from edgemon.agent import Agent
from edgemon.collect import CollectorRunner
from edgemon.config import Config, ConfigError, load
from edgemon.plugins import allowed_from_env

log = logging.getLogger("edgemon.cli")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", help="TOML file (default: $EDGEMON_CONFIG or /etc/edgemon/agent.toml)")
    common.add_argument("--client-id", help="device id (default: host name)")
    common.add_argument("--interval", type=float, help="seconds between payloads")
    common.add_argument("--timeout", type=float, help="default per-collector timeout, seconds")
    common.add_argument("--state-dir", help="directory for seq and the send buffer")
    common.add_argument("--log-format", choices=["text", "json"])
    common.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    parser = argparse.ArgumentParser(prog="edgemon-agent", description="edgemon device agent")
    parser.add_argument("--version", action="version", version=f"edgemon-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("once", parents=[common], help="collect one cycle and print the payload")
    mqtt = argparse.ArgumentParser(add_help=False)
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
    status.add_argument("--json", action="store_true", help="machine-readable output")
    plugins = sub.add_parser("plugins", parents=[common], help="list plugins")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    psub = plugins.add_subparsers(dest="plugins_command")
    ptest = psub.add_parser("test", parents=[common], help="run one plugin's collectors once")
    ptest.add_argument("name")
    sub.add_parser("check-config", parents=[common], help="validate and print the effective configuration")
    return parser


def _config(args: argparse.Namespace) -> Config:
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
    return load(args.config, overrides={"agent": agent, "mqtt": mqtt})


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"edgemon-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.agent.log_level, config.agent.log_format, config.device_id)
    agent = Agent(config, allowed=allowed_from_env())
    try:
        return _dispatch(args, agent)
    except ConfigError as exc:
        print(f"edgemon-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    finally:
        agent.close()


def _dispatch(args: argparse.Namespace, agent: Agent) -> int:
    if args.command == "check-config":
        agent.load()
        out = {
            "source": agent.config.source,
            "agent": asdict(agent.config.agent),
            "device_id": agent.config.device_id,
            "plugins": agent.settings,
        }
        print(json.dumps(out, indent=2, sort_keys=True, default=str))
        return 0
    if args.command == "status":
        return _status(agent.config, args.json)
    if args.command == "plugins" and args.plugins_command == "test":
        return _plugins_test(agent, args.name)
    if args.command == "plugins":
        return _plugins_list(agent, args.json)
    if args.command == "once":
        agent.start()
        print(json.dumps(agent.cycle(), indent=2, allow_nan=False))
        return 0
    return _run(agent)


def _plugins_list(agent: Agent, as_json: bool) -> int:
    agent.load()
    agent.start()  # startup decides "unavailable"
    records = list(agent.records.values())
    if as_json:
        units = {c.name: {"plugin": c.plugin, "units": dict(c.units)} for c in agent.collectors}
        print(json.dumps({"plugins": [r.to_json() for r in records], "collectors": units}, indent=2))
        return 0
    width = max(len(r.name) for r in records)
    for r in records:
        kind = "builtin" if r.builtin else f"{r.dist} {r.version}"
        line = f"{r.name:<{width}}  {r.status:<11}  {kind}"
        if r.reason:
            line += f"  ({r.reason})"
        print(line)
        if r.hooks:
            print(f"{'':<{width}}  hooks: {', '.join(r.hooks)}")
    return 0


def _plugins_test(agent: Agent, name: str) -> int:
    agent.load()
    record = agent.records.get(name)
    if record is None:
        print(f"edgemon-agent: no plugin named {name!r} (see 'edgemon-agent plugins')", file=sys.stderr)
        return 2
    agent.start()
    if record.status != "loaded":
        print(f"edgemon-agent: plugin {name} is {record.status}: {record.reason}", file=sys.stderr)
        return 1
    runner = CollectorRunner([c for c in agent.collectors if c.plugin == name], agent.config.agent.timeout)
    try:
        tree = agent.collect_metrics(runner)
    finally:
        runner.close()
    print(json.dumps(tree, indent=2, allow_nan=False))
    probe = payload_mod.build(agent.device_id, 0, agent.clock(), agent.config.agent.interval, tree)
    errors = payload_mod.validation_errors(probe)
    for error in errors:
        print(f"schema: {error}", file=sys.stderr)
    failed = any(s.errors or s.timeouts for s in runner.stats.values())
    if not tree:
        print(f"edgemon-agent: plugin {name} produced nothing", file=sys.stderr)
    return 1 if errors or not tree or failed else 0


def _run(agent: Agent) -> int:
    config = agent.config
    output = config.agent.output
    if output == "auto":
        output = "mqtt" if config.mqtt.endpoint else "stdout"
    sink: Callable[[dict[str, Any]], None]
    mqtt_sink = None
    if output == "mqtt":
        from edgemon.transport import MqttSink, check_settings  # noqa: PLC0415 - only in MQTT mode

        agent.device_id = check_settings(config)
        agent.start()
        mqtt_sink = MqttSink(config, agent.device_id)
        agent.extra_metrics["transport"] = mqtt_sink.metrics
        mqtt_sink.start()
        sink = mqtt_sink
    else:
        agent.start()

        def sink(payload: dict[str, Any]) -> None:
            sys.stdout.write(payload_mod.dumps(payload) + "\n")
            sys.stdout.flush()

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("stopping", extra={"reason": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        agent.run(sink, stop)
    finally:
        if mqtt_sink is not None:
            mqtt_sink.stop()
    return 0


def _status(config: Config, as_json: bool) -> int:
    """Print the send buffer and the running agent's connection state."""
    from edgemon.buffer import Buffer  # noqa: PLC0415

    state = Path(config.agent.state_dir)
    if not (state / "buffer.db").exists():
        print(f"edgemon-agent: no send buffer in {state} (has the agent run in MQTT mode?)", file=sys.stderr)
        return 1
    buffer = Buffer(state / "buffer.db", int(config.agent.buffer_max_mb * 1024 * 1024))
    try:
        age = buffer.oldest_age()
        out: dict[str, Any] = {
            "state_dir": str(state),
            "buffered": len(buffer),
            "buffered_bytes": buffer.size_bytes,
            "oldest_unsent_age_s": round(age, 1) if age is not None else None,
            "dropped": buffer.dropped,
        }
    finally:
        buffer.close()
    try:
        transport = json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        transport = {"state": "unknown (no status.json)"}
    if transport.get("updated") and time.time() - transport["updated"] > 30 and transport.get("state") != "stopped":
        transport["state"] = f"{transport.get('state')} (stale: agent not running?)"
    out["connection"] = transport
    if as_json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"buffer:      {out['buffered']} payloads, {out['buffered_bytes']} bytes, dropped {out['dropped']}")
    print(f"oldest:      {out['oldest_unsent_age_s'] if age is not None else '-'} s")
    print(f"connection:  {transport.get('state')}")
    print(f"last error:  {transport.get('last_error') or '-'}")
    counters = ("published", "acked", "failed", "refused_too_large", "connects", "connect_failures")
    print("counters:    " + ", ".join(f"{k}={transport.get(k, 0)}" for k in counters))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
