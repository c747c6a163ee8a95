"""The dashboard tests use the server fixtures."""

from tests.server.conftest import collector_env, sqlite_url  # noqa: F401 - fixtures
