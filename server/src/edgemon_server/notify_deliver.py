"""Delivery: one notification body to one receiver, by the receiver's kind; raises unless it was taken.

Built in with the standard library: a generic JSON webhook, a Slack incoming webhook, an ntfy topic
and e-mail over SMTP. Anything else goes through apprise (the optional extra ``edgemon-server[notify]``).
Every send carries the notification's key: ``Idempotency-Key`` over HTTP, the ``Message-ID`` of a mail,
so a receiver can drop the one repeat a crash between its answer and our record can cause.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.request
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from edgemon_server.notify_config import LOCAL_HOSTS, Receiver, load_apprise
from edgemon_server.notify_messages import text


def deliver(receiver: Receiver, body: Mapping[str, Any]) -> None:
    """Send one notification; raise on anything but a 2xx answer (or an accepted mail) within the timeout."""
    if receiver.kind == "apprise":
        sender = load_apprise().Apprise()  # the optional extra (checked when the configuration was read)
        sender.add(receiver.url)
        if not sender.notify(title=f"edgemon: {body['rule']} {body['state']}", body=text(body)):
            raise OSError(f"apprise could not deliver to {urlsplit(receiver.url).scheme}://")
        return
    if receiver.kind == "smtp":
        send_mail(receiver, body)
        return
    headers = {"Idempotency-Key": str(body["id"]), "User-Agent": "edgemon-server"}
    if receiver.kind == "slack":
        data = json.dumps({"text": text(body)}).encode()
        url, headers["Content-Type"] = receiver.url, "application/json"
    elif receiver.kind == "ntfy":
        parts = urlsplit(receiver.url)
        url = urlunsplit(("https" if parts.scheme == "ntfys" else "http", parts.netloc, parts.path, "", ""))
        data = text(body).encode()
        headers["Title"] = f"edgemon: {body['rule']} {body['state']}"
        headers["Priority"] = {"critical": "5", "warning": "4"}.get(str(body["severity"]), "3")
    else:
        data = json.dumps(body).encode()
        url, headers["Content-Type"] = receiver.url, "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=receiver.timeout) as response:
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status}")


def mail_settings(url: str) -> dict[str, Any]:
    """``smtp[s]://[user[:password]@]host[:port]/?to=a@x,b@y&from=edgemon@x`` as its parts.

    ``smtps`` is TLS from the start (port 465 by default); ``smtp`` (port 587) upgrades with STARTTLS and
    refuses to go on without it, except to a local relay (``localhost``). ``to`` is required.

    Raises:
        ValueError: no ``to``, or a query key that is not ``to`` or ``from``.
    """
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    unknown = set(query) - {"to", "from"}
    if unknown:
        raise ValueError(f"unknown parameter {sorted(unknown)[0]!r} (to, from)")
    to = [a.strip() for value in query.get("to", []) for a in value.split(",") if a.strip()]
    if not to:
        raise ValueError("?to=address[,address] is required")
    host = parts.hostname or ""
    return {
        "tls": parts.scheme == "smtps",
        "host": host,
        "port": parts.port or (465 if parts.scheme == "smtps" else 587),
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "to": to,
        "from": query.get("from", [f"edgemon@{host}"])[0],
        "local": host in LOCAL_HOSTS,
    }


def send_mail(receiver: Receiver, body: Mapping[str, Any]) -> None:
    """One mail: the line of :func:`text` as its subject, the JSON body as its text, the key in its Message-ID."""
    cfg = mail_settings(receiver.url)
    mail = EmailMessage()
    mail["Subject"] = f"edgemon: {text(body)}"[:250]
    mail["From"] = cfg["from"]
    mail["To"] = ", ".join(cfg["to"])
    domain = cfg["from"].rpartition("@")[2] or "edgemon"
    mail["Message-ID"] = f"<edgemon-{body['id']}.{receiver.name}@{domain}>"  # the same for a repeat of one send
    mail.set_content(text(body) + "\n\n" + json.dumps(body, indent=2, sort_keys=True) + "\n")
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if cfg["tls"]:
        smtp = smtplib.SMTP_SSL(cfg["host"], cfg["port"], timeout=receiver.timeout, context=context)
    else:
        smtp = smtplib.SMTP(cfg["host"], cfg["port"], timeout=receiver.timeout)
    with smtp:
        if not cfg["tls"]:
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
            elif not cfg["local"]:
                raise OSError(f"{cfg['host']} offers no STARTTLS: not sending credentials and alerts in clear text")
        if cfg["user"]:
            smtp.login(cfg["user"], cfg["password"])
        smtp.send_message(mail)
