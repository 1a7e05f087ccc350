"""Eq.3 step reward with hand-computed values, one switch at a time."""

from __future__ import annotations

import math

import pytest

from sphere_core.config import RewardConfig
from sphere_core.search.reward import ParentStats, policy_prob, step_reward


def test_first_step_is_the_prm_score():
    assert step_reward(RewardConfig(), prm=0.7, mean_logprob=-3.0, parent=None) == pytest.approx(
        0.7
    )


def test_advantage_term_uses_parent_prm_and_policy_probs():
    # 0.6 + (0.5 - 0.8) / 0.4 = -0.15
    r = step_reward(
        RewardConfig(),
        prm=0.6,
        mean_logprob=math.log(0.5),
        parent=ParentStats(prm=0.4, mean_logprob=math.log(0.8)),
    )
    assert r == pytest.approx(-0.15)


def test_epsilon_guards_a_zero_parent_prm():
    # 0.5 + (0.9 - 0.8) / max(0, 1e-3) = 100.5
    r = step_reward(
        RewardConfig(epsilon=1e-3),
        prm=0.5,
        mean_logprob=math.log(0.9),
        parent=ParentStats(prm=0.0, mean_logprob=math.log(0.8)),
    )
    assert r == pytest.approx(100.5)


def test_orm_shaping_is_weighted_and_switchable():
    parent = ParentStats(prm=0.5, mean_logprob=math.log(0.5))
    base = {"prm": 0.6, "mean_logprob": math.log(0.6), "parent": parent}
    # 0.6 + 0.1/0.5 + 2*0.3 = 1.4
    assert step_reward(RewardConfig(orm_weight=2.0), orm=0.3, **base) == pytest.approx(1.4)
    assert step_reward(RewardConfig(use_orm=False), orm=0.3, **base) == pytest.approx(0.8)
    assert step_reward(RewardConfig(), orm=None, **base) == pytest.approx(0.8)
    # ORM also shapes the first step (paper §3.2.2, t = 0)
    assert step_reward(
        RewardConfig(), prm=0.6, mean_logprob=0.0, parent=None, orm=0.3
    ) == pytest.approx(0.9)


def test_prm_and_advantage_switches():
    parent = ParentStats(prm=0.5, mean_logprob=math.log(0.5))
    kw = {"prm": 0.6, "mean_logprob": math.log(0.6), "parent": parent}
    assert step_reward(RewardConfig(use_prm=False), **kw) == pytest.approx(0.2)
    assert step_reward(RewardConfig(use_advantage=False), **kw) == pytest.approx(0.6)
    assert step_reward(RewardConfig(use_prm=False, use_advantage=False), **kw) == 0.0


def test_policy_prob_is_exp_of_mean_logprob_capped_at_one():
    assert policy_prob(math.log(0.25)) == pytest.approx(0.25)
    assert policy_prob(0.3) == 1.0
