"""run_stage over every routing branch, driven by the scripted fakes through the registry."""

from __future__ import annotations

import pandas as pd
import pytest

from sphere_core.schemas import ROUTING_COLUMNS, TREE_COLUMNS
from sphere_core.stages.runner import run_stage
from tests.fakes import EXPECTED, SCENARIOS, FakeGenerator, fake_config, fake_questions


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    cfg = fake_config()
    qs = fake_questions(SCENARIOS)
    s1 = run_stage("stage1", cfg, qs, None, run_id="r1", home=home)
    s2 = run_stage("stage2", cfg, qs, s1.routing, run_id="r1", home=home)
    s3 = run_stage("stage3", cfg, qs, s1.routing, run_id="r1", home=home)
    return cfg, qs, s1, s2, s3


def _decisions(qs, routing):
    scen = dict(zip(qs["question_id"], [p.split(":")[1] for p in qs["problem"]]))
    return {scen[q]: d for q, d in zip(routing["question_id"], routing["decision"])}


def test_every_branch_is_routed_as_scripted(staged):
    _, qs, s1, s2, s3 = staged
    for stage, res in (("stage1", s1), ("stage2", s2), ("stage3", s3)):
        assert (
            list(res.routing.columns) == ROUTING_COLUMNS and list(res.tree.columns) == TREE_COLUMNS
        )
        want = {s: e[stage] for s, e in EXPECTED.items() if stage in e}
        assert _decisions(qs, res.routing) == want, stage
        assert res.routing["question_id"].is_unique
        assert res.routing["reason"].str.len().gt(10).all()


def test_error_question_keeps_its_message_and_has_no_tree(staged):
    _, _qs, s1, _, _ = staged
    err = s1.routing[s1.routing["decision"] == "error"].iloc[0]
    assert "GenerationError" in err["error"] and "fake generation failure" in err["reason"]
    assert err["question_id"] not in set(s1.tree["question_id"])
    assert set(s1.tree["question_id"]) == set(s1.routing["question_id"]) - {err["question_id"]}


def test_tree_records_every_candidate_with_scores(staged):
    _, _, s1, _, s3 = staged
    one = s1.tree[s1.tree["question_id"] == s1.tree["question_id"].iloc[0]]
    assert len(one) == 4 + 8 and set(one["path"]) == {"root", "max", "min"}
    assert one["prm_score"].between(0, 1).all() and one["orm_score"].isna().all()
    assert one.loc[one["terminal"], "extracted_answer"].notna().all()
    assert s3.tree.groupby(["question_id", "depth"]).size().min() == 8  # 2E candidates in Stage 3
    assert s3.tree["orm_score"].notna().all()


def test_stage2_prompts_show_the_stage1_min_solution(staged):
    _cfg, _qs, s1, s2, _ = staged
    for row in s2.routing.to_dict("records"):
        s1row = s1.routing.set_index("question_id").loc[row["question_id"]]
        assert row["source_solution"] == s1row["solution_min"]
    corrected = s2.routing[s2.routing["decision"] == "pair"].iloc[0]
    assert corrected["correct_max"] and "42" in corrected["solution_max"]


def test_stage3_runs_pi_small(staged):
    _, _, _, _, s3 = staged
    assert s3.routing["source_solution"].notna().all()
    smalls = [g for g in FakeGenerator.instances if g.small and g.calls]
    assert smalls and all(c["n"] == 8 for g in smalls for c in g.calls)


def test_empty_stage_input_returns_empty_frames_without_loading_models(tmp_path):
    from sphere_core.backends.registry import register_generator

    def explode(spec, home):
        raise AssertionError("a model was loaded for an empty stage")

    register_generator("explode-on-load", explode)
    cfg = fake_config("models.policy.backend=explode-on-load")
    empty_up = pd.DataFrame(columns=ROUTING_COLUMNS)
    res = run_stage("stage2", cfg, fake_questions([]), empty_up, run_id="r", home=tmp_path)
    assert res.routing.empty and res.tree.empty and list(res.tree.columns) == TREE_COLUMNS
