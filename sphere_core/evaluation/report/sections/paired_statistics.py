"""Per-round section on whether the trained model is better: paired statistics of base vs
trained per benchmark (Pass@1 difference with a paired-bootstrap CI, exact McNemar p,
right->wrong / wrong->right, format failures), from the per-item records under the round's
``eval/`` dir (``sphere_core.evaluation.compare``; docs/evaluation.md)."""

from __future__ import annotations

import pandas as pd

from sphere_core.config import EvaluationConfig
from sphere_core.errors import SphereError
from sphere_core.evaluation.compare import base_vs_trained
from sphere_core.evaluation.paired_stats import format_diff_ci, format_p
from sphere_core.evaluation.report.loading import RoundData
from sphere_core.evaluation.report.markdown import Figures, heading, md_table, pct

_DEFAULTS = EvaluationConfig()


def _share(value: float | None) -> str:
    return "n/a" if value is None else pct(value)


def statistics(
    data: RoundData,
    figs: Figures,
    level: int,
    n_boot: int = _DEFAULTS.bootstrap_samples,
    seed: int = _DEFAULTS.bootstrap_seed,
) -> list[str]:
    """Base vs trained of this round, paired over the questions both answered."""
    out = [heading(level, "Statistics (base vs trained, paired)"), ""]
    eval_dir = data.dir / "eval"
    try:
        comparisons = base_vs_trained(eval_dir, n_boot=n_boot, seed=seed)
    except SphereError as err:
        return out + [f"_Per-item evaluation records could not be read: {err}_", ""]
    if not comparisons:
        missing = (
            "_No paired statistics: this round has no per-item records of both the base "
            f"and the trained model under `{eval_dir}`._"
        )
        return out + [missing, ""]
    first = comparisons[0]
    table = pd.DataFrame(
        [
            {
                "benchmark": c.benchmark,
                "n": c.n,
                "Pass@1 base": pct(c.pass_a),
                "Pass@1 trained": pct(c.pass_b),
                f"trained − base, pp [{c.level:.0%} CI]": format_diff_ci(c),
                "McNemar p": format_p(c.p_mcnemar),
                "right→wrong": c.right_to_wrong,
                "wrong→right": c.wrong_to_right,
                "no answer (base)": _share(c.format_fail_a),
                "no answer (trained)": _share(c.format_fail_b),
            }
            for c in comparisons
        ]
    )
    note = (
        f"Paired over the questions both models answered. CI: percentile paired bootstrap "
        f"over questions ({first.n_boot} resamples, seed {first.seed}). McNemar: exact "
        "two-sided binomial test on the questions whose verdict changed (right→wrong vs "
        "wrong→right). No answer: share of answers without a parsable final answer (counted "
        "wrong). See docs/evaluation.md."
    )
    return out + [md_table(table), "", note, ""]
