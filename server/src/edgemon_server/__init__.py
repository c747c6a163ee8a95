"""edgemon server: collects agent payloads from MQTT, stores them, serves them.

Modules, in the order a payload meets them:

- :mod:`edgemon_server.collector`: MQTT subscription, bounded queue, writer thread.
- :mod:`edgemon_server.validate`: limits and schema checks; :mod:`edgemon_server.flatten`.
- :mod:`edgemon_server.store`: batched, idempotent writes with SQLAlchemy Core.
- :mod:`edgemon_server.db`: the models; :mod:`edgemon_server.migrations`: alembic.
"""

__version__ = "0.1.0"
