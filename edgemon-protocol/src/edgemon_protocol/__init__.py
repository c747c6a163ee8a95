"""edgemon's wire contract, shared by the agent (``edgemon``) and the server (``edgemon_server``).

- :mod:`~edgemon_protocol.ids`: device ids, metric keys, rule names.
- :mod:`~edgemon_protocol.topics`: the MQTT topics and the server's subscriptions.
- :mod:`~edgemon_protocol.payload`: the payload envelope, its JSON Schema and limits.
- :mod:`~edgemon_protocol.flatten`: nested metrics <-> dash-separated keys.
- :mod:`~edgemon_protocol.meta`: metric metadata (units, kinds, headlines).
- :mod:`~edgemon_protocol.commands`: server -> device commands.
- :mod:`~edgemon_protocol.mqtt`: connection settings, the awscrt client builder, error hints.
- :mod:`~edgemon_protocol.certs`, :mod:`~edgemon_protocol.config`, :mod:`~edgemon_protocol.logs`:
  certificate names, settings files and log lines, the same on both ends.

Only the standard library is imported at start-up; awscrt when a client is built.
"""

from __future__ import annotations

__version__ = "0.1.0"
