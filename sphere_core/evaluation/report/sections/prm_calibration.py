"""Per-round section: PRM calibration of the first stage's search reward.

The figures are ``sphere_core.calibration.calibrate`` on the round's tree and routing tables
(the same computation as ``sphere calibration --run X`` and ``bench/prm_calibration.py``).
"""

from __future__ import annotations

import pandas as pd

from sphere_core.calibration import NEAR_CHANCE, Calibration, calibrate
from sphere_core.evaluation.report.loading import READ_ERRORS, RoundData
from sphere_core.evaluation.report.markdown import Figures, heading, md_table

STAGE = "stage1"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _lines(cal: Calibration) -> list[str]:
    share = (
        f"**{cal.pairs}/{cal.pairs + cal.pairs_inverted}** ({100 * cal.sol_max_right_share:.0f} %)"
        if cal.sol_max_right_share is not None
        else "– (no contrastive question)"
    )
    rows = [
        {"figure": "Sol_max is the right path (pair / (pair + pair_inverted))", "value": share},
        {
            "figure": f"AUROC of the path reward, {cal.finished_paths} finished paths "
            f"({cal.right_paths} right)",
            "value": _num(cal.auroc),
        },
        {
            "figure": "AUROC over the routed Sol_max / Sol_min paths",
            "value": _num(cal.auroc_routed),
        },
        {
            "figure": "mean path reward of right / wrong finished paths",
            "value": f"{_num(cal.mean_reward_right)} / {_num(cal.mean_reward_wrong)}",
        },
    ]
    rows += [
        {"figure": f"AUROC at depth {d} ({cal.paths_by_depth[d]} paths)", "value": _num(v)}
        for d, v in cal.auroc_by_depth.items()
    ]
    out = [md_table(pd.DataFrame(rows)), ""]
    if cal.auroc is None:
        out += ["_AUROC undefined: the finished paths are not both right and wrong._", ""]
    elif cal.near_chance:
        out += [
            (
                f"**The PRM is near chance in this run** (AUROC {cal.auroc:.3f} < "
                f"{NEAR_CHANCE}): its path reward barely separates right from wrong paths"
                + (", and it prefers wrong ones." if cal.auroc < 0.5 else ".")
            ),
            "",
        ]
    return out


def calibration(data: RoundData, figs: Figures, level: int) -> list[str]:
    """Does the search reward prefer right paths? Sol_max-right share, AUROC, mean rewards."""
    out = [
        heading(level, "PRM calibration"),
        "",
        (
            "How well the search reward of Stage 1 tells right from wrong. A finished path is a "
            "tree path ending in a final answer, at EOS or in a completion rollout; its reward is "
            "the mean step reward, its correctness the routing grade of its answer. AUROC: the "
            "chance that a right path out-scores a wrong one (ties 1/2; 0.5 is a coin)."
        ),
        "",
    ]
    if data.view is None or not data.has_view:
        return out + ["_No run view for this round: no tree to calibrate._", ""]
    try:
        questions = data.view.questions()
        golds = {str(q): str(a) for q, a in zip(questions["question_id"], questions["answer"])}
        tree, routing = data.view.tree(STAGE), data.view.routing(STAGE)
    except READ_ERRORS as err:
        return out + [f"_Cannot read the round's tree or routing: {err}_", ""]
    if routing.empty:
        return out + ["_Stage 1 left no routing rows in this round._", ""]
    return out + _lines(calibrate(tree, routing, golds, stage=STAGE))
