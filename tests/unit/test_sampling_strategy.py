"""The sampling control arm (search.strategy=sampling), driven by the scripted fakes.

The fake generator writes whole solutions tagged [good]/[bad] alternately (good first); the
scenario decides which tag is right (tests/fakes.py), so every routing branch is reachable.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sphere_core.errors import ConfigError
from sphere_core.schemas import TREE_COLUMNS
from sphere_core.search.pruned import SearchStats, SearchTask
from sphere_core.search.sampling_search import (
    SamplingParams,
    choose,
    sampling_search,
    search_config,
)
from sphere_core.search.tree import Node
from sphere_core.stages import get_stage
from sphere_core.stages.runner import run_stage
from tests.fakes import EXPECTED, SCENARIOS, FakeGenerator, fake_config, fake_questions

SAMPLING = "search.strategy=sampling"
CHAIN = SCENARIOS
# scenario -> {stage: decision} under sampling: a right and a wrong sample make a plain pair
WANT = {**EXPECTED, "inverted": {"stage1": "pair"}}


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    cfg = fake_config(SAMPLING, "prm.kind=explode-on-score")
    qs = fake_questions(CHAIN)
    s1 = run_stage("stage1", cfg, qs, None, run_id="r1", home=home)
    s2 = run_stage("stage2", cfg, qs, s1.routing, run_id="r1", home=home)
    s3 = run_stage("stage3", cfg, qs, s1.routing, run_id="r1", home=home)
    return qs, {"stage1": s1, "stage2": s2, "stage3": s3}


@pytest.fixture(scope="module", autouse=True)
def _no_prm():
    from sphere_core.backends.registry import register_prm

    def explode(cfg, home):
        raise AssertionError("the sampling strategy loaded a PRM")

    register_prm("explode-on-score", explode)


def _scenario(qs, qid):
    return dict(zip(qs["question_id"], [p.split(":")[1] for p in qs["problem"]]))[qid]


def test_every_branch_routes_without_a_prm(staged):
    qs, res = staged
    for stage, r in res.items():
        got = {_scenario(qs, q): d for q, d in zip(r.routing["question_id"], r.routing["decision"])}
        assert got == {s: e[stage] for s, e in WANT.items() if stage in e}, stage
        assert list(r.tree.columns) == TREE_COLUMNS


def test_pair_is_first_right_against_first_wrong(staged):
    qs, res = staged
    rows = res["stage1"].routing.set_index("question_id")
    tree = res["stage1"].tree
    for scen, right_index in (("contrastive", 0), ("inverted", 1)):
        qid = next(q for q in rows.index if _scenario(qs, q) == scen)
        row = rows.loc[qid]
        assert row["correct_max"] and not row["correct_min"]
        mine = tree[tree["question_id"] == qid].sort_values("candidate_index")
        assert row["solution_max"] == mine["text"].iloc[right_index]
        assert row["solution_min"] == mine["text"].iloc[1 - right_index]
        assert list(mine.loc[mine["selected"], "candidate_index"]) == [0, 1]


def test_samples_are_root_nodes_with_tokens_and_no_scores(staged):
    _, res = staged
    s1, s3 = res["stage1"].tree, res["stage3"].tree
    assert (
        (s1["depth"] == 0).all() and (s1["path"] == "root").all() and s1["parent_id"].isna().all()
    )
    assert s1.groupby("question_id").size().eq(4).all()  # N defaults to E = 4
    assert s3.groupby("question_id").size().eq(8).all()  # Stage 3: factor x N
    assert (
        (s1["num_tokens"] > 0).all() and s1["reward"].isna().all() and s1["prm_score"].isna().all()
    )


def test_stage2_samples_from_the_correction_prompt(staged):
    qs, res = staged
    row = res["stage2"].routing[res["stage2"].routing["decision"] == "pair"].iloc[0]
    assert _scenario(qs, row["question_id"]) == "corrected" and row["correct_max"]
    assert (
        row["source_solution"]
        == res["stage1"].routing.set_index("question_id").loc[row["question_id"], "solution_min"]
    )


def test_samples_without_an_answer_get_the_answer_cue(staged):
    qs, res = staged
    tree = res["stage1"].tree
    noanswer = tree[[_scenario(qs, q) == "noanswer" for q in tree["question_id"]]]
    assert noanswer["text"].str.contains("Final Answer: The final answer is").all()


def _tasks(*scenarios):
    qs = fake_questions(scenarios)
    from sphere_core.prompts import solve_messages

    return [
        SearchTask(q["question_id"], q["problem"], q["answer"], solve_messages(q["problem"]))
        for q in qs.to_dict("records")
    ]


def _grade(texts, golds):
    from sphere_core.grading import extract_answer

    answers = [extract_answer(t, "none") for t in texts]
    return [(a, a == g) for a, g in zip(answers, golds)]


def test_token_budget_draws_rounds_until_spent():
    cfg = fake_config(SAMPLING, "search.sampling_token_budget=30")
    params = SamplingParams.for_stage(cfg, "stage1")
    assert (params.token_budget, params.samples, params.first_round) == (30, None, 4)
    gen, stats = FakeGenerator(), SearchStats()
    [res] = sampling_search(
        _tasks("contrastive"), gen, params, stage="stage1", grade=_grade, stats=stats
    )
    per = [n.num_tokens for n in res.nodes]
    assert sum(per) == stats.generated_tokens >= 30
    assert sum(per[:-1]) < 30  # stopped as soon as the budget was spent (at most one sample over)
    assert [c["n"] for c in gen.calls] == [4, math.ceil((30 - sum(per[:4])) / (sum(per[:4]) / 4))]


def test_budget_with_a_cap_and_stage3_scaling():
    cfg = fake_config(
        SAMPLING, "search.sampling_token_budget=1000", "search.samples_per_question=6"
    )
    p1, p3 = SamplingParams.for_stage(cfg, "stage1"), SamplingParams.for_stage(cfg, "stage3")
    assert (p1.token_budget, p1.samples, p1.first_round) == (1000, 6, 4)
    assert (p3.token_budget, p3.samples, p3.first_round) == (2000, 12, 8)
    [res] = sampling_search(_tasks("no_error"), FakeGenerator(), p1, stage="stage1", grade=_grade)
    assert len(res.nodes) == 6  # the cap ends it before the budget
    fixed = SamplingParams.for_stage(
        fake_config(SAMPLING, "search.samples_per_question=3"), "stage1"
    )
    assert (fixed.samples, fixed.token_budget, fixed.wanted(3, 99, 1)) == (3, None, 0)


def test_max_tokens_default_is_the_longest_pruned_path():
    cfg = fake_config(SAMPLING, "search.completion_max_tokens=20")
    assert SamplingParams.for_stage(cfg, "stage1").max_tokens == 3 * 16 + 20
    cfg = fake_config(SAMPLING, "search.sampling_max_tokens=77")
    gen = FakeGenerator()
    sampling_search(
        _tasks("contrastive"),
        gen,
        SamplingParams.for_stage(cfg, "stage1"),
        stage="stage1",
        grade=_grade,
    )
    assert gen.calls[0]["max_tokens"] == 77


def test_same_seed_same_samples_and_stage_seeds_differ():
    cfg = fake_config(SAMPLING, "search.seed=7")
    p1, p2 = SamplingParams.for_stage(cfg, "stage1"), SamplingParams.for_stage(cfg, "stage2")
    assert p1.call_seed(0) == 7 and p2.call_seed(0) == 7 + get_stage("stage2").seed_offset
    runs = []
    for _ in range(2):
        gen = FakeGenerator()
        out = sampling_search(
            _tasks("contrastive", "diverse"), gen, p1, stage="stage1", grade=_grade
        )
        runs.append(([n.text for r in out for n in r.nodes], [c["seed"] for c in gen.calls]))
    assert runs[0] == runs[1] and runs[0][1] == [7]


def _node(i, text):
    return Node(f"n{i}", None, 0, "root", i, text, 0.0, "eos", 3, True)


def test_choose_prefers_answered_wrong_and_distinct_texts():
    a, b, c, d = (_node(i, t) for i, t in enumerate(["x", "y", "z", "x"]))
    # right + wrong: first right, first answered wrong (c) before the unanswered one (b)
    assert choose([a, b, c], [("1", False), (None, False), ("2", True)]) == (c, a)
    assert choose([b, a, c], [(None, False), ("1", False), ("2", True)]) == (c, a)
    # all right: the first and the next with a different text
    assert choose([a, d, b], [("2", True)] * 3) == (a, b)
    # all wrong: Sol_min is the first answered wrong sample, Sol_max the next different one
    assert choose([a, b, c], [(None, False), ("1", False), ("3", False)]) == (c, b)
    # grading failed for some: they are never chosen while graded ones exist
    assert choose([a, b], [RuntimeError("x"), ("2", True)]) == (b, b)


def test_strategy_keys_the_artifact_only_when_sampling():
    pruned, sampled = fake_config(), fake_config(SAMPLING)
    budgeted = fake_config("search.sampling_token_budget=50")  # pruned run: budget is unused
    assert "strategy" not in search_config(pruned)
    stage = get_stage("stage1")
    assert stage.artifact_config(pruned) == stage.artifact_config(budgeted)
    assert stage.artifact_config(pruned) != stage.artifact_config(sampled)
    assert search_config(sampled)["strategy"] == "sampling"


def test_step_pairs_need_the_pruned_search():
    with pytest.raises(ConfigError, match="step_pairs"):
        fake_config(SAMPLING, "pairs.step_pairs=true")


def test_pruned_tree_rows_carry_tokens_too(tmp_path):
    res = run_stage(
        "stage1", fake_config(), fake_questions(["contrastive"]), None, run_id="r", home=tmp_path
    )
    assert (res.tree["num_tokens"] > 0).all() and res.tree["prm_score"].notna().all()


def test_a_grader_that_loses_solutions_fails_the_batch():
    from sphere_core.errors import GradingError

    params = SamplingParams.for_stage(fake_config(SAMPLING), "stage1")
    with pytest.raises(GradingError, match="3 grades for 4 solutions"):
        sampling_search(
            _tasks("contrastive"),
            FakeGenerator(),
            params,
            stage="stage1",
            grade=lambda texts, golds: _grade(texts, golds)[:3],
        )


def test_token_usage_and_the_report_line():
    import pandas as pd

    from sphere_core.evaluation.report.loading import RoundData
    from sphere_core.evaluation.report.sections.routing_pairs import _token_lines
    from sphere_core.summary import token_usage

    trees = pd.DataFrame(
        {
            "stage": ["stage1"] * 4 + ["stage2"] * 2,
            "question_id": ["a", "a", "b", "b", "a", "a"],
            "num_tokens": [100, 300, 200, 200, 50, 150],
        }
    )
    pairs = pd.DataFrame({"stage": ["stage1", "stage2"]})
    usage = token_usage(trees, pairs)
    assert usage["stage1"] == {
        "total": 800,
        "questions": 2,
        "pairs": 1,
        "per_question": 400.0,
        "per_pair": 800.0,
    }
    assert usage["stage2"]["per_question"] == 200.0 and usage["stage3"]["total"] is None
    assert usage["all"] == {
        "total": 1000,
        "questions": 2,
        "pairs": 2,
        "per_question": 500.0,
        "per_pair": 500.0,
    }
    line = _token_lines(RoundData(1, Path("."), tokens=usage))[0]
    assert line.startswith("Tokens generated: per question 500, per pair 500, total 1,000")
    assert "Stage 1 (self-generation) 400" in line and "Stage 3" not in line
    old = token_usage(trees.assign(num_tokens=float("nan")), pairs)  # trees before num_tokens
    assert old["all"]["total"] is None and _token_lines(RoundData(1, Path("."))) == []
