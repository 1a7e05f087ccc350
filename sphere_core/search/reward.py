"""The step reward R(s_t) of the paper's Eq.3, one term per switch.

Owns the arithmetic only: the search passes in the PRM score, the policy probability of
the step and of its parent, and (Stages 2-3) the ORM score of the prefix.

    R(s_0) = prm(s_0)
    R(s_t) = prm(s_t) + (pi(s_t) - pi(s_{t-1})) / max(prm(s_{t-1}), eps)        t > 0
    + orm_weight * ORM(s_0..s_t)                                    Stages 2 and 3

with pi(s) = exp(mean token log-prob of s under the policy that generated it) and
s_{t-1} the parent step on the same path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sphere_core.config import RewardConfig


def policy_prob(mean_logprob: float) -> float:
    """pi(s): the geometric-mean token probability of a step, in (0, 1]."""
    return math.exp(min(0.0, float(mean_logprob)))


@dataclass(frozen=True)
class ParentStats:
    """What Eq.3 needs from the parent step s_{t-1}."""

    prm: float
    mean_logprob: float


def step_reward(
    cfg: RewardConfig,
    *,
    prm: float,
    mean_logprob: float,
    parent: ParentStats | None,
    orm: float | None = None,
) -> float:
    """R(s_t) for one candidate step; ``parent`` is None at depth 0.

    ``orm`` is added (times ``cfg.orm_weight``) when given and ``cfg.use_orm`` is on; the
    caller passes it only in the stages that use ORM shaping (2 and 3).
    """
    reward = float(prm) if cfg.use_prm else 0.0
    if parent is not None and cfg.use_advantage:
        gain = policy_prob(mean_logprob) - policy_prob(parent.mean_logprob)
        reward += gain / max(float(parent.prm), cfg.epsilon)
    if orm is not None and cfg.use_orm:
        reward += cfg.orm_weight * float(orm)
    return reward
