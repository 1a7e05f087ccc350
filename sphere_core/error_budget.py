"""The error budget of a generate round (``orchestration.max_error_fraction``).

A question whose search or grading fails becomes an ``error`` routing row, so one bad
question does not stop a shard. That is right for a handful of malformed questions, wrong for
a dead server: then every question errs and the round would "complete" with zero pairs. After
a round's stages finish, each stage's share of ``error`` rows is checked: over the budget the
round fails (``ErrorBudgetExceeded``: one line naming the stage, the count and the first
error; the run record says ``failed``); under it the errors are counted in a note the run
record keeps (``sphere runs`` shows "completed, 3 errors"). Either way the errored questions
are not final: re-running the run id (``sphere resume``) searches them again and keeps the
finished ones (``RunOutputs.stage_shard``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sphere_core.errors import ErrorBudgetExceeded

NOTE_RE = re.compile(r"^(\d+) errors? ")


def stage_errors(routing_counts: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Stage -> (questions that ended in ``error``, questions), in stage order."""
    out: dict[str, tuple[int, int]] = {}
    for row in routing_counts:
        errors, total = out.get(row["stage"], (0, 0))
        n = int(row["questions"])
        out[row["stage"]] = (errors + (n if row["decision"] == "error" else 0), total + n)
    return out


def check_error_budget(
    routing_counts: list[dict[str, Any]],
    max_fraction: float,
    first_error: Callable[[str], str],
    run_id: str,
) -> str | None:
    """Raise when a stage is over the budget; else the note of the errors (None: no errors).

    ``first_error(stage)`` gives "question_id: message" of the stage's first error row.
    """
    per_stage = stage_errors(routing_counts)
    for stage, (errors, total) in per_stage.items():
        if total and errors / total > max_fraction:
            raise ErrorBudgetExceeded(
                f"{stage}: {errors} of {total} questions ended in error ({errors / total:.0%}, "
                f"over orchestration.max_error_fraction={max_fraction:g}); first error: "
                f"{first_error(stage)}; `sphere resume {run_id}` retries the errored questions"
            )
    errors = sum(e for e, _ in per_stage.values())
    if not errors:
        return None
    where = ", ".join(f"{s} {e}/{t}" for s, (e, t) in per_stage.items() if e)
    first = next(s for s, (e, _) in per_stage.items() if e)
    return (
        f"{errors} error{'s' if errors != 1 else ''} within "
        f"orchestration.max_error_fraction={max_fraction:g} ({where}); first: "
        f"{first_error(first)}"
    )


def errors_in_note(note: str | None) -> int | None:
    """The error count of a note written by :func:`check_error_budget` (None: not one)."""
    match = NOTE_RE.match(note or "")
    return int(match.group(1)) if match else None


def one_line(text: str, limit: int = 300) -> str:
    """A message squeezed onto one line of at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def first_error(home: Any, plan: Any, stage: str) -> str:
    """ "question_id: message" of the first ``error`` row of ``stage`` in a round's shards."""
    from pathlib import Path

    from sphere_core.storage.run_outputs import RunOutputs, routing_output

    store = RunOutputs(Path(home)).store
    for shard in range(plan.n_shards):
        routing = store.read_shard(routing_output(stage), plan.stages[stage], shard)
        errors = routing[routing["decision"] == "error"]
        if len(errors):
            row = errors.iloc[0]
            return f"{row['question_id']}: {one_line(row['error'] or row['reason'])}"
    return "(no error row found)"


def combine_notes(notes: list[str | None]) -> str | None:
    """One note for a run of several rounds (the errors summed; each round's note after)."""
    kept = [(r, n) for r, n in enumerate(notes, 1) if n]
    if len(kept) <= 1:
        return kept[0][1] if kept else None
    total = sum(errors_in_note(n) or 0 for _, n in kept)
    return f"{total} errors in {len(kept)} rounds: " + "; ".join(f"round {r}: {n}" for r, n in kept)
