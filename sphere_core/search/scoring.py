"""Scoring of new search nodes: one batched PRM call (and ORM call when ORM shaping is on)
per batch of nodes, then each node's Eq. 3 reward.

Owns the checks on what the reward models return (one finite score per node); the reward
formula itself is ``reward.step_reward``.
"""

from __future__ import annotations

import math
import time

from sphere_core.backends.base import ORM, PRM
from sphere_core.config import RewardConfig
from sphere_core.errors import BackendError
from sphere_core.search.params import SearchParams
from sphere_core.search.reward import ParentStats, step_reward
from sphere_core.search.state import SearchStats, State
from sphere_core.search.tree import Node


def _last_scores(
    prm: PRM, questions: list[str], steps: list[list[str]], golds: list[str]
) -> list[float]:
    scores = list(prm.score_last(questions, steps, golds))  # wrapped once by pruned_search
    if len(scores) != len(steps):
        raise BackendError(f"PRM returned {len(scores)} scores for {len(steps)} candidates")
    for i, s in enumerate(scores):
        if not math.isfinite(float(s)):
            raise BackendError(f"PRM returned a non-finite score ({s}) for candidate {i}")
    return [float(s) for s in scores]


def score_nodes(
    nodes: list[Node],
    owners: list[State],
    prm: PRM,
    orm: ORM | None,
    params: SearchParams,
    reward_cfg: RewardConfig,
    stats: SearchStats,
) -> None:
    """PRM (and ORM) scores and the Eq. 3 reward of ``nodes`` (one batched call each)."""
    questions = [st.task.problem for st in owners]
    steps = [n.steps() for n in nodes]
    golds = [st.task.gold_answer for st in owners]
    t0 = time.perf_counter()
    prm_scores = _last_scores(prm, questions, steps, golds)
    stats.prm_s += time.perf_counter() - t0
    stats.prm_calls += 1
    orm_scores: list[float | None] = [None] * len(nodes)
    if params.use_orm:
        t0 = time.perf_counter()
        got = list(orm.score(questions, steps, golds))  # type: ignore[union-attr]
        stats.orm_s += time.perf_counter() - t0
        stats.orm_calls += 1
        if len(got) != len(nodes):
            raise BackendError(f"ORM returned {len(got)} scores for {len(nodes)} candidates")
        orm_scores = [float(x) for x in got]
    for node, p, o in zip(nodes, prm_scores, orm_scores):
        node.prm = p
        node.orm = math.nan if o is None else o
        parent = (
            None if node.parent is None else ParentStats(node.parent.prm, node.parent.mean_logprob)
        )
        node.reward = step_reward(
            reward_cfg, prm=p, mean_logprob=node.mean_logprob, parent=parent, orm=o
        )
