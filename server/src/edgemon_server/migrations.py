"""Schema migrations with alembic, run from code (``edgemon-server db upgrade|current``)."""

from __future__ import annotations

import random
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

HERE = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine | None = None) -> Config:
    """An alembic configuration (no alembic.ini needed), bound to ``engine`` when given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head", attempts: int = 5) -> None:
    """Bring the schema to ``revision`` (idempotent).

    Several collectors starting at once on a new database race to create it;
    the losers' DDL fails, and they retry, finding the winner's schema.
    """
    for attempt in range(attempts):
        try:
            command.upgrade(alembic_config(engine), revision)
            return
        except DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * 0.5)


def current(engine: Engine) -> str | None:
    """The schema revision of the database (``None``: empty database)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str | None:
    """The newest revision this code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
