"""Alembic environment of the tasklens store. Run by :meth:`tasklens.store.Store.migrate` with its connection."""

from __future__ import annotations

from alembic import context

from tasklens import incident_store  # noqa: F401 - its tables are on the store's metadata
from tasklens.store import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - tasklens always passes its own connection (see Store.migrate)
    raise RuntimeError("run tasklens migrations through tasklens.store.Store.migrate()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite cannot ALTER most things: future migrations use batch operations
)
with context.begin_transaction():
    context.run_migrations()
