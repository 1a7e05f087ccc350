"""The routing vocabulary shared by every stage: graded paths, routing rows, error rows.

Each stage owns its own decision rules (``sphere_core/stages/<stage>.py``, method ``route``);
this module only builds the ROUTING_COLUMNS row every rule returns, so a routing event always
carries its decision, a human-readable reason and the evidence (answers, correctness, rewards,
solutions). The full decision table of the built-in stages:

| stage  | outcome                                   | decision        |
|--------|-------------------------------------------|-----------------|
| stage1 | max right, min wrong                      | pair            |
| stage1 | max wrong, min right                      | pair_inverted   |
| stage1 | both wrong (or no final answer)           | to_correction   |
| stage1 | both right                                | to_diversity    |
| stage2 | corrected max path right                  | pair            |
| stage2 | only the corrected min path right         | pair_inverted   |
| stage2 | nothing right                             | unresolved      |
| stage3 | pi_small's min (else max) path wrong      | pair            |
| stage3 | pi_small's paths all right                | no_error        |
| any    | the search for this question failed       | error           |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sphere_core.schemas import ROUTING_COLUMNS


@dataclass(frozen=True)
class GradedPath:
    """A path's text, extracted answer, verified correctness and trajectory reward."""

    text: str
    answer: str | None
    correct: bool
    reward: float


def routing_row(
    run_id: str,
    question_id: str,
    stage: str,
    decision: str,
    reason: str,
    best: GradedPath | None,
    worst: GradedPath | None,
    source: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """One ROUTING_COLUMNS row: the decision, its reason and the evidence."""
    row = {
        "run_id": run_id,
        "question_id": question_id,
        "stage": stage,
        "decision": decision,
        "reason": reason,
        "answer_max": best.answer if best else None,
        "answer_min": worst.answer if worst else None,
        "correct_max": best.correct if best else None,
        "correct_min": worst.correct if worst else None,
        "reward_max": best.reward if best else math.nan,
        "reward_min": worst.reward if worst else math.nan,
        "solution_max": best.text if best else None,
        "solution_min": worst.text if worst else None,
        "source_solution": source,
        "error": error,
    }
    assert list(row) == ROUTING_COLUMNS
    return row


def describe(path: GradedPath) -> str:
    """``answer '42'`` or ``no final answer`` (for reasons)."""
    return "no final answer" if path.answer is None else f"answer {path.answer!r}"


def error_row(run_id: str, question_id: str, stage: str, message: str) -> dict[str, Any]:
    return routing_row(
        run_id,
        question_id,
        stage,
        "error",
        f"The {stage} search failed: {message}",
        None,
        None,
        error=message,
    )
