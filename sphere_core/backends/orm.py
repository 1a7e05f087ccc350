"""Outcome reward models: one score in [0, 1] for a whole (possibly partial) solution.

``ORM.score(questions, solutions, gold_answers=None) -> list[float]`` where each solution is
its list of steps. Stages 2 and 3 add ORM(prefix through s_t) to the step reward (Eq. 3), so
the search calls it with partial solutions too.

* ``prm-last`` (default): the PRM's reward of the solution's last step, its ``score_last``
  (``prm.with_score_last`` gives one to a PRM that has only ``score``); backends memoise it, so
  right after the search's own PRM call on the same prefixes this costs nothing.
* ``verifier``: gold-answer check. A solution is terminal when its text states a final
  answer (``grading.extract.has_final_answer``): 1.0 if that answer verifies, 0.0 if it is
  wrong; 0.5 for a solution with no final answer yet. Needs gold answers.

Factories: ``factory(cfg, home, prm) -> ORM``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sphere_core.backends.prm import check_inputs, check_last_scores, with_score_last
from sphere_core.backends.prm_simple import outcome_rewards
from sphere_core.backends.registry import register_orm
from sphere_core.config import GradingConfig, SphereConfig
from sphere_core.errors import BackendError


class PRMLastORM:
    name = "prm-last"

    def __init__(self, prm: Any) -> None:
        if prm is None:
            raise BackendError("ORM prm-last needs a PRM (got None)")
        self.prm = with_score_last(prm)

    def score(
        self,
        questions: Sequence[str],
        solutions: Sequence[Sequence[str]],
        gold_answers: Sequence[str] | None = None,
    ) -> list[float]:
        check_inputs(f"ORM {self.name}", questions, solutions, gold_answers)
        if not questions:
            return []
        scores = list(self.prm.score_last(questions, solutions, gold_answers))
        return check_last_scores(f"ORM {self.name}", solutions, scores)


class VerifierORM:
    name = "verifier"

    def __init__(self, grading: GradingConfig, delimiter: str = "\n\n") -> None:
        self.grading = grading
        self.delimiter = delimiter

    def score(
        self,
        questions: Sequence[str],
        solutions: Sequence[Sequence[str]],
        gold_answers: Sequence[str] | None = None,
    ) -> list[float]:
        check_inputs(f"ORM {self.name}", questions, solutions, gold_answers, need_gold=True)
        if not questions:
            return []
        texts = [self.delimiter.join(str(s) for s in steps) for steps in solutions]
        return outcome_rewards(texts, [str(g) for g in gold_answers], self.grading)  # type: ignore[union-attr]


@register_orm("prm-last")
def _prm_last_factory(cfg: SphereConfig, home: Path, prm: Any) -> PRMLastORM:
    return PRMLastORM(prm)


@register_orm("verifier")
def _verifier_factory(cfg: SphereConfig, home: Path, prm: Any = None) -> VerifierORM:
    return VerifierORM(cfg.grading, cfg.search.step_delimiter)
