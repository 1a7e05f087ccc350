"""Routing decisions per question per stage (DESIGN §6), each with a reason and evidence.

Owns the decision table only: given the graded Sol_max / Sol_min of a stage (and, for
Stages 2-3, the Stage-1 row the question came from) it returns one ROUTING_COLUMNS row.
It does not search, grade or build pairs.

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

PAIR_DECISIONS = ("pair", "pair_inverted")


@dataclass(frozen=True)
class GradedPath:
    """A path's text, extracted answer, verified correctness and trajectory reward."""

    text: str
    answer: str | None
    correct: bool
    reward: float


def _row(run_id: str, question_id: str, stage: str, decision: str, reason: str,
         best: GradedPath | None, worst: GradedPath | None, source: str | None = None,
         error: str | None = None) -> dict[str, Any]:
    row = {
        "run_id": run_id, "question_id": question_id, "stage": stage, "decision": decision,
        "reason": reason,
        "answer_max": best.answer if best else None, "answer_min": worst.answer if worst else None,
        "correct_max": best.correct if best else None, "correct_min": worst.correct if worst else None,
        "reward_max": best.reward if best else math.nan, "reward_min": worst.reward if worst else math.nan,
        "solution_max": best.text if best else None, "solution_min": worst.text if worst else None,
        "source_solution": source, "error": error,
    }
    assert list(row) == ROUTING_COLUMNS
    return row


def _ans(p: GradedPath) -> str:
    return "no final answer" if p.answer is None else f"answer {p.answer!r}"


def route_stage1(run_id: str, question_id: str, gold: str, best: GradedPath, worst: GradedPath) -> dict:
    if best.correct and not worst.correct:
        decision = "pair"
        reason = f"Sol_max is correct ({_ans(best)}) and Sol_min is wrong ({_ans(worst)}, gold {gold!r})."
    elif worst.correct and not best.correct:
        decision = "pair_inverted"
        reason = (f"Sol_min is correct ({_ans(worst)}) but Sol_max is wrong ({_ans(best)}, gold {gold!r}): "
                  "the PRM preferred the wrong path; the correct one is chosen.")
    elif not best.correct:
        decision = "to_correction"
        reason = f"Both paths are wrong (Sol_max {_ans(best)}, Sol_min {_ans(worst)}, gold {gold!r}); sent to self-correction."
    else:
        decision = "to_diversity"
        reason = f"Both paths are correct ({_ans(best)}); no negative example, sent to the diversity stage."
    return _row(run_id, question_id, "stage1", decision, reason, best, worst)


def route_stage2(run_id: str, question_id: str, gold: str, best: GradedPath, worst: GradedPath,
                 source_solution: str) -> dict:
    if best.correct:
        rejected = "Sol_min^SC" if not worst.correct else "the original wrong solution"
        decision = "pair"
        reason = f"The corrected Sol_max^SC verifies ({_ans(best)}); rejected = {rejected}."
    elif worst.correct:
        decision = "pair_inverted"
        reason = (f"Only the corrected Sol_min^SC verifies ({_ans(worst)}; Sol_max^SC {_ans(best)}); "
                  "it is chosen and Sol_max^SC rejected.")
    else:
        decision = "unresolved"
        reason = f"No corrected path verifies (Sol_max^SC {_ans(best)}, Sol_min^SC {_ans(worst)}, gold {gold!r})."
    return _row(run_id, question_id, "stage2", decision, reason, best, worst, source_solution)


def route_stage3(run_id: str, question_id: str, gold: str, best: GradedPath, worst: GradedPath,
                 chosen_solution: str) -> dict:
    if not worst.correct or not best.correct:
        which = "Sol_min" if not worst.correct else "Sol_max"
        wrong = worst if not worst.correct else best
        decision = "pair"
        reason = (f"pi_small's {which} is wrong ({_ans(wrong)}, gold {gold!r}); "
                  "paired against the Stage-1 Sol_max.")
    else:
        decision = "no_error"
        reason = f"pi_small's paths are all correct ({_ans(best)}); no negative example found."
    return _row(run_id, question_id, "stage3", decision, reason, best, worst, chosen_solution)


def error_row(run_id: str, question_id: str, stage: str, message: str) -> dict:
    return _row(run_id, question_id, stage, "error", f"The {stage} search failed: {message}", None, None,
                error=message)
