"""Who this device is to the broker, and whether its settings and clock can work: checked before connecting.

The MQTT client id is ``agent.client_id`` if set, else the certificate's CN, else the host name. The
certificate's validity is also the one time reference a device has before it talks to anyone.
"""

from __future__ import annotations

import logging
import os
import stat
import time

from edgemon.config import Config, ConfigError
from edgemon_protocol import topics
from edgemon_protocol.certs import subject_cn, validity
from edgemon_protocol.mqtt import check_transport
from edgemon_protocol.payload import utc_timestamp

log = logging.getLogger(__name__)


def check_settings(config: Config) -> str:
    """Check the MQTT settings and return the client id to use.

    The client id is ``agent.client_id`` if set, else the certificate's CN (a
    Mosquitto ACL with ``use_identity_as_username`` keys on it), else the host
    name. A configured id that differs from the CN gets a warning: normal on
    AWS IoT Core (the thing name), refused by a CN-keyed ACL.

    Raises:
        ConfigError: missing files, plain TCP to a non-loopback host.
    """
    mqtt = config.mqtt
    check_transport(mqtt)
    if mqtt.insecure_local:
        log.warning("MQTT without TLS to a loopback broker (insecure_local): for development only")
        return config.device_id
    for key in ("ca", "cert", "key"):
        path = getattr(mqtt, key)
        if not os.access(path, os.R_OK):
            raise ConfigError(f"mqtt.{key}: cannot read {path}")
    mode = os.stat(mqtt.key).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "private key is readable by group or others; chmod 600 it",
            extra={"path": mqtt.key, "reason": f"mode {stat.filemode(mode)}"},
        )
    try:
        cn = subject_cn(mqtt.cert)
        not_before, not_after = validity(mqtt.cert)
    except ValueError as exc:
        raise ConfigError(f"mqtt.cert: {mqtt.cert} is not a PEM certificate: {exc}") from exc
    check_clock(time.time(), not_before, not_after, mqtt.cert)
    if not config.agent.client_id:
        return cn or config.device_id
    if cn and cn != config.agent.client_id:
        log.warning(
            "client id differs from the certificate's CN",
            extra={
                "reason": (
                    f"client_id={config.agent.client_id!r} CN={cn!r}: fine on AWS IoT Core (thing name), "
                    f"but a broker whose ACL keys on the CN will refuse {topics.monitoring(config.agent.client_id)}"
                )
            },
        )
    return config.agent.client_id


def check_clock(now: float, not_before: float, not_after: float, cert: str) -> None:
    """Warn when this device's clock cannot be right, or its certificate has expired.

    The certificate's validity is the one time reference a device has before it talks to anyone:
    a clock before ``not_before`` (an RTC that lost its time: 1970 or 2000 after a flat battery)
    makes every TLS handshake fail with an unhelpful error, and so does an expired certificate.
    """
    if now < not_before - 300:
        log.warning(
            "the system clock is earlier than this device's certificate was issued: the clock is wrong "
            "(RTC not set? NTP not synchronised?) and TLS handshakes will fail until it is right",
            extra={
                "path": cert,
                "reason": f"now {utc_timestamp(now)}, certificate valid from {utc_timestamp(not_before)}",
            },
        )
    elif now > not_after:
        log.warning(
            "this device's certificate has expired (or the clock is ahead): the broker will refuse it",
            extra={"path": cert, "reason": f"now {utc_timestamp(now)}, valid until {utc_timestamp(not_after)}"},
        )
