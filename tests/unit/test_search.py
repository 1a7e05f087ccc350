"""Lock-step pruned search driven by the scripted fakes (no model)."""

from __future__ import annotations

import pytest

from sphere_core.config import RewardConfig
from sphere_core.errors import BackendError, GenerationError
from sphere_core.schemas import Step
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
        out.append(
            SearchTask(
                q["question_id"],
                q["problem"],
                q["answer"],
                [{"role": "user", "content": q["problem"]}],
            )
        )
    return out


def _params(stage="stage1", *overrides):
    return SearchParams.for_stage(fake_config(*overrides), stage)


def test_one_generate_and_one_prm_call_per_depth_for_all_questions():
    gen, prm, stats = FakeGenerator(), FakePRM(), SearchStats()
    params = _params()
    results = pruned_search(
        _tasks("contrastive", "inverted", "diverse"),
        gen,
        prm,
        params,
        RewardConfig(),
        stage="stage1",
        stats=stats,
    )
    # depth 0: 3 roots; depth 1: max + min tail of 3 questions; all terminal after depth 1
    assert [len(c["prompts"]) for c in gen.calls] == [3, 6]
    assert all(c["n"] == 4 for c in gen.calls)
    assert [c["seed"] for c in gen.calls] == [params.seed, params.seed + 1]
    assert prm.calls == [12, 12]  # one batched call per depth; identical candidates scored once
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
    res = pruned_search(
        _tasks("contrastive"), FakeGenerator(), FakePRM(), _params(), RewardConfig(), stage="stage1"
    )[0]
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
    params = _params("stage1", "search.max_depth=3", "search.completion_max_tokens=0")
    res = pruned_search(_tasks("noanswer"), gen, FakePRM(), params, RewardConfig(), stage="stage1")[
        0
    ]
    assert len(res.max_path.nodes) == 3 and not res.max_path.terminal
    assert len(gen.calls) == 3


def test_unfinished_paths_get_one_completion_rollout():
    """A path without a final answer at max_depth is finished by ONE unbranched rollout per side
    (one batched generate call, no stop string, its own token budget), recorded as such."""
    gen = FakeGenerator()
    params = _params(
        "stage1",
        "search.max_depth=3",
        "search.completion_max_tokens=77",
        "search.answer_cue_tokens=0",
    )
    res = pruned_search(
        _tasks("noanswer", "contrastive"), gen, FakePRM(), params, RewardConfig(), stage="stage1"
    )
    assert len(gen.calls) == 4  # three depths, then one call for every completion
    last = gen.calls[-1]
    assert (
        last["n"] == 1 and last["max_tokens"] == 77 and len(last["prompts"]) == 2
    )  # max + min of "noanswer"
    unfinished, finished = res
    for path in (unfinished.max_path, unfinished.min_path):
        assert len(path.nodes) == 4 and path.nodes[-1].completion and path.terminal
        assert (
            path.nodes[-1].parent is path.nodes[-2]
            and path.nodes[-1].reward == path.nodes[-1].reward
        )  # scored
    assert not any(n.completion for n in finished.nodes)  # a path with a final answer is left alone
    rows = unfinished.tree_rows(run_id="r", stage="stage1")
    assert sum(r["completion"] for r in rows) == 2


def test_completion_finishes_a_path_with_a_final_answer():
    class Finisher(FakeGenerator):
        def generate_steps(self, prompts, n, temperature, stop, max_tokens, **kw):
            if stop is None:  # the completion rollout
                self.calls.append({"prompts": list(prompts), "n": n, "max_tokens": max_tokens})
                return [
                    [
                        Step(
                            text="So the total is 42.\n\nFinal Answer: The final answer is $42$.",
                            token_logprobs=[-0.1] * 9,
                            finish_reason="eos",
                            num_tokens=9,
                        )
                    ]
                    for _ in prompts
                ]
            return super().generate_steps(prompts, n, temperature, stop, max_tokens, **kw)

    res = pruned_search(
        _tasks("noanswer"),
        Finisher(),
        FakePRM(),
        _params("stage1", "search.max_depth=2"),
        RewardConfig(),
        stage="stage1",
    )[0]
    assert (
        res.max_path.text.endswith("The final answer is $42$.")
        and res.max_path.nodes[-1].completion
    )


def test_a_rollout_without_an_answer_is_cued_to_state_one():
    """A completion that still has no final answer gets the answer sentence's start appended and
    the model finishes that one line (one more batched call, its own seed and token budget)."""

    class Answerer(FakeGenerator):
        def generate_steps(self, prompts, n, temperature, stop, max_tokens, **kw):
            if stop is None:  # the completion rollout: runs out of tokens mid-thought
                self.calls.append({"prompts": list(prompts), "kind": "rollout"})
                return [
                    [
                        Step(
                            text="Then 6 times 7 is",
                            token_logprobs=[-0.1] * 5,
                            finish_reason="length",
                            num_tokens=5,
                        )
                    ]
                    for _ in prompts
                ]
            if stop == ["\n"]:  # the answer cue
                self.calls.append(
                    {
                        "prompts": list(prompts),
                        "kind": "cue",
                        "max_tokens": max_tokens,
                        "seed": kw.get("seed"),
                    }
                )
                return [
                    [
                        Step(
                            text="42$. I hope it is correct.",
                            token_logprobs=[-0.2] * 6,
                            finish_reason="stop",
                            num_tokens=6,
                        )
                    ]
                    for _ in prompts
                ]
            return super().generate_steps(prompts, n, temperature, stop, max_tokens, **kw)

    gen = Answerer()
    params = _params("stage1", "search.max_depth=2", "search.answer_cue_tokens=12")
    stats = SearchStats()
    res = pruned_search(
        _tasks("noanswer"), gen, FakePRM(), params, RewardConfig(), stage="stage1", stats=stats
    )[0]
    cue = gen.calls[-1]
    assert cue["kind"] == "cue" and cue["max_tokens"] == 12 and cue["seed"] == params.answer_seed
    assert all(
        p.endswith("Then 6 times 7 is\n\nFinal Answer: The final answer is $")
        for p in cue["prompts"]
    )
    for path in (res.max_path, res.min_path):
        last = path.nodes[-1]
        assert last.completion and last.terminal and last.num_tokens == 11
        assert last.text.endswith(
            "Then 6 times 7 is\n\nFinal Answer: The final answer is $42$. I hope it is correct."
        )
    assert stats.forced_answers == 2

    plain = Answerer()
    pruned_search(
        _tasks("noanswer"),
        plain,
        FakePRM(),
        _params("stage1", "search.max_depth=2", "search.answer_cue_tokens=0"),
        RewardConfig(),
        stage="stage1",
    )
    assert [c.get("kind") for c in plain.calls][-1] == "rollout"  # 0 turns the cue off


def test_keep_k_keeps_k_tails_per_side():
    gen = FakeGenerator(terminal_depth=2)
    pruned_search(
        _tasks("contrastive"),
        gen,
        FakePRM(),
        _params("stage1", "search.keep=2"),
        RewardConfig(),
        stage="stage1",
    )
    assert [len(c["prompts"]) for c in gen.calls] == [1, 4, 4]
    assert (
        resolve_keep(1, 0.4, 5) == 2
        and resolve_keep(1, 0.1, 5) == 1
        and resolve_keep(3, None, 5) == 3
    )


def test_stage3_uses_factor_times_e_and_orm_shaping():
    params = _params("stage3")
    assert params.num_candidates == 8 and params.use_orm
    assert not _params("stage1").use_orm
    with pytest.raises(BackendError, match="no ORM"):
        pruned_search(
            _tasks("diverse"), FakeGenerator(), FakePRM(), params, RewardConfig(), stage="stage3"
        )
    res = pruned_search(
        _tasks("diverse"),
        FakeGenerator("fake-small"),
        FakePRM(),
        params,
        RewardConfig(),
        stage="stage3",
        orm=FakeORM(),
    )[0]
    assert res.max_path.nodes[0].orm == pytest.approx(0.9)
    assert res.max_path.nodes[0].reward == pytest.approx(1.8)


def test_score_last_is_used_when_the_prm_offers_it():
    prm = FakeLastPRM()
    pruned_search(
        _tasks("contrastive"), FakeGenerator(), prm, _params(), RewardConfig(), stage="stage1"
    )
    assert prm.last_calls == [4, 8] and prm.calls == []


def test_prm_with_a_wrong_number_of_scores_is_an_error():
    class ShortPRM(FakePRM):
        def score(self, questions, steps_per_candidate, gold_answers=None):
            return [[0.5] for _ in steps_per_candidate[:-1]]

    with pytest.raises(BackendError, match="score list per candidate"):
        pruned_search(
            _tasks("contrastive"),
            FakeGenerator(),
            ShortPRM(),
            _params(),
            RewardConfig(),
            stage="stage1",
        )


def test_batch_and_one_by_one_give_the_same_paths():
    tasks = _tasks("contrastive", "inverted", "no_error")
    batch = pruned_search(
        tasks, FakeGenerator(), FakePRM(), _params(), RewardConfig(), stage="stage1"
    )
    single = [
        pruned_search([t], FakeGenerator(), FakePRM(), _params(), RewardConfig(), stage="stage1")[0]
        for t in tasks
    ]
    assert [r.max_path.text for r in batch] == [r.max_path.text for r in single]
    assert [r.min_path.text for r in batch] == [r.min_path.text for r in single]


def test_search_isolated_reports_the_failing_question_and_finishes_the_rest():
    tasks = _tasks("contrastive", "error", "inverted", "no_error", "diverse")
    out = search_isolated(
        tasks,
        lambda ts: pruned_search(
            ts, FakeGenerator(), FakePRM(), _params(), RewardConfig(), stage="stage1"
        ),
    )
    assert [type(o).__name__ for o in out] == [
        "SearchResult",
        "GenerationError",
        "SearchResult",
        "SearchResult",
        "SearchResult",
    ]
    assert isinstance(out[1], GenerationError)
    assert [o.question_id for o in out if not isinstance(o, Exception)] == [
        t.question_id for t in tasks if "[fake:error:" not in t.problem
    ]
