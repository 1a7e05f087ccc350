"""SQLAlchemy 2.0 typed table models of the metadata store.

Owns table/column definitions and constraint names only. Queries live in ``repo.py``;
schema changes need a new Alembic revision in ``migrations/versions/`` (the migration test
fails when the models and the migrations disagree).

Timestamps are stored in UTC. Free-form dicts use the generic ``JSON`` type so SQLite and
PostgreSQL behave alike. Enumerations (status, stage, decision, split) are plain strings
validated in the repository, so adding a value needs no migration.

Rounds: a run plans ``rounds`` self-evolution rounds and has reached ``round`` so far; routing
events, pairs, checkpoints and evaluations carry the ``round`` they belong to (1 for a run
without self-evolution), and their unique keys include it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TERMINAL_STATUSES = ("completed", "failed")
"""Statuses of a run that ended on its own (done, or stopped by an error)."""
FINISHED_STATUSES = (*TERMINAL_STATUSES, "cancelled")
"""Statuses that set ``finished_at``. ``cancelled`` (stopped by SIGTERM/SIGINT) is not
terminal: the run is resumable."""
PAIR_SPLITS = ("train", "eval")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        datetime: DateTime(timezone=True),
        str: Text,
        float: Float,
    }


class Run(Base):
    """One pipeline/flow run: its config, status, rounds and the Prefect flow run driving it."""

    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]]
    config_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None]
    prefect_flow_run_id: Mapped[str | None] = mapped_column(String(64))
    rounds: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    round: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class Question(Base):
    """A question by content hash. ``problem``/``answer`` are NULL for a question known only
    from a routing event until ``upsert_questions`` fills them in."""

    __tablename__ = "questions"

    question_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str | None]
    problem: Mapped[str | None]
    answer: Mapped[str | None]
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class RoutingEvent(Base):
    """Where one question went at one stage of one round of a run, why, and the evidence."""

    __tablename__ = "routing_events"
    __table_args__ = (
        UniqueConstraint("run_id", "round", "question_id", "stage"),
        Index(None, "question_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    question_id: Mapped[str] = mapped_column(ForeignKey("questions.question_id"))
    stage: Mapped[str] = mapped_column(String(32))
    decision: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None]
    answer_max: Mapped[str | None]
    answer_min: Mapped[str | None]
    correct_max: Mapped[bool | None]
    correct_min: Mapped[bool | None]
    reward_max: Mapped[float | None]
    reward_min: Mapped[float | None]
    error: Mapped[str | None]
    artifact_key: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    """A model checkpoint written by a run (one row per run, round and path)."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "round", "path"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    path: Mapped[str] = mapped_column(String(1024))
    kind: Mapped[str] = mapped_column(String(32))
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Evaluation(Base):
    """One metric of one model on one benchmark in one round of a run."""

    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("run_id", "round", "model_label", "benchmark", "metric"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    model_label: Mapped[str] = mapped_column(String(128))
    benchmark: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None]
    n: Mapped[int]
    details: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Pair(Base):
    """One preference pair of one round of a run (the evidence; full texts stay in Parquet).

    ``ordinal`` is the pair's position in the round's pair set as recorded (train pairs, then
    eval pairs, in artifact order). The repository replaces a run+round's pairs as a whole, so
    re-recording is idempotent; ``(run_id, round, ordinal)`` is unique because two genuinely
    different pairs (step pairs of one question) may share every evidence column.
    """

    __tablename__ = "pairs"
    __table_args__ = (
        UniqueConstraint("run_id", "round", "ordinal"),
        Index(None, "question_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    ordinal: Mapped[int] = mapped_column(Integer)
    question_id: Mapped[str] = mapped_column(ForeignKey("questions.question_id"))
    stage: Mapped[str] = mapped_column(String(32))
    route: Mapped[str | None] = mapped_column(String(32))
    granularity: Mapped[str | None] = mapped_column(String(32))
    split: Mapped[str] = mapped_column(String(16))
    answer_chosen: Mapped[str | None]
    answer_rejected: Mapped[str | None]
    reward_chosen: Mapped[float | None]
    reward_rejected: Mapped[float | None]
    artifact_key: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
