"""PRM calibration on hand-built trees, every figure computed by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sphere_core.calibration import auroc, calibrate, finished_paths
from sphere_core.schemas import ROUTING_COLUMNS, TREE_COLUMNS


def node(
    qid,
    nid,
    parent,
    depth,
    reward,
    *,
    terminal=False,
    answer=None,
    path="max",
    prm=0.5,
    logprob=0.0,
    completion=False,
    stage="stage1",
):
    row = dict.fromkeys(TREE_COLUMNS)
    row.update(
        run_id="r",
        question_id=qid,
        stage=stage,
        path=path,
        depth=depth,
        node_id=nid,
        parent_id=parent,
        candidate_index=0,
        text="t",
        policy_mean_logprob=logprob,
        prm_score=prm,
        orm_score=math.nan,
        reward=reward,
        selected=True,
        terminal=terminal,
        finish_reason="stop",
        extracted_answer=answer,
        completion=completion,
    )
    return row


def route(qid, decision, rmax, rmin, cmax, cmin):
    row = dict.fromkeys(ROUTING_COLUMNS)
    row.update(
        run_id="r",
        question_id=qid,
        stage="stage1",
        decision=decision,
        reason="",
        reward_max=rmax,
        reward_min=rmin,
        correct_max=cmax,
        correct_min=cmin,
    )
    return row


@pytest.fixture
def tables():
    tree = pd.DataFrame(
        [
            # q1 (gold 42): root a; b right (path 0.7), c wrong (0.5), d unfinished
            node("q1", "a", None, 0, 0.8, path="root"),
            node("q1", "b", "a", 1, 0.6, terminal=True, answer="42"),
            node("q1", "c", "a", 1, 0.2, terminal=True, answer="41", path="min"),
            node("q1", "d", "a", 1, 0.9, path="min"),
            # q2 (gold 7): e right at depth 0 (0.3); g wrong completion (0.9); h no answer (0.7)
            node("q2", "e", None, 0, 0.3, terminal=True, answer="7", path="root"),
            node("q2", "f", None, 0, 0.9, path="root"),
            node("q2", "g", "f", 1, 0.9, terminal=True, answer="8", completion=True),
            node("q2", "h", "f", 1, 0.5, terminal=True, answer=None, path="min"),
            # another stage's node is ignored
            node("q2", "x", None, 0, 5.0, terminal=True, answer="7", stage="stage2"),
        ],
        columns=TREE_COLUMNS,
    )
    routing = pd.DataFrame(
        [
            route("q1", "pair", 0.7, 0.5, True, False),
            route("q2", "pair_inverted", 0.9, 0.3, False, True),
            route("q3", "to_correction", 0.4, 0.1, False, False),
            route("q4", "error", math.nan, math.nan, None, None),
        ],
        columns=ROUTING_COLUMNS,
    )
    return tree, routing, {"q1": "42", "q2": "7", "q3": "1"}


def test_auroc_counts_ties_as_half_and_needs_both_classes():
    assert auroc([0.9, 0.1], [True, False]) == 1.0
    assert auroc([0.1, 0.9], [True, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    # right 0.7, 0.3 vs wrong 0.5, 0.7: (1 + 0.5 + 0 + 0) / 4
    assert auroc([0.7, 0.3, 0.5, 0.7], [True, True, False, False]) == pytest.approx(0.375)
    assert auroc([0.2, 0.4], [True, True]) is None
    assert auroc([], []) is None


def test_auroc_leaves_out_paths_without_a_reward():
    nan = float("nan")  # the sampling strategy scores nothing
    assert auroc([nan, 0.2, 0.8], [True, False, True]) == 1.0
    assert auroc([nan, nan, nan], [True, False, True]) is None
    assert auroc([nan, 0.5, 0.5, nan], [True, True, False, False]) == 0.5


def test_finished_paths_are_terminal_lineages_with_mean_step_reward(tables):
    tree, _, _ = tables
    paths = finished_paths(tree).set_index("node_id")
    assert sorted(paths.index) == ["b", "c", "e", "g", "h"]
    assert paths.loc["b", "reward"] == pytest.approx(0.7)
    assert paths.loc["g", "reward"] == pytest.approx(0.9)
    assert paths.loc["e", "steps"] == 1 and paths.loc["h", "steps"] == 2
    assert bool(paths.loc["g", "completion"])


def test_calibration_figures_by_hand(tables):
    tree, routing, golds = tables
    cal = calibrate(tree, routing, golds)
    # right paths: b 0.7, e 0.3; wrong: c 0.5, g 0.9, h 0.7 (no answer is wrong)
    # U = (1 + 0 + 0.5) + 0 = 1.5 over 6 pairs
    assert cal.auroc == pytest.approx(0.25)
    assert cal.near_chance
    assert (cal.finished_paths, cal.right_paths) == (5, 2)
    assert cal.mean_reward_right == pytest.approx(0.5)
    assert cal.mean_reward_wrong == pytest.approx(0.7)
    # depth 0 has only a right path; depth 1: b 0.7 vs 0.5, 0.9, 0.7 -> 1.5 / 3
    assert cal.auroc_by_depth == {0: None, 1: pytest.approx(0.5)}
    assert cal.paths_by_depth == {0: 1, 1: 4}
    assert (cal.pairs, cal.pairs_inverted, cal.sol_max_right_share) == (1, 1, 0.5)
    assert cal.questions == 3  # the error row does not count
    # routed: right 0.7, 0.3 vs wrong 0.5, 0.9, 0.4, 0.1 -> (3 + 1) / 8
    assert cal.auroc_routed == pytest.approx(0.5)
    d = cal.as_dict()
    assert d["near_chance"] is True and d["auroc_by_depth"] == {"0": None, "1": pytest.approx(0.5)}


def test_rescoring_by_reward_terms():
    lp = math.log
    tree = pd.DataFrame(
        [
            node("q", "r", None, 0, 0.0, prm=0.5, logprob=lp(0.5), path="root"),
            node("q", "s", "r", 1, 0.0, prm=0.8, logprob=lp(0.9), terminal=True, answer="1"),
            node("q", "t", "r", 1, 0.0, prm=0.9, logprob=lp(0.3), terminal=True, answer="2"),
        ],
        columns=TREE_COLUMNS,
    )
    routing = pd.DataFrame([route("q", "pair", 1.0, 0.5, True, False)], columns=ROUTING_COLUMNS)
    golds = {"q": "1"}
    # prm: s (0.5+0.8)/2 = 0.65 < t 0.7; adv: s 0.4/0.5/2 = 0.4 > t -0.2
    # eq3: s (0.5 + 0.8 + 0.8)/2 = 1.05 > t (0.5 + 0.9 - 0.4)/2 = 0.5
    assert calibrate(tree, routing, golds, terms="prm").auroc == 0.0
    assert calibrate(tree, routing, golds, terms="adv").auroc == 1.0
    paths = finished_paths(tree, terms="eq3").set_index("node_id")
    assert paths.loc["s", "reward"] == pytest.approx(1.05)
    assert paths.loc["t", "reward"] == pytest.approx(0.5)
    assert calibrate(tree, routing, golds).auroc == 0.5  # stored rewards are all 0: a tie
    with pytest.raises(ValueError, match="unknown reward terms"):
        calibrate(tree, routing, golds, terms="nope")


def test_no_contrastive_question_gives_no_share(tables):
    tree, routing, golds = tables
    cal = calibrate(tree, routing[routing["decision"] == "to_correction"], golds)
    assert cal.sol_max_right_share is None and (cal.pairs, cal.pairs_inverted) == (0, 0)
