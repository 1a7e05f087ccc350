"""The packaged Alembic migrations build exactly the schema of the models (SQLite and
PostgreSQL), downgrade to an empty database, and re-apply cleanly."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from sphere_core.storage import db
from sphere_core.storage.models import Base
from tests.unit import test_store_fixtures as _fixtures

database_url = _fixtures.database_url

TABLES = {"runs", "questions", "routing_events", "checkpoints", "evaluations"}


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_migrations_match_models_and_downgrade(database_url):
    engine = db.make_engine(database_url)
    try:
        assert db.current_revision(engine) is None
        assert db.upgrade_database(database_url) == db.head_revision()
        assert TABLES <= _tables(engine)
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diffs == []
        uniques = {u["name"] for u in sa.inspect(engine).get_unique_constraints("routing_events")}
        assert "uq_routing_events_run_id_question_id_stage" in uniques
        assert db.upgrade_database(database_url) == db.head_revision()  # idempotent
        assert db.downgrade_database(database_url, revision="base") is None
        assert _tables(engine) & TABLES == set()
        assert db.upgrade_database(database_url) == db.head_revision()
    finally:
        engine.dispose()


def test_single_head_and_packaged_location():
    assert db.head_revision() == "0001"
    assert (db.MIGRATIONS_DIR / "env.py").is_file() and (db.MIGRATIONS_DIR / "script.py.mako").is_file()
