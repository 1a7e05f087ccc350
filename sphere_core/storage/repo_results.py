"""The repository's records of what a run produced: routing events, pairs, checkpoints, evaluations.

``RunResults`` is a base class of ``repo.Repository`` (which supplies ``_tx``, ``_insert``,
``url`` and ``_require_run``); every row carries the run's self-evolution ``round``. Re-recording
(a retried task) updates in place: no duplicates.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import Connection, and_, or_, select

from sphere_core.errors import StoreError
from sphere_core.storage.models import PAIR_SPLITS, utcnow
from sphere_core.storage.sql_values import (
    CHECKPOINTS,
    EVALUATIONS,
    EVENT_FIELDS,
    EVENT_REQUIRED,
    EVENTS,
    PAIR_REQUIRED,
    PAIRS,
    QUESTIONS,
    RUNS,
    bool_or_none,
    by_round,
    check_round_column,
    chunks,
    float_or_none,
    plain_row,
    positive_int,
    text_or_none,
)


class RunResults:
    """Routing events, pairs, checkpoints and evaluations of runs (methods of ``Repository``)."""

    url: str

    # -- routing events ---------------------------------------------------------------------
    def _placeholder_questions(self, conn: Connection, qids: Iterable[str]) -> None:
        now = utcnow()
        rows = [{"question_id": q, "first_seen_at": now} for q in sorted(set(qids))]
        for chunk in chunks(rows):
            conn.execute(
                self._insert(QUESTIONS).on_conflict_do_nothing(index_elements=["question_id"]),
                list(chunk),
            )

    def record_routing_events(
        self, df: pd.DataFrame, artifact_key: str | None = None, round: int = 1
    ) -> int:
        """Upsert one event per (run_id, round, question_id, stage) from ROUTING_COLUMNS rows.

        Re-recording (a retried task) updates in place: no duplicates. Questions not yet in
        ``questions`` get a placeholder row. Returns the number of distinct events written.
        """
        round = positive_int(round, "round")
        missing = [c for c in EVENT_REQUIRED if c not in df.columns]
        if missing:
            raise StoreError(f"record_routing_events: missing column(s) {missing}")
        check_round_column(df, round, "record_routing_events")
        events = _routing_events(df, round, artifact_key, utcnow())
        if not events:
            return 0
        run_ids = sorted({k[0] for k in events})
        with self._tx(write=True) as conn:
            known = set(
                conn.execute(select(RUNS.c.run_id).where(RUNS.c.run_id.in_(run_ids))).scalars()
            )
            unknown = [r for r in run_ids if r not in known]
            if unknown:
                raise StoreError(
                    f"record_routing_events: unknown run(s) {unknown}; call create_run first"
                )
            self._placeholder_questions(conn, (k[1] for k in events))
            for chunk in chunks(list(events.values())):
                stmt = self._insert(EVENTS)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["run_id", "round", "question_id", "stage"],
                    set_={c: stmt.excluded[c] for c in (*EVENT_FIELDS, "artifact_key")},
                )
                conn.execute(stmt, list(chunk))
        return len(events)

    def routes_for_run(self, run_id: str, round: int | None = None) -> list[dict]:
        """Events of one run (one round, or all with None), by round, stage, question."""
        stmt = (
            select(EVENTS)
            .where(by_round(EVENTS, run_id, round))
            .order_by(EVENTS.c.round, EVENTS.c.stage, EVENTS.c.question_id)
        )
        with self._tx() as conn:
            return [plain_row(r) for r in conn.execute(stmt).mappings()]

    def routes_for_question(self, question_id: str) -> list[dict]:
        """A question's history across runs and rounds, oldest first, with each run's
        kind/status/time (rows carry ``round``)."""
        stmt = (
            select(
                EVENTS,
                RUNS.c.kind.label("run_kind"),
                RUNS.c.status.label("run_status"),
                RUNS.c.created_at.label("run_created_at"),
            )
            .join(RUNS, RUNS.c.run_id == EVENTS.c.run_id)
            .where(EVENTS.c.question_id == question_id)
            .order_by(EVENTS.c.created_at, EVENTS.c.round, EVENTS.c.id)
        )
        with self._tx() as conn:
            return [plain_row(r) for r in conn.execute(stmt).mappings()]

    def prune_routing_events(self, run_id: str, round: int, keep: dict[str, str]) -> int:
        """Delete the run+round's events whose stage is not in ``keep`` or whose artifact_key
        differs from ``keep[stage]`` (a re-run with a changed config: stale stage results must
        not mix with new ones). Returns the number of events deleted."""
        round = positive_int(round, "round")
        stale = [EVENTS.c.stage.not_in(list(keep))] if keep else []
        stale += [
            and_(EVENTS.c.stage == stage, EVENTS.c.artifact_key.is_distinct_from(key))
            for stage, key in keep.items()
        ]
        cond = and_(EVENTS.c.run_id == run_id, EVENTS.c.round == round)
        if keep:
            cond = and_(cond, or_(*stale))
        with self._tx(write=True) as conn:
            return conn.execute(EVENTS.delete().where(cond)).rowcount

    # -- pairs ------------------------------------------------------------------------------
    def record_pairs(
        self, run_id: str, round: int, df: pd.DataFrame, artifact_key: str | None = None
    ) -> int:
        """Replace the run+round's pairs with ``df``'s rows in one transaction (idempotent).

        ``df`` has the pair columns of PAIR_COLUMNS plus ``split`` ("train"/"eval"); its
        ``run_id`` column, when filled, must be ``run_id``. Row order becomes ``ordinal``.
        Questions not yet in ``questions`` get a placeholder row. Returns the pairs written.
        """
        round = positive_int(round, "round")
        missing = [c for c in PAIR_REQUIRED if c not in df.columns] if len(df) else []
        if missing:
            raise StoreError(f"record_pairs: missing column(s) {missing}")
        check_round_column(df, round, "record_pairs")
        now = utcnow()
        rows = []
        for i, rec in enumerate(df.to_dict("records")):
            qid, stage, split = (text_or_none(rec[c]) for c in ("question_id", "stage", "split"))
            if not qid or not stage:
                raise StoreError(f"record_pairs: row {i} lacks question_id/stage")
            if split not in PAIR_SPLITS:
                raise StoreError(
                    f"record_pairs: row {i} has split {split!r}; expected one of {PAIR_SPLITS}"
                )
            owner = text_or_none(rec.get("run_id"))
            if owner is not None and owner != run_id:
                raise StoreError(f"record_pairs: row {i} belongs to run {owner!r}, not {run_id!r}")
            rows.append(
                {
                    "run_id": run_id,
                    "round": round,
                    "ordinal": i,
                    "question_id": qid,
                    "stage": stage,
                    "route": text_or_none(rec["route"]),
                    "granularity": text_or_none(rec["granularity"]),
                    "split": split,
                    "answer_chosen": text_or_none(rec["answer_chosen"]),
                    "answer_rejected": text_or_none(rec["answer_rejected"]),
                    "reward_chosen": float_or_none(rec["reward_chosen"]),
                    "reward_rejected": float_or_none(rec["reward_rejected"]),
                    "artifact_key": artifact_key,
                    "created_at": now,
                }
            )
        with self._tx(write=True) as conn:
            if conn.execute(select(RUNS.c.run_id).where(RUNS.c.run_id == run_id)).first() is None:
                raise StoreError(
                    f"record_pairs: unknown run {run_id!r} in {self.url}; call create_run first"
                )
            self._placeholder_questions(conn, (r["question_id"] for r in rows))
            conn.execute(
                PAIRS.delete().where(and_(PAIRS.c.run_id == run_id, PAIRS.c.round == round))
            )
            for chunk in chunks(rows):
                conn.execute(PAIRS.insert(), list(chunk))
        return len(rows)

    def pairs_for_run(self, run_id: str, round: int | None = None) -> list[dict]:
        """The run's pairs (one round, or all with None), by round then ordinal."""
        stmt = (
            select(PAIRS)
            .where(by_round(PAIRS, run_id, round))
            .order_by(PAIRS.c.round, PAIRS.c.ordinal)
        )
        with self._tx() as conn:
            return [plain_row(r) for r in conn.execute(stmt).mappings()]

    # -- checkpoints and evaluations --------------------------------------------------------
    def record_checkpoint(
        self, run_id: str, path: str | Path, kind: str, metrics: dict, round: int = 1
    ) -> None:
        """Upsert on (run_id, round, path): recording the same checkpoint again updates it."""
        round = positive_int(round, "round")
        self._require_run(run_id)
        with self._tx(write=True) as conn:
            stmt = self._insert(CHECKPOINTS).values(
                run_id=run_id,
                round=round,
                path=str(path),
                kind=kind,
                metrics=dict(metrics or {}),
                created_at=utcnow(),
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["run_id", "round", "path"],
                    set_={"kind": stmt.excluded.kind, "metrics": stmt.excluded.metrics},
                )
            )

    def checkpoints_for_run(self, run_id: str, round: int | None = None) -> list[dict]:
        """Checkpoints (one round, or all with None), by round then recording order."""
        stmt = (
            select(CHECKPOINTS)
            .where(by_round(CHECKPOINTS, run_id, round))
            .order_by(CHECKPOINTS.c.round, CHECKPOINTS.c.id)
        )
        with self._tx() as conn:
            return [plain_row(r) for r in conn.execute(stmt).mappings()]

    def record_evaluation(
        self,
        run_id: str,
        model_label: str,
        benchmark: str,
        metric: str,
        value: float | None,
        n: int,
        details: dict | None = None,
        round: int = 1,
    ) -> None:
        """Upsert on (run_id, round, model_label, benchmark, metric)."""
        round = positive_int(round, "round")
        self._require_run(run_id)
        with self._tx(write=True) as conn:
            stmt = self._insert(EVALUATIONS).values(
                run_id=run_id,
                round=round,
                model_label=model_label,
                benchmark=benchmark,
                metric=metric,
                value=float_or_none(value),
                n=int(n),
                details=details,
                created_at=utcnow(),
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["run_id", "round", "model_label", "benchmark", "metric"],
                    set_={c: stmt.excluded[c] for c in ("value", "n", "details", "created_at")},
                )
            )

    def evaluations_for_run(self, run_id: str, round: int | None = None) -> list[dict]:
        """Evaluations (one round, or all with None), by round, model, benchmark, metric."""
        stmt = (
            select(EVALUATIONS)
            .where(by_round(EVALUATIONS, run_id, round))
            .order_by(
                EVALUATIONS.c.round,
                EVALUATIONS.c.model_label,
                EVALUATIONS.c.benchmark,
                EVALUATIONS.c.metric,
            )
        )
        with self._tx() as conn:
            return [plain_row(r) for r in conn.execute(stmt).mappings()]


def _routing_events(
    df: pd.DataFrame, round_no: int, artifact_key: str | None, now: datetime
) -> dict[tuple[str, str, str], dict]:
    """ROUTING_COLUMNS rows -> one event row per (run_id, question_id, stage); the last row for
    a key wins (one upsert statement may not hit a row twice)."""
    events: dict[tuple[str, str, str], dict] = {}
    for i, rec in enumerate(df.to_dict("records")):
        key = tuple(text_or_none(rec[c]) for c in ("run_id", "question_id", "stage"))
        if not all(key) or not text_or_none(rec["decision"]):
            raise StoreError(
                f"record_routing_events: row {i} lacks run_id/question_id/stage/decision"
            )
        events[key] = {
            "run_id": key[0],
            "round": round_no,
            "question_id": key[1],
            "stage": key[2],
            "decision": text_or_none(rec["decision"]),
            "reason": text_or_none(rec.get("reason")),
            "answer_max": text_or_none(rec.get("answer_max")),
            "answer_min": text_or_none(rec.get("answer_min")),
            "correct_max": bool_or_none(rec.get("correct_max")),
            "correct_min": bool_or_none(rec.get("correct_min")),
            "reward_max": float_or_none(rec.get("reward_max")),
            "reward_min": float_or_none(rec.get("reward_min")),
            "error": text_or_none(rec.get("error")),
            "artifact_key": artifact_key,
            "created_at": now,
        }
    return events
