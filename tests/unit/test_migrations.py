"""The packaged Alembic migrations build exactly the schema of the models (SQLite and
PostgreSQL), downgrade to an empty database, and re-apply cleanly; 0002 (rounds, pairs)
carries data written under 0001 forward and back."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from sphere_core.storage import db
from sphere_core.storage.models import Base
from tests.unit import test_store_fixtures as _fixtures

database_url = _fixtures.database_url

TABLES = {"runs", "questions", "routing_events", "checkpoints", "evaluations", "pairs"}


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def _uniques(engine: sa.Engine, table: str) -> set[str]:
    return {u["name"] for u in sa.inspect(engine).get_unique_constraints(table)}


def test_migrations_match_models_and_downgrade(database_url):
    engine = db.make_engine(database_url)
    try:
        assert db.current_revision(engine) is None
        assert db.upgrade_database(database_url) == db.head_revision()
        assert TABLES <= _tables(engine)
        with engine.connect() as conn:
            diffs = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diffs == []
        assert "uq_routing_events_run_id_round_question_id_stage" in _uniques(
            engine, "routing_events"
        )
        assert "uq_checkpoints_run_id_round_path" in _uniques(engine, "checkpoints")
        assert "uq_evaluations_run_id_round_model_label_benchmark_metric" in _uniques(
            engine, "evaluations"
        )
        assert "uq_pairs_run_id_round_ordinal" in _uniques(engine, "pairs")
        assert db.upgrade_database(database_url) == db.head_revision()  # idempotent
        assert db.downgrade_database(database_url, revision="base") is None
        assert _tables(engine) & TABLES == set()
        assert db.upgrade_database(database_url) == db.head_revision()
    finally:
        engine.dispose()


def _insert_0001_rows(conn: sa.Connection) -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    conn.execute(
        sa.text(
            "INSERT INTO runs (run_id, kind, config, config_hash, status, created_at, updated_at) "
            "VALUES ('old', 'pipeline', '{}', 'h', 'completed', :t, :t)"
        ),
        {"t": now},
    )
    conn.execute(
        sa.text("INSERT INTO questions (question_id, first_seen_at) VALUES ('q1', :t)"), {"t": now}
    )
    conn.execute(
        sa.text(
            "INSERT INTO routing_events (run_id, question_id, stage, decision, created_at) "
            "VALUES ('old', 'q1', 'stage1', 'pair', :t)"
        ),
        {"t": now},
    )
    conn.execute(
        sa.text(
            "INSERT INTO checkpoints (run_id, path, kind, metrics, created_at) "
            "VALUES ('old', '/ckpt', 'adapter', '{}', :t)"
        ),
        {"t": now},
    )
    conn.execute(
        sa.text(
            "INSERT INTO evaluations (run_id, model_label, benchmark, metric, value, n, "
            "created_at) "
            "VALUES ('old', 'base', 'gsm8k', 'pass@1', 0.5, 4, :t)"
        ),
        {"t": now},
    )


def test_0002_upgrades_existing_rows_to_round_one_and_downgrades(database_url):
    engine = db.make_engine(database_url)
    try:
        assert db.upgrade_database(database_url, revision="0001") == "0001"
        assert "uq_routing_events_run_id_question_id_stage" in _uniques(engine, "routing_events")
        with engine.begin() as conn:
            _insert_0001_rows(conn)
        assert db.upgrade_database(database_url) == "0002"
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT rounds, round FROM runs")).one() == (1, 1)
            for table in ("routing_events", "checkpoints", "evaluations"):
                assert conn.execute(sa.text(f"SELECT round FROM {table}")).scalars().all() == [1]
            # the same event, checkpoint and evaluation in round 2 are new rows now
            now = datetime(2026, 1, 3, tzinfo=UTC)
            conn.execute(
                sa.text(
                    "INSERT INTO routing_events (run_id, round, question_id, stage, decision, "
                    "created_at) "
                    "VALUES ('old', 2, 'q1', 'stage1', 'to_correction', :t)"
                ),
                {"t": now},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO checkpoints (run_id, round, path, kind, metrics, created_at) "
                    "VALUES ('old', 2, '/ckpt', 'adapter', '{}', :t)"
                ),
                {"t": now},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO evaluations (run_id, round, model_label, benchmark, metric, "
                    "value, n, created_at) "
                    "VALUES ('old', 2, 'base', 'gsm8k', 'pass@1', 0.75, 4, :t)"
                ),
                {"t": now},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO pairs (run_id, round, ordinal, question_id, stage, split, "
                    "created_at) "
                    "VALUES ('old', 2, 0, 'q1', 'stage1', 'train', :t)"
                ),
                {"t": now},
            )
        assert db.downgrade_database(database_url, revision="0001") == "0001"
        assert "pairs" not in _tables(engine)
        assert "uq_routing_events_run_id_question_id_stage" in _uniques(engine, "routing_events")
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT decision FROM routing_events")).scalars().all() == [
                "pair"
            ]
            assert conn.execute(sa.text("SELECT value FROM evaluations")).scalars().all() == [0.5]
            assert conn.execute(sa.text("SELECT count(*) FROM checkpoints")).scalar() == 1
            assert "round" not in {c["name"] for c in sa.inspect(conn).get_columns("runs")}
        assert db.upgrade_database(database_url) == "0002"
        with engine.begin() as conn:  # foreign keys survived the table rebuilds: cascades work
            conn.execute(sa.text("DELETE FROM runs WHERE run_id = 'old'"))
            assert conn.execute(sa.text("SELECT count(*) FROM routing_events")).scalar() == 0
    finally:
        engine.dispose()


def test_single_head_and_packaged_location():
    assert db.head_revision() == "0002"
    assert (db.MIGRATIONS_DIR / "env.py").is_file() and (
        db.MIGRATIONS_DIR / "script.py.mako"
    ).is_file()
