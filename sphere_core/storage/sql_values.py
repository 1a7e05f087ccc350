"""What the repository's queries share: the tables, row limits and value conversions.

pandas/numpy cells become Python values (NaN/NA/NaT -> None), timestamps ISO-8601 UTC strings;
rounds and other counts are checked integers. No SQL statement lives here (``repo.py`` and
``repo_results.py`` hold them).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Table, and_

from sphere_core.errors import StoreError
from sphere_core.storage.models import Checkpoint, Evaluation, Pair, Question, RoutingEvent, Run

RUNS: Table = Run.__table__  # type: ignore[assignment]
QUESTIONS: Table = Question.__table__  # type: ignore[assignment]
EVENTS: Table = RoutingEvent.__table__  # type: ignore[assignment]
CHECKPOINTS: Table = Checkpoint.__table__  # type: ignore[assignment]
EVALUATIONS: Table = Evaluation.__table__  # type: ignore[assignment]
PAIRS: Table = Pair.__table__  # type: ignore[assignment]

EVENT_FIELDS = (
    "decision",
    "reason",
    "answer_max",
    "answer_min",
    "correct_max",
    "correct_min",
    "reward_max",
    "reward_min",
    "error",
)
EVENT_REQUIRED = ("run_id", "question_id", "stage", "decision")
PAIR_REQUIRED = (
    "question_id",
    "stage",
    "route",
    "granularity",
    "split",
    "answer_chosen",
    "answer_rejected",
    "reward_chosen",
    "reward_rejected",
)
CHUNK = 500


# -- value conversion ---------------------------------------------------------------------------


def iso_time(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # SQLite drops the offset; we always store UTC
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    return value


def plain_row(mapping: Any) -> dict[str, Any]:
    return {k: iso_time(v) for k, v in dict(mapping).items()}


def scalar(value: Any) -> Any:
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


def text_or_none(value: Any) -> str | None:
    value = scalar(value)
    return None if value is None else str(value)


def bool_or_none(value: Any) -> bool | None:
    value = scalar(value)
    return None if value is None else bool(value)


def float_or_none(value: Any) -> float | None:
    value = scalar(value)
    return None if value is None else float(value)


def chunks(rows: Sequence[dict], size: int = CHUNK) -> Iterable[Sequence[dict]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def positive_int(value: Any, what: str) -> int:
    """An int >= 1 (numpy ints accepted); StoreError otherwise."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or number < 1:
        raise StoreError(f"invalid {what} {value!r}: need an integer >= 1")
    return number


def check_round_column(df: pd.DataFrame, round: int, where: str) -> None:
    """A frame's own ``round`` column, when it has one, must agree with the round recorded."""
    if "round" in df.columns:
        found = {int(v) for v in df["round"].dropna().unique()}
        if found - {round}:
            raise StoreError(
                f"{where}: the frame's round column has {sorted(found)}; recording round {round}"
            )


def by_round(table: Table, run_id: str, round: int | None) -> Any:
    cond = table.c.run_id == run_id
    return cond if round is None else and_(cond, table.c.round == positive_int(round, "round"))
