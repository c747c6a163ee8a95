"""Write deploy/aws/: the AWS IoT policies and the IoT rule, derived from edgemon_protocol.topics.

Every topic a device or a collector uses comes from the protocol module, so the policies cannot
drift from the code: tests/deploy/test_aws.py checks the files are this script's output and that
the policies allow exactly the topics the code uses.

AWS IoT policy facts the output relies on:

- ``iot:Publish`` and ``iot:Receive`` take ``topic/<name>`` resources, ``iot:Subscribe`` takes
  ``topicfilter/<filter>``, ``iot:Connect`` takes ``client/<client id>``;
- MQTT's ``+`` and ``#`` in a resource are plain characters; the policy wildcard is ``*``. A
  ``topicfilter`` resource with a literal ``#`` allows exactly that filter;
- ``${iot:Connection.Thing.ThingName}`` is the thing attached to the connecting certificate, and
  only when the client id is that thing's name: a device can then use its own topics only.

Run: ``.venv/bin/python scripts/gen_aws.py`` (``--check`` exits 1 when a file is out of date).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from edgemon_protocol import commands, topics

OUT = Path(__file__).resolve().parent.parent / "deploy" / "aws"
THING = "${iot:Connection.Thing.ThingName}"
ARN = "arn:aws:iot:REGION:ACCOUNT_ID"
"""Placeholders: docs/aws.md fills them with ``sed`` before ``aws iot create-policy``."""
COLLECTOR_PREFIX = "edgemon-collector-"
"""Collectors' client ids (one per collector process: the broker keeps one session per id)."""
SHARE_GROUP = "edgemon"
"""The shared-subscription group of the collectors (``EDGEMON_SHARED_GROUP``)."""
COMMANDS = commands.NAMES


def device_policy() -> dict[str, Any]:
    """A device: connect as its thing, publish its uplink, take its commands, nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ConnectAsItsThing",
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": f"{ARN}:client/{THING}",
                "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
            },
            {
                "Sid": "PublishItsUplink",
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": [f"{ARN}:topic/{topics.ROOT}/{THING}/{kind}" for kind in topics.UPLINK],
            },
            {
                "Sid": "SubscribeToItsCommands",
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": f"{ARN}:topicfilter/{topics.command_filter(THING)}",
            },
            {
                "Sid": "ReceiveItsCommands",
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": [f"{ARN}:topic/{topics.command(THING, name)}" for name in COMMANDS],
            },
        ],
    }


def collector_policy() -> dict[str, Any]:
    """A collector: read every device's uplink (plain or shared subscription), send commands."""
    every = "*"  # one topic level of any device id: the policy wildcard, never MQTT's +
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ConnectAsACollector",
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": f"{ARN}:client/{COLLECTOR_PREFIX}*",
            },
            {
                "Sid": "SubscribeToEveryDevicesUplink",
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": [
                    f"{ARN}:topicfilter/{topics.subscription(kind, group).replace('+', every)}"
                    for kind in topics.UPLINK
                    for group in ("", SHARE_GROUP)
                ],
            },
            {
                "Sid": "ReceiveEveryDevicesUplink",
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": [f"{ARN}:topic/{topics.ROOT}/{every}/{kind}" for kind in topics.UPLINK],
            },
            {
                "Sid": "SendCommands",
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": [f"{ARN}:topic/{topics.command(every, name)}" for name in COMMANDS],
            },
        ],
    }


def rule() -> dict[str, Any]:
    """An IoT rule: every device's payloads to an SQS queue (the scale path beside MQTT collectors)."""
    return {
        "sql": f"SELECT *, topic(2) AS device FROM '{topics.subscription(topics.MONITORING)}'",
        "awsIotSqlVersion": "2016-03-23",
        "ruleDisabled": False,
        "description": "edgemon: every device's monitoring payload to the ingest queue, with its device id",
        "actions": [
            {
                "sqs": {
                    "queueUrl": "https://sqs.REGION.amazonaws.com/ACCOUNT_ID/edgemon-ingest",
                    "roleArn": "arn:aws:iam::ACCOUNT_ID:role/edgemon-iot-to-sqs",
                    "useBase64": False,
                }
            }
        ],
        "errorAction": {
            "cloudwatchLogs": {
                "logGroupName": "/edgemon/iot-rule-errors",
                "roleArn": "arn:aws:iam::ACCOUNT_ID:role/edgemon-iot-to-sqs",
            }
        },
    }


FILES = {"device-policy.json": device_policy, "collector-policy.json": collector_policy, "ingest-rule.json": rule}


def render(name: str) -> str:
    """The text of ``deploy/aws/<name>``."""
    return json.dumps(FILES[name](), indent=2) + "\n"


def main() -> int:
    """Write (or with ``--check``, compare) every file."""
    stale = []
    for name in FILES:
        path = OUT / name
        text = render(name)
        if "--check" in sys.argv:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if stale:
        print("out of date: " + ", ".join(stale) + " (run scripts/gen_aws.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
