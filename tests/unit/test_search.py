"""Lock-step pruned search driven by the scripted fakes (no model)."""

from __future__ import annotations

import pytest

from sphere_core.config import RewardConfig
from sphere_core.errors import BackendError, GenerationError
from sphere_core.search.params import SearchParams, resolve_keep
from sphere_core.search.pruned import SearchStats, SearchTask, pruned_search, search_isolated
from tests.fakes import (
    BAD,
    GOOD,
    FakeGenerator,
    FakeLastPRM,
    FakeORM,
    FakePRM,
    fake_config,
    fake_question,
)


def _tasks(*scenarios):
    out = []
    for i, s in enumerate(scenarios):
        q = fake_question(s, index=i)
        out.append(SearchTask(q["question_id"], q["problem"], q["answer"],
                              [{"role": "user", "content": q["problem"]}]))
    return out


def _params(stage="stage1", *overrides):
    return SearchParams.for_stage(fake_config(*overrides), stage)


def test_one_generate_and_one_prm_call_per_depth_for_all_questions():
    gen, prm, stats = FakeGenerator(), FakePRM(), SearchStats()
    params = _params()
    results = pruned_search(_tasks("contrastive", "inverted", "diverse"), gen, prm, params, RewardConfig(),
                            stage="stage1", stats=stats)
    # depth 0: 3 roots; depth 1: max + min tail of 3 questions; all terminal after depth 1
    assert [len(c["prompts"]) for c in gen.calls] == [3, 6]
    assert all(c["n"] == 4 for c in gen.calls)
    assert [c["seed"] for c in gen.calls] == [params.seed, params.seed + 1]
    assert prm.calls == [12, 24]
    assert stats.generate_calls == 2 and stats.prm_calls == 2 and stats.candidates == 36
    for r in results:
        assert [GOOD in s for s in r.max_path.steps] == [True, True]
        assert [BAD in s for s in r.min_path.steps] == [True, True]
        assert r.max_path.terminal and r.min_path.terminal
        assert len(r.nodes) == 4 + 8
        ids = {n.node_id for n in r.nodes}
        assert len(ids) == len(r.nodes)
        assert sum(n.selected for n in r.nodes) == 4  # 2 at the root, 1 per path at depth 1


def test_tail_prompt_is_root_plus_steps_and_delimiter():
    gen = FakeGenerator()
    task = _tasks("contrastive")[0]
    res = pruned_search([task], gen, FakePRM(), _params(), RewardConfig(), stage="stage1")[0]
    root = gen.apply_chat_template(task.messages)
    assert gen.calls[0]["prompts"] == [root]
    assert gen.calls[1]["prompts"][0] == root + res.max_path.steps[0] + "\n\n"
    assert gen.calls[1]["prompts"][1] == root + res.min_path.steps[0] + "\n\n"


def test_rewards_follow_eq3_along_the_paths():
    res = pruned_search(_tasks("contrastive"), FakeGenerator(), FakePRM(), _params(), RewardConfig(),
                        stage="stage1")[0]
    root, child = res.max_path.nodes
    assert root.reward == pytest.approx(0.9)
    assert child.reward == pytest.approx(0.9)  # same policy prob as its parent -> no advantage
    worst_root = res.min_path.nodes[0]
    assert worst_root.reward == pytest.approx(0.2)
    # a [good] sibling under the [bad] root gains (pi(good) - pi(bad)) / prm(bad)
    import math
    sib = next(n for n in res.nodes if n.parent is worst_root and GOOD in n.text)
    assert sib.reward == pytest.approx(0.9 + (math.exp(-0.1) - math.exp(-0.9)) / 0.2)
    assert res.max_path.reward == pytest.approx(0.9)


def test_paths_stop_at_max_depth_without_a_final_answer():
    gen = FakeGenerator()
    res = pruned_search(_tasks("noanswer"), gen, FakePRM(), _params("stage1", "search.max_depth=3"),
                        RewardConfig(), stage="stage1")[0]
    assert len(res.max_path.nodes) == 3 and not res.max_path.terminal
    assert len(gen.calls) == 3


def test_keep_k_keeps_k_tails_per_side():
    gen = FakeGenerator(terminal_depth=2)
    pruned_search(_tasks("contrastive"), gen, FakePRM(), _params("stage1", "search.keep=2"), RewardConfig(),
                  stage="stage1")
    assert [len(c["prompts"]) for c in gen.calls] == [1, 4, 4]
    assert resolve_keep(1, 0.4, 5) == 2 and resolve_keep(1, 0.1, 5) == 1 and resolve_keep(3, None, 5) == 3


def test_stage3_uses_factor_times_e_and_orm_shaping():
    params = _params("stage3")
    assert params.num_candidates == 8 and params.use_orm
    assert not _params("stage1").use_orm
    with pytest.raises(BackendError, match="no ORM"):
        pruned_search(_tasks("diverse"), FakeGenerator(), FakePRM(), params, RewardConfig(), stage="stage3")
    res = pruned_search(_tasks("diverse"), FakeGenerator("fake-small"), FakePRM(), params, RewardConfig(),
                        stage="stage3", orm=FakeORM())[0]
    assert res.max_path.nodes[0].orm == pytest.approx(0.9)
    assert res.max_path.nodes[0].reward == pytest.approx(1.8)


def test_score_last_is_used_when_the_prm_offers_it():
    prm = FakeLastPRM()
    pruned_search(_tasks("contrastive"), FakeGenerator(), prm, _params(), RewardConfig(), stage="stage1")
    assert prm.last_calls == [4, 8] and prm.calls == []


def test_prm_with_a_wrong_number_of_scores_is_an_error():
    class ShortPRM(FakePRM):
        def score(self, questions, steps_per_candidate, gold_answers=None):
            return [[0.5] for _ in steps_per_candidate[:-1]]

    with pytest.raises(BackendError, match="score lists"):
        pruned_search(_tasks("contrastive"), FakeGenerator(), ShortPRM(), _params(), RewardConfig(), stage="stage1")


def test_batch_and_one_by_one_give_the_same_paths():
    tasks = _tasks("contrastive", "inverted", "no_error")
    batch = pruned_search(tasks, FakeGenerator(), FakePRM(), _params(), RewardConfig(), stage="stage1")
    single = [pruned_search([t], FakeGenerator(), FakePRM(), _params(), RewardConfig(), stage="stage1")[0]
              for t in tasks]
    assert [r.max_path.text for r in batch] == [r.max_path.text for r in single]
    assert [r.min_path.text for r in batch] == [r.min_path.text for r in single]


def test_search_isolated_reports_the_failing_question_and_finishes_the_rest():
    tasks = _tasks("contrastive", "error", "inverted", "no_error", "diverse")
    out = search_isolated(tasks, lambda ts: pruned_search(ts, FakeGenerator(), FakePRM(), _params(),
                                                           RewardConfig(), stage="stage1"))
    assert [type(o).__name__ for o in out] == ["SearchResult", "GenerationError", "SearchResult",
                                               "SearchResult", "SearchResult"]
    assert isinstance(out[1], GenerationError)
    assert [o.question_id for o in out if not isinstance(o, Exception)] == [
        t.question_id for t in tasks if "[fake:error:" not in t.problem]
