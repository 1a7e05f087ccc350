"""Stage 3, diversity: when both Stage-1 paths are right there is no negative example, so a
smaller policy pi_small searches the question with factor x E candidates to produce plausible
errors (ORM shaping on, as in Stage 2).

Takes the questions Stage 1 routed ``to_diversity``.

| outcome                                 | decision     | pair                                  |
|-----------------------------------------|--------------|---------------------------------------|
| pi_small's Sol_min (else Sol_max) wrong | ``pair``     | chosen the Stage-1 Sol_max, rejected  |
|                                         |              | that wrong path                       |
| pi_small's paths all right              | ``no_error`` | none                                  |

pi_small is ``models.small`` (default: the policy itself, with a warning: the paper asks for a
smaller model of the same family).
"""

from __future__ import annotations

from sphere_core.routing import GradedPath, describe, routing_row
from sphere_core.stages import register
from sphere_core.stages.base import (
    PAIR,
    BaseStage,
    Decision,
    StageItem,
    Upstream,
    pair_candidate,
    side,
)

NO_ERROR = Decision("no_error", "pi_small found no wrong path: no pair", "#9467bd")


class Diversity(BaseStage):
    name = "stage3"
    title = "Stage 3 (diversity)"
    consumes = Upstream("stage1", "to_diversity")
    decisions = (PAIR, NO_ERROR)
    seed_offset = 2000
    summary = (
        "Questions both Stage-1 paths got right: a smaller policy pi_small searches with "
        "factor x E candidates; its wrong path becomes the rejected answer against the "
        "Stage-1 Sol_max."
    )

    def model(self, cfg):
        return cfg.small_model

    def num_candidates(self, cfg):
        return cfg.search.num_candidates * cfg.search.small_candidates_factor

    def uses_orm(self, cfg):
        return cfg.reward.use_orm

    def artifact_config(self, cfg):
        return {**super().artifact_config(cfg), "small_is_intended": cfg.models.small_is_intended}

    def warnings(self, cfg):
        from sphere_core.stages.small_model_check import small_model_warning

        warning = small_model_warning(
            cfg.models.policy, self.model(cfg), cfg.models.small_is_intended
        )
        return [warning] if warning else []

    def item(self, cfg, question, upstream):
        chosen = (upstream or {}).get("solution_max")
        return StageItem(
            question["question_id"],
            question["problem"],
            str(question["answer"]),
            self.messages(question["problem"], None),
            chosen,
        )

    def route(self, run_id: str, item: StageItem, best: GradedPath, worst: GradedPath) -> dict:
        if not worst.correct or not best.correct:
            which, wrong = ("Sol_min", worst) if not worst.correct else ("Sol_max", best)
            decision = "pair"
            reason = (
                f"pi_small's {which} is wrong ({describe(wrong)}, gold {item.gold!r}); "
                "paired against the Stage-1 Sol_max."
            )
        else:
            decision = "no_error"
            reason = (
                f"pi_small's paths are all correct ({describe(best)}); no negative example found."
            )
        return routing_row(
            run_id, item.question_id, self.name, decision, reason, best, worst, item.context
        )

    def pair_candidates(self, row, question, upstream, run_id):
        if row["decision"] != "pair":
            return []
        origin = upstream.get(self.consumes.stage, {})
        wrong = "min" if not row["correct_min"] else "max"
        chosen = (row["source_solution"], *side(origin, "max")[1:])
        return [
            pair_candidate(
                self.name,
                "pair",
                question,
                self.messages(question["problem"], None),
                chosen,
                side(row, wrong),
                run_id,
            )
        ]


register(Diversity())
