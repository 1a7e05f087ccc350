"""Stage 2, self-correction: the policy sees its own wrong Stage-1 solution and the paper's
correction prompt, and searches again with ORM shaping (Eq. 3 plus an outcome term).

Takes the questions Stage 1 routed ``to_correction``. The solution shown is the Stage-1 Sol_min
by default (``routing.correction_source``: min | max).

| outcome                             | decision          | pair                                   |
|-------------------------------------|-------------------|----------------------------------------|
| corrected Sol_max^SC right          | ``pair``          | chosen Sol_max^SC; rejected Sol_min^SC |
|                                     |                   | if wrong, else the original wrong one  |
| only the corrected Sol_min^SC right | ``pair_inverted`` | chosen Sol_min^SC, rejected Sol_max^SC |
| nothing right                       | ``unresolved``    | none                                   |

Pairs carry the correction turn in their prompt (system, user problem, assistant wrong
solution, user correction prompt).
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
    Upstream,
    pair_candidate,
    side,
)

UNRESOLVED = Decision("unresolved", "still no right and wrong path after correction", "#d62728")


class Correction(BaseStage):
    name = "stage2"
    title = "Stage 2 (self-correction)"
    consumes = Upstream("stage1", "to_correction")
    decisions = (PAIR, PAIR_INVERTED, UNRESOLVED)
    pair_decisions = ("pair", "pair_inverted")
    seed_offset = 1000
    summary = (
        "Questions both Stage-1 paths got wrong: the policy sees its wrong solution plus "
        "the correction prompt and searches again; the reward adds an outcome (ORM) term."
    )

    def uses_orm(self, cfg):
        return cfg.reward.use_orm

    def artifact_config(self, cfg):
        return {**super().artifact_config(cfg), "correction_source": cfg.routing.correction_source}

    def messages(self, problem, context):
        from sphere_core.prompts import correction_messages

        return correction_messages(problem, context or "")

    def item(self, cfg, question, upstream):
        source = (upstream or {}).get(f"solution_{cfg.routing.correction_source}") or ""
        return StageItem(
            question["question_id"],
            question["problem"],
            str(question["answer"]),
            self.messages(question["problem"], source),
            source,
        )

    def route(self, run_id: str, item: StageItem, best: GradedPath, worst: GradedPath) -> dict:
        if best.correct:
            rejected = "Sol_min^SC" if not worst.correct else "the original wrong solution"
            decision = "pair"
            reason = f"The corrected Sol_max^SC verifies ({describe(best)}); rejected = {rejected}."
        elif worst.correct:
            decision = "pair_inverted"
            reason = (
                f"Only the corrected Sol_min^SC verifies ({describe(worst)}; Sol_max^SC "
                f"{describe(best)}); it is chosen and Sol_max^SC rejected."
            )
        else:
            decision = "unresolved"
            reason = (
                f"No corrected path verifies (Sol_max^SC {describe(best)}, Sol_min^SC "
                f"{describe(worst)}, gold {item.gold!r})."
            )
        return routing_row(
            run_id, item.question_id, self.name, decision, reason, best, worst, item.context
        )

    def pair_candidates(self, row, question, upstream, run_id):
        if row["decision"] not in self.pair_decisions:
            return []
        source = row["source_solution"]
        prompt = self.messages(question["problem"], source)
        if row["decision"] == "pair_inverted":
            return [
                pair_candidate(
                    self.name,
                    "pair_inverted",
                    question,
                    prompt,
                    side(row, "min"),
                    side(row, "max"),
                    run_id,
                )
            ]
        if row["correct_min"]:  # Sol_min^SC is right too: reject the original wrong solution
            origin = upstream.get(self.consumes.stage, {})
            which = "min" if origin.get("solution_min") == source else "max"
            rejected = (source, *side(origin, which)[1:])
        else:
            rejected = side(row, "min")
        return [
            pair_candidate(self.name, "pair", question, prompt, side(row, "max"), rejected, run_id)
        ]


register(Correction())
