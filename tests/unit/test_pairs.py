"""Pair construction, invariants, step pairs, the split, and loading with `datasets`."""

from __future__ import annotations

import pandas as pd
import pytest

from sphere_core.pairs import assemble_pairs, build_pairs, split_pairs
from sphere_core.schemas import PAIR_COLUMNS
from sphere_core.stages.runner import run_stage
from tests.fakes import SCENARIOS, fake_config, fake_questions


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    cfg = fake_config("pairs.step_pairs=true", "pairs.step_min_gap=0.5")
    qs = fake_questions(SCENARIOS)
    s1 = run_stage("stage1", cfg, qs, None, run_id="r", home=home)
    s2 = run_stage("stage2", cfg, qs, s1.routing, run_id="r", home=home)
    s3 = run_stage("stage3", cfg, qs, s1.routing, run_id="r", home=home)
    routing = pd.concat([s1.routing, s2.routing, s3.routing], ignore_index=True)
    trees = pd.concat([s1.tree, s2.tree, s3.tree], ignore_index=True)
    return cfg, qs, routing, trees


def _scenario(qs, qid):
    return qs.set_index("question_id").at[qid, "problem"].split(":")[1]


def test_trajectory_pairs_per_route(run):
    cfg, qs, routing, trees = run
    built = assemble_pairs(cfg, qs, routing, trees, run_id="r")
    traj = built.pairs[built.pairs["granularity"] == "trajectory"]
    got = {
        (_scenario(qs, q), s, r)
        for q, s, r in zip(traj["question_id"], traj["stage"], traj["route"])
    }
    assert got == {
        ("contrastive", "stage1", "pair"),
        ("inverted", "stage1", "pair_inverted"),
        ("corrected", "stage2", "pair"),
        ("diverse", "stage3", "pair"),
    }
    assert built.dropped == []
    for row in traj.to_dict("records"):
        assert row["answer_chosen"] == row["gold_answer"] == "42"
        assert row["answer_rejected"] != "42"
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
        assert row["run_id"] == "r"


def test_prompts_are_trl_conversational(run):
    cfg, qs, routing, trees = run
    pairs = assemble_pairs(cfg, qs, routing, trees, run_id="r").pairs
    for row in pairs.to_dict("records"):
        roles = [m["role"] for m in row["prompt"]]
        if row["stage"] == "stage2":
            assert roles[-3:] == ["user", "assistant", "user"]
        else:
            assert roles[-1] == "user" and "assistant" not in roles
        assert (
            [m["role"] for m in row["chosen"]]
            == ["assistant"]
            == [m["role"] for m in row["rejected"]]
        )
    s2 = pairs[(pairs["stage"] == "stage2") & (pairs["granularity"] == "trajectory")].iloc[0]
    s1_min = routing[(routing["stage"] == "stage1") & (routing["question_id"] == s2["question_id"])]
    assert s2["prompt"][-2]["content"] == s1_min["solution_min"].iloc[0]
    s3 = pairs[(pairs["stage"] == "stage3") & (pairs["granularity"] == "trajectory")].iloc[0]
    s1_max = routing[(routing["stage"] == "stage1") & (routing["question_id"] == s3["question_id"])]
    assert s3["chosen"][0]["content"] == s1_max["solution_max"].iloc[0]


def test_step_pairs_share_a_prefix_and_respect_the_gap(run):
    cfg, qs, routing, trees = run
    pairs = assemble_pairs(cfg, qs, routing, trees, run_id="r").pairs
    steps = pairs[pairs["granularity"] == "step"]
    assert len(steps) > 0 and (steps["route"] == "step").all()
    assert (steps["reward_chosen"] - steps["reward_rejected"] >= 0.5).all()
    for row in steps.to_dict("records"):
        c, r = (
            row["chosen"][0]["content"].split("\n\n"),
            row["rejected"][0]["content"].split("\n\n"),
        )
        assert c[:-1] == r[:-1] and c[-1] != r[-1]
    strict = assemble_pairs(
        fake_config("pairs.step_pairs=true", "pairs.step_min_gap=10"),
        qs,
        routing,
        trees,
        run_id="r",
    ).pairs
    assert (strict["granularity"] == "trajectory").all()


def test_violating_pairs_are_dropped_with_a_reason(run):
    cfg, qs, routing, _trees = run
    bad = routing.copy()
    i = bad.index[(bad["stage"] == "stage1") & (bad["decision"] == "pair")][0]
    bad.at[i, "solution_min"] = bad.at[i, "solution_max"]
    j = bad.index[(bad["stage"] == "stage1") & (bad["decision"] == "pair_inverted")][0]
    bad.at[j, "correct_min"] = False
    built = assemble_pairs(cfg, qs, bad, None, run_id="r")
    reasons = sorted(d["reason"] for d in built.dropped)
    assert reasons == [
        "chosen and rejected are the same text",
        "chosen solution is not verified correct",
    ]
    assert len(built.pairs) == 2


def test_split_is_deterministic_and_keeps_questions_together():
    pairs = pd.DataFrame({"question_id": [f"q{i // 3}" for i in range(30)], "x": range(30)})
    tr, ev = split_pairs(pairs, 0.3, seed=0)
    tr2, ev2 = split_pairs(pairs, 0.3, seed=0)
    assert tr.equals(tr2) and ev.equals(ev2)
    assert set(tr["question_id"]).isdisjoint(ev["question_id"]) and len(tr) + len(ev) == 30
    assert len(ev) > 0
    two = pd.DataFrame({"question_id": ["a", "b"]})
    tr, ev = split_pairs(two, 0.01)
    assert len(tr) == 1 and len(ev) == 1
    tr, ev = split_pairs(two, 0.99)
    assert len(tr) == 1 and len(ev) == 1
    tr, ev = split_pairs(two, 0.0)
    assert len(ev) == 0


def test_parquet_loads_with_datasets_as_preference_rows(run, tmp_path):
    import datasets

    cfg, qs, routing, trees = run
    train, _evals, _dropped = build_pairs(cfg, qs, routing, trees, run_id="r")
    assert list(train.columns) == PAIR_COLUMNS
    train.to_parquet(tmp_path / "train.parquet", index=False)
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "train.parquet"), split="train")
    row = ds[0]
    assert set(PAIR_COLUMNS) <= set(ds.column_names)
    assert isinstance(row["prompt"], list) and set(row["prompt"][0]) == {"role", "content"}
    assert row["chosen"][0]["role"] == "assistant" and isinstance(
        row["rejected"][0]["content"], str
    )
