"""Who may call the API, and how: its settings, the bearer-token check, the headers on every response."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from flask import current_app, request


@dataclass(frozen=True)
class ApiSettings:
    """What the API needs from ``[server]``."""

    token: str = ""
    cors_origins: tuple[str, ...] = ()
    rate_limit: str = "600 per minute"
    online_factor: float = 3.0


def authorized() -> bool:
    """The request carries the API token (or none is configured)."""
    token: str = current_app.extensions["edgemon_api"].token
    if not token:
        return True
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    return hmac.compare_digest(given.encode(), token.encode())


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # The dashboard is one script and one style sheet from this origin; uPlot draws on a canvas.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    ),
}
"""On every response."""
