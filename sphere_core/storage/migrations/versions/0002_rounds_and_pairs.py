"""Self-evolution rounds: ``round`` on routing events, checkpoints and evaluations (part of
their unique keys), planned/reached rounds on runs, and the ``pairs`` table.

Existing rows become round 1. Downgrading drops the pairs table and every routing event,
checkpoint and evaluation of rounds after the first (the old unique keys cannot hold them).
The new run status "cancelled" is a plain string value and needs no DDL.

Generated with autogenerate from sphere_core.storage.models, then reviewed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 18:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> (unique columns before, unique columns after)
_KEYED = {
    "routing_events": (
        ["run_id", "question_id", "stage"],
        ["run_id", "round", "question_id", "stage"],
    ),
    "checkpoints": (["run_id", "path"], ["run_id", "round", "path"]),
    "evaluations": (
        ["run_id", "model_label", "benchmark", "metric"],
        ["run_id", "round", "model_label", "benchmark", "metric"],
    ),
}


def _uq(table: str, columns: list[str]) -> str:
    return f"uq_{table}_{'_'.join(columns)}"


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rounds", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("round", sa.Integer(), server_default="1", nullable=False))

    for table, (before, after) in _KEYED.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("round", sa.Integer(), server_default="1", nullable=False)
            )
            batch_op.drop_constraint(op.f(_uq(table, before)), type_="unique")
            batch_op.create_unique_constraint(op.f(_uq(table, after)), after)

    op.create_table(
        "pairs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("round", sa.Integer(), server_default="1", nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("question_id", sa.String(length=64), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("route", sa.String(length=32), nullable=True),
        sa.Column("granularity", sa.String(length=32), nullable=True),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("answer_chosen", sa.Text(), nullable=True),
        sa.Column("answer_rejected", sa.Text(), nullable=True),
        sa.Column("reward_chosen", sa.Float(), nullable=True),
        sa.Column("reward_rejected", sa.Float(), nullable=True),
        sa.Column("artifact_key", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["question_id"], ["questions.question_id"], name=op.f("fk_pairs_question_id_questions")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name=op.f("fk_pairs_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pairs")),
        sa.UniqueConstraint(
            "run_id", "round", "ordinal", name=op.f("uq_pairs_run_id_round_ordinal")
        ),
    )
    op.create_index(op.f("ix_pairs_question_id"), "pairs", ["question_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_pairs_question_id"), table_name="pairs")
    op.drop_table("pairs")

    for table, (before, after) in _KEYED.items():
        op.execute(sa.text(f"DELETE FROM {table} WHERE round > 1"))
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(op.f(_uq(table, after)), type_="unique")
            batch_op.create_unique_constraint(op.f(_uq(table, before)), before)
            batch_op.drop_column("round")

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("round")
        batch_op.drop_column("rounds")
