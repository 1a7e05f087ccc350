"""Stage 1, self-generation: the policy searches every question with E candidates per node.

Routing (answers verified against gold; only a real final answer counts):

| outcome                          | decision        | next                         |
|----------------------------------|-----------------|------------------------------|
| Sol_max right, Sol_min wrong     | ``pair``        | pair (chosen Sol_max)        |
| Sol_max wrong, Sol_min right     | ``pair_inverted`` | pair (chosen Sol_min; the PRM disagreed) |
| both wrong (or no final answer)  | ``to_correction`` | the correction stage        |
| both right                       | ``to_diversity``  | the diversity stage         |
"""

from __future__ import annotations

from sphere_core.routing import GradedPath, describe, routing_row
from sphere_core.stages import register
from sphere_core.stages.base import (
    PAIR,
    PAIR_INVERTED,
    BaseStage,
    Decision,
    StageItem,
    pair_candidate,
    side,
)

TO_CORRECTION = Decision("to_correction", "both paths wrong: sent to Stage 2", "#ff7f0e")
TO_DIVERSITY = Decision("to_diversity", "both paths right: sent to Stage 3", "#1f77b4")


class Generation(BaseStage):
    name = "stage1"
    title = "Stage 1 (self-generation)"
    decisions = (PAIR, PAIR_INVERTED, TO_CORRECTION, TO_DIVERSITY)
    pair_decisions = ("pair", "pair_inverted")
    seed_offset = 0
    summary = (
        "The policy samples E candidate next steps per node; the PRM-guided Eq. 3 reward "
        "keeps the best and the worst step per depth, giving Sol_max and Sol_min."
    )

    def route(self, run_id: str, item: StageItem, best: GradedPath, worst: GradedPath) -> dict:
        gold = item.gold
        if best.correct and not worst.correct:
            decision = "pair"
            reason = (
                f"Sol_max is correct ({describe(best)}) and Sol_min is wrong "
                f"({describe(worst)}, gold {gold!r})."
            )
        elif worst.correct and not best.correct:
            decision = "pair_inverted"
            reason = (
                f"Sol_min is correct ({describe(worst)}) but Sol_max is wrong ({describe(best)}, "
                f"gold {gold!r}): the PRM preferred the wrong path; the correct one is chosen."
            )
        elif not best.correct:
            decision = "to_correction"
            reason = (
                f"Both paths are wrong (Sol_max {describe(best)}, Sol_min {describe(worst)}, "
                f"gold {gold!r}); sent to self-correction."
            )
        else:
            decision = "to_diversity"
            reason = (
                f"Both paths are correct ({describe(best)}); no negative example, sent to "
                "the diversity stage."
            )
        return routing_row(run_id, item.question_id, self.name, decision, reason, best, worst)

    def pair_candidates(self, row, question, upstream, run_id):
        if row["decision"] not in self.pair_decisions:
            return []
        good, bad = ("max", "min") if row["decision"] == "pair" else ("min", "max")
        return [
            pair_candidate(
                self.name,
                row["decision"],
                question,
                self.messages(question["problem"], None),
                side(row, good),
                side(row, bad),
                run_id,
            )
        ]


register(Generation())
