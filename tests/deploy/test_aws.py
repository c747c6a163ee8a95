"""deploy/aws/: the AWS IoT policies allow exactly the topics the code uses, derived from the protocol."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

import pytest

from edgemon_protocol import commands, topics
from tests.conftest import REPO, load_script

THING = "press-17"
OTHER = "press-18"


GEN = load_script("gen_aws")


def policy(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((REPO / "deploy" / "aws" / name).read_text(encoding="utf-8"))
    return doc


def resources(statement: dict[str, Any], thing: str) -> list[str]:
    """A statement's resources with the policy variable of the connecting thing filled in."""
    listed = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
    return [r.replace(GEN.THING, thing).replace(GEN.ARN + ":", "") for r in listed]


def matches(pattern: str, resource: str) -> bool:
    """IAM resource matching: ``*`` any run of characters (``/`` included), ``?`` one; ``+``/``#`` literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, resource) is not None


def allows(doc: dict[str, Any], action: str, resource: str, thing: str = THING) -> bool:
    for st in doc["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        if st["Effect"] == "Allow" and action in actions and any(matches(p, resource) for p in resources(st, thing)):
            return True
    return False


@pytest.mark.parametrize("name", sorted(GEN.FILES))
def test_the_files_are_the_generators_output(name):
    written = (REPO / "deploy" / "aws" / name).read_text(encoding="utf-8")
    assert written == GEN.render(name), "out of date: run `python scripts/gen_aws.py`"


def test_a_device_may_use_exactly_its_own_topics():
    doc = policy("device-policy.json")
    uplink = [topics.monitoring(THING), topics.meta(THING), topics.alerts(THING), topics.config(THING)]
    parsed = [topics.parse(t) for t in uplink]
    assert {p.kind for p in parsed if p is not None} == set(topics.UPLINK), "every uplink kind the protocol has"
    for topic in uplink:
        assert allows(doc, "iot:Publish", f"topic/{topic}")
        assert not allows(doc, "iot:Publish", f"topic/{topic.replace(THING, OTHER)}"), "not as another device"
    assert allows(doc, "iot:Connect", f"client/{THING}")
    assert not allows(doc, "iot:Connect", f"client/{OTHER}")
    assert allows(doc, "iot:Subscribe", f"topicfilter/{topics.command_filter(THING)}")
    for name in commands.NAMES:
        assert allows(doc, "iot:Receive", f"topic/{topics.command(THING, name)}")
        assert not allows(doc, "iot:Publish", f"topic/{topics.command(THING, name)}"), "no forged commands"
        assert not allows(doc, "iot:Receive", f"topic/{topics.command(OTHER, name)}")
    for denied in (
        ("iot:Subscribe", f"topicfilter/{topics.subscription(topics.MONITORING)}"),  # everyone's payloads
        ("iot:Subscribe", f"topicfilter/{topics.ROOT}/{THING}/#"),
        ("iot:Subscribe", f"topicfilter/{topics.command_filter(OTHER)}"),
        ("iot:Publish", f"topic/{topics.ROOT}/{THING}/other"),
        ("iot:Receive", f"topic/{topics.monitoring(OTHER)}"),
    ):
        assert not allows(doc, *denied), denied


def test_the_device_policy_lists_nothing_beyond_the_protocols_topics():
    doc = policy("device-policy.json")
    granted = {(st["Action"], r) for st in doc["Statement"] for r in resources(st, THING)}
    assert granted == {
        ("iot:Connect", f"client/{THING}"),
        *{("iot:Publish", f"topic/{topics.ROOT}/{THING}/{kind}") for kind in topics.UPLINK},
        ("iot:Subscribe", f"topicfilter/{topics.command_filter(THING)}"),
        *{("iot:Receive", f"topic/{topics.command(THING, n)}") for n in commands.NAMES},
    }


def test_a_collector_reads_every_device_and_sends_only_commands():
    doc = policy("collector-policy.json")
    assert allows(doc, "iot:Connect", "client/edgemon-collector-1")
    assert not allows(doc, "iot:Connect", f"client/{THING}"), "a collector cannot take over a device's session"
    for kind in topics.UPLINK:
        for group in ("", GEN.SHARE_GROUP):
            assert allows(doc, "iot:Subscribe", f"topicfilter/{topics.subscription(kind, group)}")
        assert allows(doc, "iot:Receive", f"topic/{topics.ROOT}/{THING}/{kind}")
        assert not allows(doc, "iot:Publish", f"topic/{topics.ROOT}/{THING}/{kind}"), "no forged device data"
    for name in commands.NAMES:
        assert allows(doc, "iot:Publish", f"topic/{topics.command(THING, name)}")
    for st in doc["Statement"]:
        for r in resources(st, THING):
            if r.startswith("topic/"):
                assert not set("+#") & set(r), f"{r}: MQTT wildcards are literal in a topic resource"


def test_the_ingest_rule_reads_what_devices_publish():
    rule = policy("ingest-rule.json")
    assert f"FROM '{topics.subscription(topics.MONITORING)}'" in rule["sql"], "rule SQL takes an MQTT filter"
    assert rule["actions"][0]["sqs"]["queueUrl"].endswith("/edgemon-ingest")


TOPIC_FUNCTIONS = {
    "monitoring",
    "meta",
    "alerts",
    "config",  # device uplink: PublishItsUplink
    "command_filter",  # device subscription: SubscribeToItsCommands
    "command",  # collector -> device: SendCommands / ReceiveItsCommands (commands.NAMES)
    "subscription",  # collector subscriptions: SubscribeToEveryDevicesUplink
    "commands",
    "command_name",
    "parse",
    "device_acl",
    "collector_acl",  # no topic of their own
}


def test_no_code_builds_a_topic_the_policies_were_not_derived_for():
    """A new ``topics.xxx(...)`` call in the agent or server must be added to the policies (and here)."""
    used: set[str] = set()
    literals: list[str] = []
    for root in ("edgemon-core/src", "server/src", "plugins"):
        for path in (REPO / root).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docstrings = {
                id(node.value)
                for node in ast.walk(tree)
                if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            }
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "topics"
                ):
                    used.add(node.func.attr)
                elif (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in docstrings
                    and (node.value.startswith(f"{topics.ROOT}/") or f"/{topics.COMMANDS}/" in node.value)
                ):
                    literals.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value[:60]!r}")
    assert "monitoring" in used, "the scan found the code's topic calls"
    assert used <= TOPIC_FUNCTIONS, used - TOPIC_FUNCTIONS
    assert literals == [], "topics are built by edgemon_protocol.topics only"
