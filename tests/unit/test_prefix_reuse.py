"""Prefix reuse on the real embedded-small model: same outputs with and without it, less prefill.

The generator with reuse (default bound) and without (``prefix_cache_mb=0``) share one model;
the search's pattern is replayed: depth d+1 prompts are depth-d prompts plus a sampled step and
the delimiter. The judge PRM with prefix sharing is compared against its full re-encode path.
Tolerances: reuse changes only the shapes of the matrix products (which positions are computed
together), so outputs differ by float rounding only; sampled tokens, texts and finish reasons
are identical.
"""

from __future__ import annotations

import pytest

from sphere_core.backends.embedded import EMBEDDED_DIR_NAME, embedded_gguf_path, ensure_converted
from sphere_core.backends.hf import HFGenerator
from sphere_core.backends.prm_judge import JudgePRM
from sphere_core.prompts import solve_messages

QUESTIONS = [
    (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
        "in May. How many clips did Natalia sell altogether in April and May?"
    ),
    (
        "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
        "babysitting. How much did she earn?"
    ),
]
LOGPROB_TOL = 5e-5  # the batched-vs-single noise floor of the same model without any reuse


@pytest.fixture(scope="module")
def gens(session_models_dir):
    model_dir = ensure_converted(embedded_gguf_path(), session_models_dir / EMBEDDED_DIR_NAME)
    plain = HFGenerator(model_dir, device="cpu", dtype="float32", prefix_cache_mb=0)
    reuse = HFGenerator(model_dir, device="cpu", dtype="float32")
    reuse.model = plain.model  # one set of weights
    return plain, reuse


def _same(a, b):
    for row_a, row_b in zip(a, b, strict=True):
        for x, y in zip(row_a, row_b, strict=True):
            assert x.text == y.text and x.finish_reason == y.finish_reason
            assert x.num_tokens == y.num_tokens
            assert x.token_logprobs == pytest.approx(y.token_logprobs, abs=LOGPROB_TOL)


def _expand(gen, depth_prompts, steps):
    return [p + s.text.strip() + "\n\n" for p, row in zip(depth_prompts, steps) for s in row[:1]]


def test_greedy_extension_reuses_the_parent_prompt_and_step(gens):
    plain, reuse = gens
    reuse.clear_prefix_cache()
    prompts = [plain.apply_chat_template(solve_messages(q)) for q in QUESTIONS]
    a0 = plain.generate_steps(prompts, 1, 0.0, ["\n\n"], 10)
    b0 = reuse.generate_steps(prompts, 1, 0.0, ["\n\n"], 10)
    _same(a0, b0)
    # the two prompts share the system turn: it was prefilled once, then reused by both
    assert reuse.prefill_counter.reused_tokens > 0
    before = (plain.prefill_counter.fed_tokens, reuse.prefill_counter.fed_tokens)
    nxt = _expand(reuse, prompts, b0)
    _same(
        plain.generate_steps(nxt, 1, 0.0, ["\n\n"], 10),
        reuse.generate_steps(nxt, 1, 0.0, ["\n\n"], 10),
    )
    fed_plain = plain.prefill_counter.fed_tokens - before[0]
    fed_reuse = reuse.prefill_counter.fed_tokens - before[1]
    assert fed_plain == sum(plain.count_tokens(p) for p in nxt)
    # only the tokens after the cached prompt + step are fed: a handful per prompt
    assert fed_reuse <= 4 * len(nxt) and fed_reuse * 10 < fed_plain


@pytest.mark.slow
def test_sampled_search_pattern_identical_with_and_without_reuse(gens):
    plain, reuse = gens
    reuse.clear_prefix_cache()
    prompts = [plain.apply_chat_template(solve_messages(q)) for q in QUESTIONS]
    fed = []
    for depth in range(3):
        start = (plain.prefill_counter.fed_tokens, reuse.prefill_counter.fed_tokens)
        a = plain.generate_steps(prompts, 3, 0.8, ["\n\n"], 16, seed=depth)
        b = reuse.generate_steps(prompts, 3, 0.8, ["\n\n"], 16, seed=depth)
        _same(a, b)
        fed.append(
            (
                plain.prefill_counter.fed_tokens - start[0],
                reuse.prefill_counter.fed_tokens - start[1],
            )
        )
        # two tails per question, like the max and min side of the search
        prompts = [p + row[k].text.strip() + "\n\n" for p, row in zip(prompts, b) for k in (0, 2)][
            :4
        ]
    assert all(r < p for p, r in fed[1:]) and sum(r for _, r in fed[1:]) * 5 < sum(
        p for p, _ in fed[1:]
    )


JUDGE_STEPS = [
    [
        "She sold 48/2 = 24 clips in May.",
        "In total she sold 48 + 24 = 72 clips.",
        "Final Answer: The final answer is $72$. I hope it is correct.",
    ],
    [
        "Half of 48 is 20.",
        "So the total is 68 clips.",
        "Final Answer: The final answer is $68$. I hope it is correct.",
    ],
]


def _judge_batch(depth: int):
    questions, candidates = [], []
    for q in QUESTIONS:
        for path in JUDGE_STEPS:
            for e in range(2):  # sibling candidates of one node
                last = path[depth] + ("" if e == 0 else f" (check {e})")
                questions.append(q)
                candidates.append(path[:depth] + [last])
    return questions, candidates


def _judges(gen, **kw):
    render = lambda m: gen.apply_chat_template(m, add_generation_prompt=True)
    full = JudgePRM(gen.model, gen.tokenizer, render, share_prefixes=False, **kw)
    shared = JudgePRM(gen.model, gen.tokenizer, render, prefix_cache=gen.prefix_cache, **kw)
    return full, shared


def test_judge_prefix_sharing_equals_full_re_encode_across_depths(gens):
    _, reuse = gens
    reuse.clear_prefix_cache()
    full, shared = _judges(reuse, batch_size=5)
    assert shared.geometry is not None and full.geometry is None
    for depth in range(2):
        questions, candidates = _judge_batch(depth)
        want = full.score_last(questions, candidates)
        got = shared.score_last(questions, candidates)
        assert got == pytest.approx(want, abs=1e-5)
    # what each candidate adds is fed, not the problem and path again
    assert shared.prefill_counter.fed_tokens * 2 < full.prefill_counter.fed_tokens
    assert shared.prefix_cache.stats.matched_tokens > 0
    # per-step scores (score) go through the same sharing
    questions, candidates = _judge_batch(1)
    got, want = (
        shared.score(questions[:2], candidates[:2]),
        full.score(questions[:2], candidates[:2]),
    )
    assert [len(s) for s in got] == [2, 2]
    assert [x for s in got for x in s] == pytest.approx([x for s in want for x in s], abs=1e-5)


def test_judge_sharing_keeps_truncation_and_padding_invariance(gens):
    _, reuse = gens
    reuse.clear_prefix_cache()
    full, shared = _judges(reuse, max_len=160)
    long_path = [f"Step text number {i}: 3 + 2 = 5, and 48 / 2 = 24." for i in range(8)]
    questions = [QUESTIONS[0]] * 3
    candidates = [long_path[:6], long_path[:7], long_path]
    assert all(len(shared._encode(q, c)) <= 160 for q, c in zip(questions, candidates))
    assert "(earlier steps omitted)" in reuse.tokenizer.decode(
        shared._encode(questions[2], candidates[2])
    )
    want = full.score_last(questions, candidates)
    assert shared.score_last(questions, candidates) == pytest.approx(want, abs=1e-5)
    reuse.clear_prefix_cache()  # alone and cold: no padding, no reused prefix
    _, alone = _judges(reuse, max_len=160)
    assert alone.score_last(questions[1:2], candidates[1:2])[0] == pytest.approx(want[1], abs=1e-5)


def test_models_without_reusable_layers_decode_with_transformers_cache(gens):
    plain, _ = gens
    prompts = [plain.apply_chat_template(solve_messages(q)) for q in QUESTIONS]
    want = plain.generate_steps(prompts, 2, 0.8, ["\n\n"], 8, seed=4)
    saved = plain.geometry
    plain.geometry = None  # what kv_geometry says for sliding-window / linear-attention models
    try:
        got = plain.generate_steps(prompts, 2, 0.8, ["\n\n"], 8, seed=4)
    finally:
        plain.geometry = saved
    _same(want, got)
