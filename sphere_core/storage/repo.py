"""The metadata repository: every SQL statement of SPHERE lives here.

Owns reads/writes of runs (status, planned and reached rounds), questions, routing events,
pairs, checkpoints and evaluations, with portable upserts (``INSERT .. ON CONFLICT`` on SQLite
and PostgreSQL) so that retried tasks are idempotent. Everything recorded per run also carries
the self-evolution ``round`` (default 1); reads take ``round=None`` for all rounds. Returns
plain dicts (timestamps as ISO-8601 UTC strings). Does not own the schema (``models.py``),
engines or migrations (``db.py``).
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import pandas as pd
from sqlalchemy import Connection, Engine, Table, and_, exc, func, or_, select

from sphere_core.errors import StoreError
from sphere_core.schemas import QUESTION_COLUMNS
from sphere_core.storage import db
from sphere_core.storage.models import (
    FINISHED_STATUSES,
    PAIR_SPLITS,
    RUN_STATUSES,
    Checkpoint,
    Evaluation,
    Pair,
    Question,
    RoutingEvent,
    Run,
    utcnow,
)

RUNS: Table = Run.__table__  # type: ignore[assignment]
QUESTIONS: Table = Question.__table__  # type: ignore[assignment]
EVENTS: Table = RoutingEvent.__table__  # type: ignore[assignment]
CHECKPOINTS: Table = Checkpoint.__table__  # type: ignore[assignment]
EVALUATIONS: Table = Evaluation.__table__  # type: ignore[assignment]
PAIRS: Table = Pair.__table__  # type: ignore[assignment]

EVENT_FIELDS = (
    "decision", "reason", "answer_max", "answer_min", "correct_max", "correct_min",
    "reward_max", "reward_min", "error",
)
EVENT_REQUIRED = ("run_id", "question_id", "stage", "decision")
PAIR_REQUIRED = (
    "question_id", "stage", "route", "granularity", "split",
    "answer_chosen", "answer_rejected", "reward_chosen", "reward_rejected",
)
_CHUNK = 500


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


# -- value conversion ---------------------------------------------------------------------------


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # SQLite drops the offset; we always store UTC
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    return value


def _row(mapping: Any) -> dict[str, Any]:
    return {k: _iso(v) for k, v in dict(mapping).items()}


def _scalar(value: Any) -> Any:
    """pandas/numpy cell -> Python value; NaN/NA/NaT -> None."""
    if value is None:
        return None
    if isinstance(value, (list, dict, tuple)):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _text(value: Any) -> str | None:
    value = _scalar(value)
    return None if value is None else str(value)


def _bool(value: Any) -> bool | None:
    value = _scalar(value)
    return None if value is None else bool(value)


def _float(value: Any) -> float | None:
    value = _scalar(value)
    return None if value is None else float(value)


def _chunks(rows: Sequence[dict], size: int = _CHUNK) -> Iterable[Sequence[dict]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def _positive(value: Any, what: str) -> int:
    """An int >= 1 (numpy ints accepted); StoreError otherwise."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or number < 1:
        raise StoreError(f"invalid {what} {value!r}: need an integer >= 1")
    return number


def _check_round_column(df: pd.DataFrame, round: int, where: str) -> None:
    """A frame's own ``round`` column, when it has one, must agree with the round recorded."""
    if "round" in df.columns:
        found = {int(v) for v in df["round"].dropna().unique()}
        if found - {round}:
            raise StoreError(f"{where}: the frame's round column has {sorted(found)}; recording round {round}")


def _by_round(table: Table, run_id: str, round: int | None) -> Any:
    cond = table.c.run_id == run_id
    return cond if round is None else and_(cond, table.c.round == _positive(round, "round"))


class Repository:
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
    def create_run(self, run_id: str, config: dict, config_hash: str, kind: str = "pipeline",
                   flow_run_id: str | None = None, rounds: int | None = None) -> dict:
        """Insert a ``pending`` run (round 1 of ``rounds``, default 1), or refresh an existing one.

        Calling again with the same config is a no-op (resume). A changed config replaces the
        stored one: artifacts are content-addressed by stage config, so re-running a run id with
        one stage's config changed recomputes that stage and its downstream only. ``rounds``
        given for an existing run replaces its planned rounds; None leaves them.
        """
        planned = None if rounds is None else _positive(rounds, "rounds")
        now = utcnow()
        with self._tx(write=True) as conn:
            stmt = self._insert(RUNS).values(
                run_id=run_id, kind=kind, config=config, config_hash=config_hash,
                status="pending", prefect_flow_run_id=flow_run_id, rounds=planned or 1, round=1,
                created_at=now, updated_at=now,
            ).on_conflict_do_nothing(index_elements=["run_id"])
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
                conn.execute(RUNS.update().where(RUNS.c.run_id == run_id)
                             .values(updated_at=now, **changes))
                row = conn.execute(select(RUNS).where(RUNS.c.run_id == run_id)).mappings().one()
        return _row(row)

    def update_run_config(self, run_id: str, config: dict, config_hash: str, *,
                          rounds: int | None = None) -> dict:
        """Replace an existing run's config (and planned ``rounds`` when given); returns the run."""
        values: dict[str, Any] = {"config": config, "config_hash": config_hash}
        if rounds is not None:
            values["rounds"] = _positive(rounds, "rounds")
        with self._tx(write=True) as conn:
            row = conn.execute(select(RUNS).where(RUNS.c.run_id == run_id)).mappings().first()
            if row is None:
                raise StoreError(f"unknown run {run_id!r} in {self.url}; call create_run first")
            changes = {k: v for k, v in values.items() if row[k] != v}
            if changes:
                conn.execute(RUNS.update().where(RUNS.c.run_id == run_id)
                             .values(updated_at=utcnow(), **changes))
                row = conn.execute(select(RUNS).where(RUNS.c.run_id == run_id)).mappings().one()
        return _row(row)

    def set_run_status(self, run_id: str, status: str, error: str | None = None,
                       flow_run_id: str | None = None) -> None:
        """Set the status; completed/failed/cancelled set ``finished_at``, the others clear it."""
        if status not in RUN_STATUSES:
            raise StoreError(f"invalid run status {status!r}; expected one of {', '.join(RUN_STATUSES)}")
        now = utcnow()
        values: dict[str, Any] = {
            "status": status, "error": error, "updated_at": now,
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
        reached = _positive(round, "round")
        with self._tx(write=True) as conn:
            planned = conn.execute(select(RUNS.c.rounds).where(RUNS.c.run_id == run_id)).scalar()
            if planned is None:
                raise StoreError(f"unknown run {run_id!r} in {self.url}")
            if reached > planned:
                raise StoreError(f"run {run_id!r} plans {planned} round(s); cannot reach round {reached}")
            conn.execute(RUNS.update().where(RUNS.c.run_id == run_id)
                         .values(round=reached, updated_at=utcnow()))

    def get_run(self, run_id: str) -> dict | None:
        with self._tx() as conn:
            row = conn.execute(select(RUNS).where(RUNS.c.run_id == run_id)).mappings().first()
        return _row(row) if row else None

    def list_runs(self, limit: int = 50) -> list[dict]:
        """Most recent first; rows carry ``rounds`` (planned) and ``round`` (reached)."""
        stmt = select(RUNS).order_by(RUNS.c.created_at.desc(), RUNS.c.run_id).limit(limit)
        with self._tx() as conn:
            return [_row(r) for r in conn.execute(stmt).mappings()]

    # -- questions --------------------------------------------------------------------------
    def upsert_questions(self, df: pd.DataFrame) -> int:
        """Record questions (QUESTION_COLUMNS); fills in rows first seen in routing events."""
        missing = [c for c in ("question_id", "problem", "answer") if c not in df.columns]
        if missing:
            raise StoreError(f"upsert_questions: missing column(s) {missing}; expected {QUESTION_COLUMNS}")
        now = utcnow()
        rows: dict[str, dict] = {}
        for rec in df.to_dict("records"):
            qid = _text(rec["question_id"])
            if not qid:
                raise StoreError("upsert_questions: a row has an empty question_id")
            rows[qid] = {"question_id": qid, "problem": _text(rec["problem"]),
                         "answer": _text(rec["answer"]), "source": _text(rec.get("source")),
                         "first_seen_at": now}
        with self._tx(write=True) as conn:
            for chunk in _chunks(list(rows.values())):
                stmt = self._insert(QUESTIONS)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["question_id"],
                    set_={c: func.coalesce(QUESTIONS.c[c], stmt.excluded[c]) for c in ("problem", "answer", "source")},
                )
                conn.execute(stmt, list(chunk))
        return len(rows)

    def get_question(self, question_id: str) -> dict | None:
        with self._tx() as conn:
            row = conn.execute(select(QUESTIONS).where(QUESTIONS.c.question_id == question_id)).mappings().first()
        return _row(row) if row else None

    # -- routing events ---------------------------------------------------------------------
    def _placeholder_questions(self, conn: Connection, qids: Iterable[str]) -> None:
        now = utcnow()
        rows = [{"question_id": q, "first_seen_at": now} for q in sorted(set(qids))]
        for chunk in _chunks(rows):
            conn.execute(self._insert(QUESTIONS).on_conflict_do_nothing(index_elements=["question_id"]),
                         list(chunk))

    def record_routing_events(self, df: pd.DataFrame, artifact_key: str | None = None,
                              round: int = 1) -> int:
        """Upsert one event per (run_id, round, question_id, stage) from ROUTING_COLUMNS rows.

        Re-recording (a retried task) updates in place: no duplicates. Questions not yet in
        ``questions`` get a placeholder row. Returns the number of distinct events written.
        """
        round = _positive(round, "round")
        missing = [c for c in EVENT_REQUIRED if c not in df.columns]
        if missing:
            raise StoreError(f"record_routing_events: missing column(s) {missing}")
        _check_round_column(df, round, "record_routing_events")
        now = utcnow()
        events: dict[tuple[str, str, str], dict] = {}
        for i, rec in enumerate(df.to_dict("records")):
            key = tuple(_text(rec[c]) for c in ("run_id", "question_id", "stage"))
            if not all(key) or not _text(rec["decision"]):
                raise StoreError(f"record_routing_events: row {i} lacks run_id/question_id/stage/decision")
            event = {
                "run_id": key[0], "round": round, "question_id": key[1], "stage": key[2],
                "decision": _text(rec["decision"]), "reason": _text(rec.get("reason")),
                "answer_max": _text(rec.get("answer_max")), "answer_min": _text(rec.get("answer_min")),
                "correct_max": _bool(rec.get("correct_max")), "correct_min": _bool(rec.get("correct_min")),
                "reward_max": _float(rec.get("reward_max")), "reward_min": _float(rec.get("reward_min")),
                "error": _text(rec.get("error")), "artifact_key": artifact_key, "created_at": now,
            }
            events[key] = event  # the last row for a key wins (one statement may not hit a row twice)
        if not events:
            return 0
        run_ids = sorted({k[0] for k in events})
        with self._tx(write=True) as conn:
            known = set(conn.execute(select(RUNS.c.run_id).where(RUNS.c.run_id.in_(run_ids))).scalars())
            unknown = [r for r in run_ids if r not in known]
            if unknown:
                raise StoreError(f"record_routing_events: unknown run(s) {unknown}; call create_run first")
            self._placeholder_questions(conn, (k[1] for k in events))
            for chunk in _chunks(list(events.values())):
                stmt = self._insert(EVENTS)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["run_id", "round", "question_id", "stage"],
                    set_={c: stmt.excluded[c] for c in (*EVENT_FIELDS, "artifact_key")},
                )
                conn.execute(stmt, list(chunk))
        return len(events)

    def routes_for_run(self, run_id: str, round: int | None = None) -> list[dict]:
        """Events of one run (one round, or all with None), by round, stage, question."""
        stmt = (select(EVENTS).where(_by_round(EVENTS, run_id, round))
                .order_by(EVENTS.c.round, EVENTS.c.stage, EVENTS.c.question_id))
        with self._tx() as conn:
            return [_row(r) for r in conn.execute(stmt).mappings()]

    def routes_for_question(self, question_id: str) -> list[dict]:
        """A question's history across runs and rounds, oldest first, with each run's
        kind/status/time (rows carry ``round``)."""
        stmt = (
            select(EVENTS, RUNS.c.kind.label("run_kind"), RUNS.c.status.label("run_status"),
                   RUNS.c.created_at.label("run_created_at"))
            .join(RUNS, RUNS.c.run_id == EVENTS.c.run_id)
            .where(EVENTS.c.question_id == question_id)
            .order_by(EVENTS.c.created_at, EVENTS.c.round, EVENTS.c.id)
        )
        with self._tx() as conn:
            return [_row(r) for r in conn.execute(stmt).mappings()]

    def prune_routing_events(self, run_id: str, round: int, keep: dict[str, str]) -> int:
        """Delete the run+round's events whose stage is not in ``keep`` or whose artifact_key
        differs from ``keep[stage]`` (a re-run with a changed config: stale stage results must
        not mix with new ones). Returns the number of events deleted."""
        round = _positive(round, "round")
        stale = [EVENTS.c.stage.not_in(list(keep))] if keep else []
        stale += [and_(EVENTS.c.stage == stage, EVENTS.c.artifact_key.is_distinct_from(key))
                  for stage, key in keep.items()]
        cond = and_(EVENTS.c.run_id == run_id, EVENTS.c.round == round)
        if keep:
            cond = and_(cond, or_(*stale))
        with self._tx(write=True) as conn:
            return conn.execute(EVENTS.delete().where(cond)).rowcount

    # -- pairs ------------------------------------------------------------------------------
    def record_pairs(self, run_id: str, round: int, df: pd.DataFrame,
                     artifact_key: str | None = None) -> int:
        """Replace the run+round's pairs with ``df``'s rows in one transaction (idempotent).

        ``df`` has the pair columns of PAIR_COLUMNS plus ``split`` ("train"/"eval"); its
        ``run_id`` column, when filled, must be ``run_id``. Row order becomes ``ordinal``.
        Questions not yet in ``questions`` get a placeholder row. Returns the pairs written.
        """
        round = _positive(round, "round")
        missing = [c for c in PAIR_REQUIRED if c not in df.columns] if len(df) else []
        if missing:
            raise StoreError(f"record_pairs: missing column(s) {missing}")
        _check_round_column(df, round, "record_pairs")
        now = utcnow()
        rows = []
        for i, rec in enumerate(df.to_dict("records")):
            qid, stage, split = (_text(rec[c]) for c in ("question_id", "stage", "split"))
            if not qid or not stage:
                raise StoreError(f"record_pairs: row {i} lacks question_id/stage")
            if split not in PAIR_SPLITS:
                raise StoreError(f"record_pairs: row {i} has split {split!r}; expected one of {PAIR_SPLITS}")
            owner = _text(rec.get("run_id"))
            if owner is not None and owner != run_id:
                raise StoreError(f"record_pairs: row {i} belongs to run {owner!r}, not {run_id!r}")
            rows.append({
                "run_id": run_id, "round": round, "ordinal": i, "question_id": qid, "stage": stage,
                "route": _text(rec["route"]), "granularity": _text(rec["granularity"]), "split": split,
                "answer_chosen": _text(rec["answer_chosen"]), "answer_rejected": _text(rec["answer_rejected"]),
                "reward_chosen": _float(rec["reward_chosen"]), "reward_rejected": _float(rec["reward_rejected"]),
                "artifact_key": artifact_key, "created_at": now,
            })
        with self._tx(write=True) as conn:
            if conn.execute(select(RUNS.c.run_id).where(RUNS.c.run_id == run_id)).first() is None:
                raise StoreError(f"record_pairs: unknown run {run_id!r} in {self.url}; call create_run first")
            self._placeholder_questions(conn, (r["question_id"] for r in rows))
            conn.execute(PAIRS.delete().where(and_(PAIRS.c.run_id == run_id, PAIRS.c.round == round)))
            for chunk in _chunks(rows):
                conn.execute(PAIRS.insert(), list(chunk))
        return len(rows)

    def pairs_for_run(self, run_id: str, round: int | None = None) -> list[dict]:
        """The run's pairs (one round, or all with None), by round then ordinal."""
        stmt = (select(PAIRS).where(_by_round(PAIRS, run_id, round))
                .order_by(PAIRS.c.round, PAIRS.c.ordinal))
        with self._tx() as conn:
            return [_row(r) for r in conn.execute(stmt).mappings()]

    # -- checkpoints and evaluations --------------------------------------------------------
    def record_checkpoint(self, run_id: str, path: str | Path, kind: str, metrics: dict,
                          round: int = 1) -> None:
        """Upsert on (run_id, round, path): recording the same checkpoint again updates it."""
        round = _positive(round, "round")
        self._require_run(run_id)
        with self._tx(write=True) as conn:
            stmt = self._insert(CHECKPOINTS).values(
                run_id=run_id, round=round, path=str(path), kind=kind, metrics=dict(metrics or {}),
                created_at=utcnow())
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["run_id", "round", "path"],
                set_={"kind": stmt.excluded.kind, "metrics": stmt.excluded.metrics}))

    def checkpoints_for_run(self, run_id: str, round: int | None = None) -> list[dict]:
        """Checkpoints (one round, or all with None), by round then recording order."""
        stmt = (select(CHECKPOINTS).where(_by_round(CHECKPOINTS, run_id, round))
                .order_by(CHECKPOINTS.c.round, CHECKPOINTS.c.id))
        with self._tx() as conn:
            return [_row(r) for r in conn.execute(stmt).mappings()]

    def record_evaluation(self, run_id: str, model_label: str, benchmark: str, metric: str,
                          value: float | None, n: int, details: dict | None = None,
                          round: int = 1) -> None:
        """Upsert on (run_id, round, model_label, benchmark, metric)."""
        round = _positive(round, "round")
        self._require_run(run_id)
        with self._tx(write=True) as conn:
            stmt = self._insert(EVALUATIONS).values(
                run_id=run_id, round=round, model_label=model_label, benchmark=benchmark,
                metric=metric, value=_float(value), n=int(n), details=details, created_at=utcnow())
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["run_id", "round", "model_label", "benchmark", "metric"],
                set_={c: stmt.excluded[c] for c in ("value", "n", "details", "created_at")}))

    def evaluations_for_run(self, run_id: str, round: int | None = None) -> list[dict]:
        """Evaluations (one round, or all with None), by round, model, benchmark, metric."""
        stmt = (select(EVALUATIONS).where(_by_round(EVALUATIONS, run_id, round))
                .order_by(EVALUATIONS.c.round, EVALUATIONS.c.model_label,
                          EVALUATIONS.c.benchmark, EVALUATIONS.c.metric))
        with self._tx() as conn:
            return [_row(r) for r in conn.execute(stmt).mappings()]

    def _require_run(self, run_id: str) -> None:
        if self.get_run(run_id) is None:
            raise StoreError(f"unknown run {run_id!r} in {self.url}; call create_run first")
