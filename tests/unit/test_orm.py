"""ORM backends: prm-last (PRM reward of the last step) and verifier (gold-answer check)."""

from __future__ import annotations

import pytest

from sphere_core.backends.registry import lookup
from sphere_core.config import resolve_config
from sphere_core.errors import BackendError

Q = "Tom has 3 apples and buys 2 more. How many apples does he have?"
RIGHT = "Final Answer: The final answer is $5$. I hope it is correct."
WRONG = "Final Answer: The final answer is $7$. I hope it is correct."


def _orm(kind: str, home, prm=None):
    cfg = resolve_config(overrides=[f"orm.kind={kind}"])
    return lookup("orm", kind)(cfg=cfg, home=home, prm=prm)


def test_prm_last_is_the_prm_reward_of_the_last_step(tmp_path):
    cfg = resolve_config(overrides=["prm.kind=random"])
    prm = lookup("prm", "random")(cfg=cfg, home=tmp_path)
    orm = _orm("prm-last", tmp_path, prm)
    sols = [["a", "b"], ["a"], ["c", "d", "e"]]
    assert orm.score([Q] * 3, sols) == [s[-1] for s in prm.score([Q] * 3, sols)]


def test_prm_last_works_with_a_score_only_prm_and_checks_its_shape(tmp_path):
    class ScoreOnly:
        name = "score-only"

        def __init__(self, short=False):
            self.short = short

        def score(self, questions, steps, golds=None):
            return [[0.1 * (j + 1) for j in range(len(s) - self.short)] for s in steps]

    assert _orm("prm-last", tmp_path, ScoreOnly()).score(
        [Q, Q], [["a", "b"], ["c"]]
    ) == pytest.approx([0.2, 0.1])
    with pytest.raises(BackendError, match="expected one score per step"):
        _orm("prm-last", tmp_path, ScoreOnly(short=True)).score([Q], [["a", "b"]])
    with pytest.raises(BackendError, match="needs a PRM"):
        _orm("prm-last", tmp_path, None)


def test_verifier_checks_terminal_solutions_against_gold(tmp_path):
    orm = _orm("verifier", tmp_path)
    sols = [
        ["Tom has 3 apples.", RIGHT],
        ["Tom has 3 apples.", WRONG],
        ["Tom has 3 apples."],
        ["So \\boxed{5}."],
    ]
    assert orm.score([Q] * 4, sols, ["5"] * 4) == [1.0, 0.0, 0.5, 1.0]
    with pytest.raises(BackendError, match="needs gold answers"):
        orm.score([Q], [[RIGHT]])
    with pytest.raises(BackendError, match="one question per candidate"):
        orm.score([Q, Q], [[RIGHT]], ["5"])
