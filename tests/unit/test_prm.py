"""PRM backends: shared validation, random, outcome, mc-rollout (fake policy), judge (tiny + real
model)."""

from __future__ import annotations

import pytest

from sphere_core.backends.prm import BasePRM
from sphere_core.backends.registry import lookup, register_generator
from sphere_core.config import resolve_config
from sphere_core.errors import BackendError
from sphere_core.schemas import Step

Q = "Tom has 3 apples and buys 2 more. How many apples does he have?"
RIGHT = "So he has 5 apples.\n\nFinal Answer: The final answer is $5$. I hope it is correct."
WRONG = "Final Answer: The final answer is $7$. I hope it is correct."


def _prm(kind: str, home, *overrides: str):
    cfg = resolve_config(
        overrides=[
            f"prm.kind={kind}",
            "models.policy.path=embedded-small",
            "models.policy.dtype=float32",
            *overrides,
        ]
    )  # tolerances are fp32
    return lookup("prm", kind)(cfg=cfg, home=home)


# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "questions, steps, golds, message",
    [
        (["q", "q"], [["a"]], None, "one question per candidate"),
        (["q"], [[]], None, "candidate 0 has no steps"),
        (["q"], ["a step"], None, "must be a list of steps"),
        (["q"], [["a"]], ["1", "2"], "one gold answer per candidate"),
    ],
)
def test_malformed_batches_are_rejected(tmp_path, questions, steps, golds, message):
    with pytest.raises(BackendError, match=message):
        _prm("random", tmp_path).score(questions, steps, golds)


def test_wrong_number_of_scores_from_a_backend_is_caught():
    class Short(BasePRM):
        name = "short"

        def _score(self, questions, steps, golds):
            return [s[:-1] for s in steps]

    with pytest.raises(BackendError, match=r"expected one score per step \(2\), got 1"):
        Short().score(["q"], [["a", "b"]])

    class OutOfRange(BasePRM):
        name = "big"

        def _score(self, questions, steps, golds):
            return [[1.5] * len(s) for s in steps]

    with pytest.raises(BackendError, match="not in"):
        OutOfRange().score_last(["q"], [["a"]])


# -- random ---------------------------------------------------------------------------------


def test_random_is_seeded_deterministic_and_prefix_consistent(tmp_path):
    cands = [["a", "b", "c"], ["a", "x"], ["z"]]
    prm = _prm("random", tmp_path)
    scores = prm.score([Q] * 3, cands)
    assert [len(s) for s in scores] == [3, 2, 1]
    assert all(0.0 <= x < 1.0 for s in scores for x in s)
    assert _prm("random", tmp_path).score([Q] * 3, cands) == scores  # a fresh instance agrees
    assert scores[0][0] == scores[1][0]  # same question + same prefix -> same score
    assert prm.score_last([Q] * 3, cands) == [s[-1] for s in scores]
    other = _prm("random", tmp_path, "prm.seed=1").score([Q] * 3, cands)
    assert other != scores
    assert prm.score(["another question"], [cands[0]])[0] != scores[0]
    many = prm.score_last([Q] * 200, [[str(i)] for i in range(200)])
    assert 0.3 < sum(many) / len(many) < 0.7 and len(set(many)) == 200


# -- outcome --------------------------------------------------------------------------------


def test_outcome_scores_final_answers_only(tmp_path):
    prm = _prm("outcome", tmp_path)
    cands = [
        ["Tom has 3 apples.", RIGHT],
        ["Tom has 3 apples.", WRONG],
        ["He buys 2 more."],
        ["The total is \\boxed{5}."],
        ["Final Answer:"],
    ]
    scores = prm.score([Q] * len(cands), cands, ["5"] * len(cands))
    # a bare "Final Answer:" states no answer: not terminal, as in the search (has_final_answer)
    assert scores == [[0.5, 1.0], [0.5, 0.0], [0.5], [1.0], [0.5]]
    assert prm.score_last([Q] * len(cands), cands, ["5"] * len(cands)) == [1.0, 0.0, 0.5, 1.0, 0.5]


def test_outcome_needs_gold_answers(tmp_path):
    with pytest.raises(BackendError, match="needs gold answers"):
        _prm("outcome", tmp_path).score([Q], [[RIGHT]])


# -- mc-rollout -----------------------------------------------------------------------------


class FixedPolicy:
    """Returns fixed completions chosen by how many steps the prompt already holds."""

    name = "fixed"

    def __init__(self, table: dict[int, list[str]]):
        self.table = table
        self.calls: list[dict] = []

    def apply_chat_template(self, messages, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def count_tokens(self, text):
        return len(text.split())

    def generate_steps(
        self, prompts, n, temperature, stop, max_tokens, *, top_p=1.0, top_k=0, seed=None
    ):
        self.calls.append(
            {"prompts": list(prompts), "n": n, "stop": stop, "max_tokens": max_tokens, "seed": seed}
        )
        out = []
        for p in prompts:
            texts = self.table[p.split("<assistant>", 1)[1].count("STEP")]
            out.append([Step(text=texts[i % len(texts)]) for i in range(n)])
        return out


TABLE = {
    1: [WRONG, RIGHT, RIGHT, "The answer is 5"],  # 3/4 (the last via the last-number fallback)
    2: [WRONG, "", RIGHT, WRONG],  # 1/4
}


def test_mc_rollout_fraction_and_batching(tmp_path):
    policy = FixedPolicy(TABLE)
    register_generator("fake-rollout", lambda spec, home: policy)
    prm = _prm(
        "mc-rollout",
        tmp_path,
        "models.policy.backend=fake-rollout",
        "prm.mc_rollouts=4",
        "prm.mc_max_tokens=32",
    )
    cands = [["STEP one"], ["STEP one", "STEP two"], ["STEP one", RIGHT]]
    last = prm.score_last([Q] * 3, cands, ["5"] * 3)
    assert last == [0.75, 0.25, 1.0]  # the terminal candidate is graded, not rolled out
    assert len(policy.calls) == 1  # one batched generate call for all prefixes
    call = policy.calls[0]
    assert call["n"] == 4 and call["stop"] is None and call["max_tokens"] == 32
    assert len(call["prompts"]) == 2
    assert call["prompts"][1].endswith("<assistant>STEP one\n\nSTEP two\n\n")
    policy.calls.clear()
    full = prm.score([Q] * 3, cands, ["5"] * 3)
    assert full == [[0.75], [0.75, 0.25], [0.75, 1.0]]
    assert len(policy.calls) == 1 and len(policy.calls[0]["prompts"]) == 2  # shared prefixes once


def test_mc_rollout_needs_gold(tmp_path):
    policy = FixedPolicy(TABLE)
    register_generator("fake-rollout-nogold", lambda spec, home: policy)
    prm = _prm("mc-rollout", tmp_path, "models.policy.backend=fake-rollout-nogold")
    with pytest.raises(BackendError, match="needs gold answers"):
        prm.score_last([Q], [["STEP one"]])


# -- judge ----------------------------------------------------------------------------------


def _tiny_judge(batch_size: int = 16):
    from sphere_core.backends.prm_judge import JudgePRM
    from tests.unit.tiny_models import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_llama(len(tok))
    render = lambda m: tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
    return JudgePRM(model, tok, render, batch_size=batch_size), model, tok


JUDGE_CANDIDATES = [
    ["Tom has 3 apples.", "3 + 2 = 5.", RIGHT],
    ["3 + 2 = 8."],
    ["Tom has 3 apples.", "He buys 2 more, so 3 + 2 = 5."],
]


def test_judge_reward_is_yes_over_yes_plus_no_from_one_forward():
    import torch

    from sphere_core.backends.prm_judge import NO_VARIANTS, YES_VARIANTS, judge_messages

    judge, model, tok = _tiny_judge()
    steps = JUDGE_CANDIDATES[2]
    text = tok.apply_chat_template(
        judge_messages(Q, steps), tokenize=False, add_generation_prompt=True
    )
    assert "Is Step 2 correct? Answer Yes or No." in text and "Step 1: Tom has 3 apples." in text
    ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids).logits[0, -1], dim=-1)

    def ids(words):
        return sorted(
            {
                tok.encode(w, add_special_tokens=False)[0]
                for w in words
                if len(tok.encode(w, add_special_tokens=False)) == 1
            }
        )

    assert judge.yes_ids == ids(YES_VARIANTS) and judge.no_ids == ids(NO_VARIANTS)
    assert {tok.encode(w, add_special_tokens=False)[0] for w in ("Yes", " Yes")} <= set(
        judge.yes_ids
    )
    yes = sum(probs[i] for i in judge.yes_ids)
    no = sum(probs[i] for i in judge.no_ids)
    assert judge.score_last([Q], [steps])[0] == pytest.approx(float(yes / (yes + no)), abs=1e-5)


def test_judge_padding_batching_and_per_step_scores():
    judge, _, _ = _tiny_judge(batch_size=2)
    batch = judge.score_last([Q] * 3, JUDGE_CANDIDATES)
    for i, cand in enumerate(JUDGE_CANDIDATES):
        single, _, _ = _tiny_judge()
        assert single.score_last([Q], [cand])[0] == pytest.approx(batch[i], abs=1e-5)
    full = judge.score([Q] * 3, JUDGE_CANDIDATES)
    assert [len(s) for s in full] == [3, 1, 2]
    assert [s[-1] for s in full] == pytest.approx(batch, abs=1e-5)
    assert full[0][0] == pytest.approx(full[2][0], abs=1e-6)  # same prefix, same score


def test_judge_drops_early_steps_to_fit_and_errors_when_impossible():
    judge, _, _ = _tiny_judge()
    long_steps = [f"Step text number {i} with 3 + 2 = 5." for i in range(30)]
    judge.max_len = 300
    ids = judge._encode(Q, long_steps)
    assert len(ids) <= 300
    judge.max_len = 10
    with pytest.raises(BackendError, match="over max_model_len"):
        judge.score_last([Q], [long_steps])


def test_judge_needs_single_token_yes_and_no():
    from sphere_core.backends.prm_judge import JudgePRM

    class NoYes:
        pad_token_id = 0
        eos_token_id = 0

        def encode(self, word, add_special_tokens=False):
            return [1, 2]

    with pytest.raises(BackendError, match="single token"):
        JudgePRM(object(), NoYes(), str)


@pytest.mark.slow
def test_judge_with_the_embedded_model(sphere_home):
    prm = _prm("judge", sphere_home, "prm.batch_size=2")
    batch = prm.score_last([Q] * 3, JUDGE_CANDIDATES)
    assert len(batch) == 3 and all(0.0 <= x <= 1.0 for x in batch)
    alone = _prm("judge", sphere_home).score_last([Q], [JUDGE_CANDIDATES[1]])  # fresh memo
    assert alone[0] == pytest.approx(batch[1], abs=1e-4)
    full = prm.score([Q], [JUDGE_CANDIDATES[0]])
    assert len(full[0]) == 3 and full[0][-1] == pytest.approx(batch[0], abs=1e-4)


def test_score_last_dedupes_and_memoises_candidates():
    class Counting(BasePRM):
        name = "counting"
        memo_size = 2

        def __init__(self):
            super().__init__()
            self.seen: list[list[str]] = []

        def _score(self, questions, steps, golds):
            self.seen.extend(steps)
            return [[0.25] * len(s) for s in steps]

    prm = Counting()
    cands = [["a"], ["a"], ["b", "c"], ["d"]]
    assert prm.score_last(["q"] * 4, cands) == [0.25] * 4
    assert prm.seen == [["a"], ["b", "c"], ["d"]]  # duplicates scored once, larger than the memo
    assert prm.score_last(["q"], [["d"]]) == [0.25] and len(prm.seen) == 3  # memoised


def test_judge_is_not_shown_the_answer_formats_sign_off():
    from sphere_core.backends.prm_judge import judge_messages, judge_step

    assert judge_step(" Final Answer: The final answer is $5$. I hope it is correct. ") == (
        "Final Answer: The final answer is $5$."
    )
    assert judge_step("3 + 2 = 5.") == "3 + 2 = 5."
    user = judge_messages(Q, ["Tom has 3 apples.", RIGHT])[1]["content"]
    assert "I hope it is correct" not in user
    assert (
        "Step 2: So he has 5 apples.\n\nFinal Answer: The final answer is $5$.\n\nIs Step 2" in user
    )
