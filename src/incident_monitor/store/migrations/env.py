"""Alembic environment: runs on the connection store.migrate hands it (inside its locked transaction)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from incident_monitor.store import engine as _engine  # noqa: F401  (registers every table on the metadata)


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through incident_monitor.store.migrate (incident-monitor db upgrade)")
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        # SQLite alters tables by copying them; batch mode does that inside the same transaction.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


# Alembic runs this file inside a migration (its context then has a config); a plain import does nothing.
if hasattr(context, "config"):
    run_migrations()
