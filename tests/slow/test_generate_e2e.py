"""The embedded model (real hf generator + judge PRM) through all three stages on 3 questions."""

from __future__ import annotations

import pandas as pd
import pytest

from sphere_core.config import load_config
from sphere_core.generate import generate_run
from sphere_core.schemas import PAIR_COLUMNS, ROUTING_COLUMNS, TREE_COLUMNS

pytestmark = pytest.mark.slow


def test_embedded_generate_run_invariants(sphere_home):
    cfg = load_config(overrides=[
        "data.path=builtin:gsm8k_demo", "data.limit=3", "search.num_candidates=2",
        "search.max_depth=2", "search.max_step_tokens=48", "prm.kind=judge",
        "models.policy.device=cpu", "pairs.step_pairs=true", "pairs.eval_fraction=0.34",
        "grading.workers=1",
    ])
    summary = generate_run(cfg, run_id="e2e", home=sphere_home)
    out = sphere_home / "runs" / "e2e"
    questions = pd.read_parquet(out / "questions.parquet")
    assert len(questions) == 3 and summary["questions"] == 3
    routing = {s: pd.read_parquet(out / "routing" / f"{s}.parquet") for s in ("stage1", "stage2", "stage3")}
    s1 = routing["stage1"]
    assert list(s1.columns) == ROUTING_COLUMNS
    assert sorted(s1["question_id"]) == sorted(questions["question_id"])  # one row per question
    assert (s1["decision"] != "error").all(), s1["error"].tolist()
    for stage, src in (("stage2", "to_correction"), ("stage3", "to_diversity")):
        sent = set(s1.loc[s1["decision"] == src, "question_id"])
        assert set(routing[stage]["question_id"]) == sent and routing[stage]["question_id"].is_unique
    tree = pd.read_parquet(out / "tree" / "stage1.parquet")
    assert list(tree.columns) == TREE_COLUMNS
    assert tree.groupby("question_id").size().min() >= 2  # E candidates at depth 0
    assert tree["prm_score"].between(0, 1).all() and tree["policy_mean_logprob"].le(0).all()
    pairs = pd.concat([pd.read_parquet(out / "pairs" / f) for f in ("train.parquet", "eval.parquet")])
    assert list(pairs.columns) == PAIR_COLUMNS
    assert summary["pairs"]["total"] == len(pairs)
    traj = pairs[pairs["granularity"] == "trajectory"]
    for row in traj.to_dict("records"):
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
        assert row["answer_chosen"] is not None
        assert row["prompt"][0]["role"] == "system" and row["chosen"][0]["role"] == "assistant"
    from sphere_core.grading import get_grader

    grader = get_grader(cfg.grading)
    for row in traj.to_dict("records"):  # chosen verifies, rejected does not (independent re-grade)
        (_, ok_c), (_, ok_r) = grader.grade_texts(
            [row["chosen"][0]["content"], row["rejected"][0]["content"]], [row["gold_answer"]] * 2)
        assert ok_c and not ok_r
    assert any("pi_small" in w for w in summary["warnings"])  # default pi_small = pi
