"""Alembic environment for the SPHERE metadata store.

Programmatic use (``sphere_core.storage.db``) hands us a live connection in
``config.attributes["connection"]``; developer use (``alembic -c infra/alembic.ini``)
takes ``sqlalchemy.url`` from the ini, else ``$SPHERE_DATABASE_URL``, else SQLite in
``$SPHERE_HOME``. SQLite runs with ``render_as_batch`` and transactional DDL (our engine
emits BEGIN itself) with foreign keys off during the migration, as batch mode needs.
"""

from __future__ import annotations

import logging.config

from alembic import context

from sphere_core.storage.db import make_engine, resolve_database_url
from sphere_core.storage.models import Base

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.get_section("loggers") is not None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def _configure(connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=sqlite,
        transactional_ddl=True if sqlite else None,
    )


def _run(connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:  # PRAGMA foreign_keys is a no-op inside a transaction: set it on the raw connection
        connection.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")
    try:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        if sqlite:
            connection.connection.driver_connection.execute("PRAGMA foreign_keys = ON")


def run_migrations_offline() -> None:
    context.configure(
        url=resolve_database_url(config.get_main_option("sqlalchemy.url") or None),
        target_metadata=target_metadata,
        literal_binds=True,
        compare_type=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(resolve_database_url(config.get_main_option("sqlalchemy.url") or None))
    try:
        with engine.connect() as conn:
            conn.execution_options(sphere_write=True)
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
