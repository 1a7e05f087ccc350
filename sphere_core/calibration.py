"""PRM calibration of a run: does the search reward prefer right paths?

One computation, shared by the run report, ``sphere calibration`` and
``bench/prm_calibration.py``. From a stage's tree and routing tables (and the gold answers):

* **Sol_max-right share**: among the questions the stage routed to a contrastive pair, the share
  where Sol_max (the path with the highest search reward) is the right one, i.e.
  ``pair / (pair + pair_inverted)``.
* **AUROC** of the path reward for final-answer correctness over every *finished path* of the
  tree, overall and by the depth of the path's tail. A finished path is the lineage of a tree
  node that ends a path in the search (``terminal``: it states a final answer, ended at EOS, or
  is a completion rollout); it is right when the answer extracted from its tail (the stored
  ``extracted_answer``, else the routing rule's strict extraction of the tail's text: a
  final-answer sentence or ``\\boxed{}``) verifies against the gold answer,
  and wrong otherwise (no answer is wrong, as in routing). Its reward is the mean step reward
  along the lineage, the trajectory score routing reports (``PathResult.reward``).
  AUROC is Mann-Whitney's U / (n_right x n_wrong) with ties counted 1/2: the chance that a
  random right path out-scores a random wrong one. 0.5 is a coin; below 0.5 the reward prefers
  wrong paths. ``NEAR_CHANCE``: an AUROC under 0.6 is flagged.
* **Mean reward** of right and of wrong finished paths.
* **Routed AUROC**: the same statistic over the Sol_max / Sol_min paths routing graded (needs
  no gold answers).

``terms`` re-scores the stored nodes instead of using the stored rewards: the step reward is
recomputed from the stored PRM score and policy log-prob with the PRM term only (``prm``), the
advantage term only (``adv``) or both (``eq3``), exactly as ``search.reward.step_reward``. This
re-scores the *same* paths; it does not say which paths a search steered by that reward would
have found (that needs a search run with it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sphere_core.config import GradingConfig, RewardConfig
from sphere_core.search.reward import ParentStats, step_reward

NEAR_CHANCE = 0.6
"""A path reward with an AUROC below this is reported as near chance."""

TERMS: dict[str, tuple[bool, bool]] = {
    "eq3": (True, True),
    "prm": (True, False),
    "adv": (False, True),
}
"""Reward terms for re-scoring: name -> (use_prm, use_advantage)."""

PATH_COLUMNS = [
    "question_id",
    "node_id",
    "side",
    "depth",
    "steps",
    "reward",
    "prm_mean",
    "answer",
    "completion",
]


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """P(score of a random positive > a random negative), ties counted 1/2; None without both.

    Scores that are not finite (NaN: a path without a reward, e.g. from the sampling strategy)
    are left out.
    """
    finite = [(float(s), bool(y)) for s, y in zip(scores, labels) if math.isfinite(float(s))]
    pos = [s for s, y in finite if y]
    neg = [s for s, y in finite if not y]
    if not pos or not neg:
        return None
    ranked = sorted(pos + neg)
    ranks: dict[float, float] = {}
    i = 0
    while i < len(ranked):  # average 1-based rank of each distinct value
        j = i
        while j < len(ranked) and ranked[j] == ranked[i]:
            j += 1
        ranks[ranked[i]] = (i + 1 + j) / 2.0
        i = j
    u = sum(ranks[s] for s in pos) - len(pos) * (len(pos) + 1) / 2.0
    return u / (len(pos) * len(neg))


@dataclass(frozen=True)
class Calibration:
    """The calibration figures of one stage of one run (None where undefined)."""

    stage: str
    reward: str  # "stored" or a TERMS name
    questions: int
    pairs: int
    pairs_inverted: int
    sol_max_right_share: float | None
    finished_paths: int
    right_paths: int
    auroc: float | None
    auroc_routed: float | None
    mean_reward_right: float | None
    mean_reward_wrong: float | None
    auroc_by_depth: dict[int, float | None] = field(default_factory=dict)
    paths_by_depth: dict[int, int] = field(default_factory=dict)

    @property
    def near_chance(self) -> bool:
        """True when the AUROC is known and under ``NEAR_CHANCE``."""
        return self.auroc is not None and self.auroc < NEAR_CHANCE

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["auroc_by_depth"] = {str(k): v for k, v in self.auroc_by_depth.items()}
        out["paths_by_depth"] = {str(k): v for k, v in self.paths_by_depth.items()}
        out["near_chance"] = self.near_chance
        return out


def _step_rewards(tree: pd.DataFrame, terms: str | None, epsilon: float) -> dict[str, float]:
    if terms is None:
        return {str(r.node_id): float(r.reward) for r in tree.itertuples()}
    if terms not in TERMS:
        raise ValueError(f"unknown reward terms {terms!r}; choose one of {', '.join(TERMS)}")
    use_prm, use_adv = TERMS[terms]
    cfg = RewardConfig(use_prm=use_prm, use_advantage=use_adv, use_orm=False, epsilon=epsilon)
    rows = {str(r.node_id): r for r in tree.itertuples()}
    out = {}
    for nid, r in rows.items():
        parent = rows.get(str(r.parent_id)) if r.parent_id is not None else None
        stats = (
            None
            if parent is None
            else ParentStats(float(parent.prm_score), float(parent.policy_mean_logprob))
        )
        out[nid] = step_reward(
            cfg, prm=float(r.prm_score), mean_logprob=float(r.policy_mean_logprob), parent=stats
        )
    return out


def finished_paths(
    tree: pd.DataFrame, stage: str = "stage1", *, terms: str | None = None, epsilon: float = 1e-3
) -> pd.DataFrame:
    """One row per finished path of ``stage`` (PATH_COLUMNS); ``reward`` is the mean step reward."""
    tree = tree[tree["stage"] == stage] if "stage" in tree.columns else tree
    rewards = _step_rewards(tree, terms, epsilon)
    by_id = {str(r.node_id): r for r in tree.itertuples()}
    rows = []
    for r in tree.itertuples():
        if not bool(r.terminal):
            continue
        lineage, node = [], r
        while node is not None:
            lineage.append(node)
            pid = node.parent_id
            node = by_id.get(str(pid)) if pid is not None and not _isnan(pid) else None
        step_r = [rewards[str(n.node_id)] for n in lineage]
        prms = [float(n.prm_score) for n in lineage]
        rows.append(
            {
                "question_id": r.question_id,
                "node_id": str(r.node_id),
                "side": r.path,
                "depth": int(r.depth),
                "steps": len(lineage),
                "reward": sum(step_r) / len(step_r),
                "prm_mean": sum(prms) / len(prms),
                "answer": _answer(r),
                "completion": bool(getattr(r, "completion", False)),
            }
        )
    return pd.DataFrame(rows, columns=PATH_COLUMNS)


def _answer(row: Any) -> str | None:
    """The tail's stored answer, else the routing rule's extraction of its text."""
    answer = row.extracted_answer
    if answer is not None and not _isnan(answer):
        return str(answer)
    from sphere_core.grading import extract_answer

    return extract_answer(str(row.text or ""), fallback="none")


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def grade_paths(
    paths: pd.DataFrame, golds: Mapping[str, str], grading: GradingConfig | None = None
) -> list[bool]:
    """Whether each finished path's answer verifies against its question's gold (None: wrong)."""
    from sphere_core.grading import get_grader

    out = [False] * len(paths)
    todo = [
        i
        for i, (a, q) in enumerate(zip(paths["answer"], paths["question_id"]))
        if a is not None and not _isnan(a) and str(q) in golds
    ]
    if todo:
        verdicts = get_grader(grading or GradingConfig()).verify(
            [str(paths["answer"].iloc[i]) for i in todo],
            [str(golds[str(paths["question_id"].iloc[i])]) for i in todo],
        )
        for i, ok in zip(todo, verdicts):
            out[i] = bool(ok)
    return out


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _routed_auroc(routing: pd.DataFrame) -> float | None:
    scores, labels = [], []
    for r in routing.to_dict("records"):
        for side in ("max", "min"):
            reward, correct = r.get(f"reward_{side}"), r.get(f"correct_{side}")
            if correct is None or _isnan(correct) or reward is None or _isnan(float(reward)):
                continue
            scores.append(float(reward))
            labels.append(bool(correct))
    return auroc(scores, labels)


def calibrate(
    tree: pd.DataFrame,
    routing: pd.DataFrame,
    golds: Mapping[str, str],
    grading: GradingConfig | None = None,
    *,
    stage: str = "stage1",
    terms: str | None = None,
    epsilon: float = 1e-3,
) -> Calibration:
    """The calibration of ``stage`` from its tree and routing tables and the gold answers."""
    routing = routing[(routing["stage"] == stage) & (routing["decision"] != "error")]
    decisions = routing["decision"].value_counts().to_dict()
    pairs, inverted = int(decisions.get("pair", 0)), int(decisions.get("pair_inverted", 0))
    paths = finished_paths(tree, stage, terms=terms, epsilon=epsilon)
    right = grade_paths(paths, golds, grading)
    rewards = [float(x) for x in paths["reward"]]
    depths = [int(d) for d in paths["depth"]]
    by_depth = sorted(set(depths))
    return Calibration(
        stage=stage,
        reward=terms or "stored",
        questions=int(routing["question_id"].nunique()),
        pairs=pairs,
        pairs_inverted=inverted,
        sol_max_right_share=pairs / (pairs + inverted) if pairs + inverted else None,
        finished_paths=len(paths),
        right_paths=sum(right),
        auroc=auroc(rewards, right),
        auroc_routed=_routed_auroc(routing) if terms is None else None,
        mean_reward_right=_mean([s for s, y in zip(rewards, right) if y]),
        mean_reward_wrong=_mean([s for s, y in zip(rewards, right) if not y]),
        auroc_by_depth={
            d: auroc(
                [s for s, e in zip(rewards, depths) if e == d],
                [y for y, e in zip(right, depths) if e == d],
            )
            for d in by_depth
        },
        paths_by_depth={d: depths.count(d) for d in by_depth},
    )


def run_calibration(
    home: Path,
    run_id: str,
    round: int = 1,
    *,
    stage: str = "stage1",
    grading: GradingConfig | None = None,
    terms: str | None = None,
) -> Calibration:
    """``calibrate`` on the stored tables of a run's round (``RunNotFoundError`` if missing)."""
    from sphere_core.storage.run_view import RunView

    view = RunView(home, run_id, round)
    questions = view.questions()
    golds = {str(q): str(a) for q, a in zip(questions["question_id"], questions["answer"])}
    return calibrate(
        view.tree(stage), view.routing(stage), golds, grading, stage=stage, terms=terms
    )
