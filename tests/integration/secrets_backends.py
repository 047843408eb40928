"""A secrets backend for tests, configured like any other (``[secrets] backend`` / ``backend_kwargs``).

It serves the connections in its ``connections`` kwarg (conn_id -> JSON) and fails the first ``failures`` lookups
of each, as a secrets manager or the metadata database does during a blip.
"""

from __future__ import annotations

import collections
from typing import Any, ClassVar

from airflow.secrets.base_secrets import BaseSecretsBackend

__all__ = ["FlakySecretsBackend"]


class FlakySecretsBackend(BaseSecretsBackend):
    """Connections from kwargs; the first ``failures`` lookups of each raise ``ConnectionError``."""

    lookups: ClassVar[collections.Counter[str]] = collections.Counter()  # per process, across instances

    def __init__(self, connections: dict[str, str] | None = None, failures: int = 1, **kwargs: Any) -> None:
        super().__init__()
        self.connections = dict(connections or {})
        self.failures = int(failures)

    def get_conn_value(self, conn_id: str, team_name: str | None = None) -> str | None:
        if conn_id not in self.connections:
            return None
        FlakySecretsBackend.lookups[conn_id] += 1
        if FlakySecretsBackend.lookups[conn_id] <= self.failures:
            raise ConnectionError("secrets backend unavailable (simulated blip)")
        return self.connections[conn_id]

    def get_variable(self, key: str, team_name: str | None = None) -> str | None:
        return None
