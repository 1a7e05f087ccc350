"""Database fixtures shared by the storage tests (imported by test_store*.py, test_migrations.py).

``database_url`` is parametrised over SQLite (a file in tmp_path) and PostgreSQL (a fresh
schema per test at ``$SPHERE_TEST_POSTGRES_URL``, default the local server; selected via
``search_path`` and dropped afterwards, so concurrent runs never clash). The PostgreSQL
variant is skipped only when the server does not answer.
"""

from __future__ import annotations

import os
import uuid

import pytest

POSTGRES_URL = os.environ.get(
    "SPHERE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_engine():
    import sqlalchemy as sa

    engine = sa.create_engine(
        POSTGRES_URL, connect_args={"connect_timeout": 3}, poolclass=sa.pool.NullPool
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as err:  # noqa: BLE001 - any failure means "no server here"
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} does not answer: {err}")
    return engine


def postgres_schema_url() -> tuple[str, object]:
    """(URL whose search_path is a fresh schema, cleanup callable)."""
    from sqlalchemy.engine import make_url

    engine = _postgres_engine()
    schema = f"sphere_test_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})

    def cleanup() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()

    return url.render_as_string(hide_password=False), cleanup


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sphere.db'}"
        return
    url, cleanup = postgres_schema_url()
    try:
        yield url
    finally:
        cleanup()


@pytest.fixture
def repo(database_url):
    from sphere_core.storage.repo import open_repository

    repository = open_repository(database_url)
    try:
        yield repository
    finally:
        repository.close()
