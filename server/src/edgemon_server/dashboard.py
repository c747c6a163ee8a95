"""The built dashboard, served at ``/`` with client-side routes falling back to ``index.html``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import jsonify, send_from_directory

from edgemon_server.params import ApiError

DASHBOARD = Path(__file__).parent / "static"
"""Where ``npm run build`` in ``frontend/`` puts the dashboard."""


def _is_file(directory: Path, path: str) -> bool:
    """``path`` names a file of the built dashboard (a name too long for the file system is not one)."""
    if len(path) > 1024:
        return False
    try:
        return (directory / path).is_file()
    except OSError:  # ENAMETOOLONG, ELOOP
        return False


def dashboard_view(directory: Path) -> Callable[..., Any]:
    """The view serving the dashboard built in ``directory`` (``/`` and ``/<path>``)."""

    def serve(path: str = "") -> Any:
        if path.startswith("api/"):
            raise ApiError(404, f"no such endpoint: /{path[:200]}")
        if not (directory / "index.html").is_file():
            return jsonify({"error": "the dashboard is not built: run `make run` or `npm run build` in frontend/"}), 404
        if path and _is_file(directory, path):
            response = send_from_directory(directory, path)
            if path.startswith("assets/"):  # content-hashed file names
                response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
            return response
        response = send_from_directory(directory, "index.html")  # client-side routes
        response.headers["Cache-Control"] = "no-cache"
        return response

    return serve
