"""The metadata repository: every SQL statement of SPHERE lives here.

Owns reads/writes of runs (status, planned and reached rounds), questions, routing events,
pairs, checkpoints and evaluations, with portable upserts (``INSERT .. ON CONFLICT`` on SQLite
and PostgreSQL) so that retried tasks are idempotent. Everything recorded per run also carries
the self-evolution ``round`` (default 1); reads take ``round=None`` for all rounds. Returns
plain dicts (timestamps as ISO-8601 UTC strings). The runs and questions are here; routing
events, pairs, checkpoints and evaluations in ``repo_results.py`` (a base class of
``Repository``), tables and value conversion in ``sql_values.py``. Does not own the schema
(``models.py``), engines or migrations (``db.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pandas as pd
from sqlalchemy import Connection, Engine, exc, func, select

from sphere_core.errors import StoreError
from sphere_core.schemas import QUESTION_COLUMNS
from sphere_core.storage import db
from sphere_core.storage.models import FINISHED_STATUSES, RUN_STATUSES, utcnow
from sphere_core.storage.repo_results import RunResults
from sphere_core.storage.sql_values import (
    QUESTIONS,
    RUNS,
    chunks,
    plain_row,
    positive_int,
    text_or_none,
)


def open_repository(
    database_url: str | None = None, home: Path | None = None, *, upgrade: bool = True
) -> Repository:
    """Open (and by default migrate) the metadata store; raises StoreError when unreachable."""
    engine = db.make_engine(db.resolve_database_url(database_url, home))
    try:
        db.check_connection(engine)
        if upgrade:
            if db.current_revision(engine) != db.head_revision():
                db.upgrade_database(engine=engine)
        elif db.current_revision(engine) is None:
            raise StoreError(
                f"database {db.redact_url(engine.url)} is not migrated; run `sphere db upgrade`"
            )
    except BaseException:
        engine.dispose()
        raise
    return Repository(engine)


class Repository(RunResults):
    """Queries over one engine. Thread-safe (one connection per call); ``close()`` when done."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.url = db.redact_url(engine.url)
        self._writer = engine.execution_options(**{db.WRITE_OPTION: True})
        if engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        self._insert = insert

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self, write: bool = False) -> Iterator[Connection]:
        """One transaction; driver errors become StoreError naming the (password-free) URL."""
        try:
            conn = (self._writer if write else self.engine).connect()
        except exc.DBAPIError as err:
            raise db.connection_error(self.engine.url, err) from err
        try:
            with conn, conn.begin():
                yield conn
        except exc.IntegrityError as err:
            raise StoreError(f"integrity error in {self.url}: {err.orig}") from err
        except exc.DBAPIError as err:
            if err.connection_invalidated:
                raise db.connection_error(self.engine.url, err) from err
            reason = (str(err.orig).strip().splitlines() or ["?"])[0]
            problem = db.sqlite_problem(self.engine.url, reason)
            if problem:
                raise StoreError(problem) from err
            if "no such table" in reason or "does not exist" in reason:
                reason += " (database not migrated? run `sphere db upgrade`)"
            raise StoreError(f"database error in {self.url}: {reason}") from err

    # -- runs -------------------------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        config: dict,
        config_hash: str,
        kind: str = "pipeline",
        flow_run_id: str | None = None,
        rounds: int | None = None,
    ) -> dict:
        """Insert a ``pending`` run (round 1 of ``rounds``, default 1), or refresh an existing one.

        Calling again with the same config is a no-op (resume). A changed config replaces the
        stored one: artifacts are content-addressed by stage config, so re-running a run id with
        one stage's config changed recomputes that stage and its downstream only. ``rounds``
        given for an existing run replaces its planned rounds; None leaves them.
        """
        planned = None if rounds is None else positive_int(rounds, "rounds")
        now = utcnow()
        with self._tx(write=True) as conn:
            stmt = (
                self._insert(RUNS)
                .values(
                    run_id=run_id,
                    kind=kind,
                    config=config,
                    config_hash=config_hash,
                    status="pending",
                    prefect_flow_run_id=flow_run_id,
                    rounds=planned or 1,
                    round=1,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["run_id"])
            )
            conn.execute(stmt)
            row = conn.execute(select(RUNS).where(RUNS.c.run_id == run_id)).mappings().one()
            changes: dict[str, Any] = {}
            if row["config_hash"] != config_hash:
                changes.update(config=config, config_hash=config_hash)
            if flow_run_id and row["prefect_flow_run_id"] != flow_run_id:
                changes["prefect_flow_run_id"] = flow_run_id
            if planned is not None and row["rounds"] != planned:
                changes["rounds"] = planned
            if changes:
                conn.execute(
                    RUNS.update().where(RUNS.c.run_id == run_id).values(updated_at=now, **changes)
                )
                row = conn.execute(select(RUNS).where(RUNS.c.run_id == run_id)).mappings().one()
        return plain_row(row)

    def update_run_config(
        self, run_id: str, config: dict, config_hash: str, *, rounds: int | None = None
    ) -> dict:
        """Replace an existing run's config (and planned ``rounds`` when given); returns the run."""
        values: dict[str, Any] = {"config": config, "config_hash": config_hash}
        if rounds is not None:
            values["rounds"] = positive_int(rounds, "rounds")
        with self._tx(write=True) as conn:
            row = conn.execute(select(RUNS).where(RUNS.c.run_id == run_id)).mappings().first()
            if row is None:
                raise StoreError(f"unknown run {run_id!r} in {self.url}; call create_run first")
            changes = {k: v for k, v in values.items() if row[k] != v}
            if changes:
                conn.execute(
                    RUNS.update()
                    .where(RUNS.c.run_id == run_id)
                    .values(updated_at=utcnow(), **changes)
                )
                row = conn.execute(select(RUNS).where(RUNS.c.run_id == run_id)).mappings().one()
        return plain_row(row)

    def set_run_status(
        self, run_id: str, status: str, error: str | None = None, flow_run_id: str | None = None
    ) -> None:
        """Set the status; completed/failed/cancelled set ``finished_at``, the others clear it."""
        if status not in RUN_STATUSES:
            raise StoreError(
                f"invalid run status {status!r}; expected one of {', '.join(RUN_STATUSES)}"
            )
        now = utcnow()
        values: dict[str, Any] = {
            "status": status,
            "error": error,
            "updated_at": now,
            "finished_at": now if status in FINISHED_STATUSES else None,
        }
        if flow_run_id is not None:
            values["prefect_flow_run_id"] = flow_run_id
        with self._tx(write=True) as conn:
            result = conn.execute(RUNS.update().where(RUNS.c.run_id == run_id).values(**values))
            if result.rowcount == 0:
                raise StoreError(f"unknown run {run_id!r} in {self.url}")

    def set_run_round(self, run_id: str, round: int) -> None:
        """Record that the run reached ``round`` (1..its planned rounds)."""
        reached = positive_int(round, "round")
        with self._tx(write=True) as conn:
            planned = conn.execute(select(RUNS.c.rounds).where(RUNS.c.run_id == run_id)).scalar()
            if planned is None:
                raise StoreError(f"unknown run {run_id!r} in {self.url}")
            if reached > planned:
                raise StoreError(
                    f"run {run_id!r} plans {planned} round(s); cannot reach round {reached}"
                )
            conn.execute(
                RUNS.update()
                .where(RUNS.c.run_id == run_id)
                .values(round=reached, updated_at=utcnow())
            )

    def get_run(self, run_id: str) -> dict | None:
        with self._tx() as conn:
            row = conn.execute(select(RUNS).where(RUNS.c.run_id == run_id)).mappings().first()
        return plain_row(row) if row else None

    def list_runs(self, limit: int = 50) -> list[dict]:
        """Most recent first; rows carry ``rounds`` (planned) and ``round`` (reached)."""
        stmt = select(RUNS).order_by(RUNS.c.created_at.desc(), RUNS.c.run_id).limit(limit)
        with self._tx() as conn:
            return [plain_row(r) for r in conn.execute(stmt).mappings()]

    # -- questions --------------------------------------------------------------------------
    def upsert_questions(self, df: pd.DataFrame) -> int:
        """Record questions (QUESTION_COLUMNS); fills in rows first seen in routing events."""
        missing = [c for c in ("question_id", "problem", "answer") if c not in df.columns]
        if missing:
            raise StoreError(
                f"upsert_questions: missing column(s) {missing}; expected {QUESTION_COLUMNS}"
            )
        now = utcnow()
        rows: dict[str, dict] = {}
        for rec in df.to_dict("records"):
            qid = text_or_none(rec["question_id"])
            if not qid:
                raise StoreError("upsert_questions: a row has an empty question_id")
            rows[qid] = {
                "question_id": qid,
                "problem": text_or_none(rec["problem"]),
                "answer": text_or_none(rec["answer"]),
                "source": text_or_none(rec.get("source")),
                "first_seen_at": now,
            }
        with self._tx(write=True) as conn:
            for chunk in chunks(list(rows.values())):
                stmt = self._insert(QUESTIONS)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["question_id"],
                    set_={
                        c: func.coalesce(QUESTIONS.c[c], stmt.excluded[c])
                        for c in ("problem", "answer", "source")
                    },
                )
                conn.execute(stmt, list(chunk))
        return len(rows)

    def get_question(self, question_id: str) -> dict | None:
        with self._tx() as conn:
            row = (
                conn.execute(select(QUESTIONS).where(QUESTIONS.c.question_id == question_id))
                .mappings()
                .first()
            )
        return plain_row(row) if row else None

    def _require_run(self, run_id: str) -> None:
        if self.get_run(run_id) is None:
            raise StoreError(f"unknown run {run_id!r} in {self.url}; call create_run first")
