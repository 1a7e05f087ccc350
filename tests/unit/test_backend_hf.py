"""hf generator on the real embedded model: stops, log-probs, seeds, chunking, templates,
incremental detokenization and the inverse-CDF sampler."""

from __future__ import annotations

import itertools

import pytest

from sphere_core.backends.cache import clear_caches, get_generator
from sphere_core.backends.embedded import EMBEDDED_DIR_NAME, embedded_gguf_path, ensure_converted
from sphere_core.backends.hf import HFGenerator
from sphere_core.backends.registry import lookup
from sphere_core.backends.sampling import StreamText, sample_tokens
from sphere_core.config import ModelSpec
from sphere_core.errors import GenerationError

QUESTION = "Natalia sold clips to 48 friends in April and half as many in May. How many in total?"


@pytest.fixture(scope="module")
def gen(session_models_dir) -> HFGenerator:
    model_dir = ensure_converted(embedded_gguf_path(), session_models_dir / EMBEDDED_DIR_NAME)
    return HFGenerator(
        model_dir, device="cpu", dtype="float32", batch_size=4
    )  # tolerances are fp32


@pytest.fixture(scope="module")
def prompts(gen):
    return [
        gen.apply_chat_template([{"role": "user", "content": q}])
        for q in (QUESTION, "What is 12*7? Answer step by step.")
    ]


def test_chat_template_contains_messages(gen):
    text = gen.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    )
    assert "Be brief." in text and "What is 2+2?" in text
    assert text.rstrip().endswith("assistant")
    assert gen.count_tokens("What is 2+2?") == len(
        gen.tokenizer.encode("What is 2+2?", add_special_tokens=False)
    )


@pytest.mark.slow
def test_steps_stop_at_delimiter_with_logprobs(gen, prompts):
    rows = gen.generate_steps(prompts, 2, 0.9, ["\n\n"], 12, seed=7)
    assert len(rows) == 2 and all(len(r) == 2 for r in rows)
    for step in (s for r in rows for s in r):
        assert "\n\n" not in step.text
        assert step.finish_reason in {"stop", "eos", "length"}
        assert len(step.token_logprobs) == step.num_tokens >= 1
        assert all(lp <= 0 for lp in step.token_logprobs)
        assert step.num_tokens <= 12
        if step.finish_reason == "length":
            assert step.num_tokens == 12


def test_stop_string_split_across_tokens_is_cut(gen, prompts):
    # a stop that is not a single token: the text must end right before its first occurrence
    rows = gen.generate_steps(prompts[:1], 2, 0.0, [" clips"], 40)
    full = gen.generate_steps(prompts[:1], 1, 0.0, None, 40)[0][0].text
    step = rows[0][0]
    assert step.finish_reason == "stop"
    assert step.text == full[: full.index(" clips")]
    assert rows[0][1].text == step.text and rows[0][1] is not step


@pytest.mark.slow
def test_seeded_reproducible_and_greedy_deterministic(gen, prompts):
    a = gen.generate_steps(prompts, 2, 1.0, ["\n\n"], 8, seed=3)
    b = gen.generate_steps(prompts, 2, 1.0, ["\n\n"], 8, seed=3)
    assert [[s.text for s in r] for r in a] == [[s.text for s in r] for r in b]
    assert [[s.token_logprobs for s in r] for r in a] == [[s.token_logprobs for s in r] for r in b]
    texts = {s.text for r in gen.generate_steps(prompts[:1], 4, 1.2, None, 6, seed=5) for s in r}
    assert len(texts) > 1  # sampling really samples
    g1 = gen.generate_steps(prompts, 1, 0.0, ["\n\n"], 8)
    g2 = gen.generate_steps(prompts, 1, 0.0, ["\n\n"], 8, seed=99)
    assert [r[0].text for r in g1] == [r[0].text for r in g2]


def test_batched_equals_single_and_teacher_forced(gen, prompts):
    batched = gen.generate_steps(prompts, 1, 0.0, None, 8)
    for prompt, row in zip(prompts, batched):
        single = gen.generate_steps([prompt], 1, 0.0, None, 8)[0][0]
        assert single.text == row[0].text
        assert single.token_logprobs == pytest.approx(row[0].token_logprobs, abs=1e-4)
        forced = gen.sequence_logprobs([prompt], [single.text])[0]
        assert forced == pytest.approx(single.token_logprobs, abs=1e-4)


def test_eos_and_length_finish(gen):
    hello = gen.apply_chat_template([{"role": "user", "content": "hi"}])
    step = gen.generate_steps([hello], 1, 0.0, None, 48)[0][0]
    assert step.finish_reason == "eos" and "<|im_end|>" not in step.text
    assert gen.generate_steps([hello], 1, 0.0, None, 2)[0][0].finish_reason == "length"


def test_sequence_logprobs_shapes_and_errors(gen, prompts):
    out = gen.sequence_logprobs(
        [prompts[0], prompts[1], prompts[0]], ["48 + 24 = 72", "", "Answer: 84"]
    )
    assert len(out[0]) == gen.count_tokens("48 + 24 = 72") and out[1] == []
    assert all(lp <= 0 for lp in out[0] + out[2])
    with pytest.raises(GenerationError, match="one continuation per prompt"):
        gen.sequence_logprobs(prompts, ["x"])
    saved, gen.max_model_len = gen.max_model_len, 8
    try:
        with pytest.raises(GenerationError, match="prompt 0 has .* max_model_len=8"):
            gen.generate_steps(prompts[:1], 1, 0.0, None, 4)
    finally:
        gen.max_model_len = saved
    with pytest.raises(GenerationError, match="temperature"):
        gen.generate_steps(prompts, 1, -1.0, None, 4)


def test_registry_and_cache(sphere_home):
    spec = ModelSpec(path="embedded-small", device="cpu", batch_size=8)
    clear_caches()
    first = get_generator(spec, sphere_home)
    assert isinstance(first, HFGenerator) and lookup("generator", "hf")
    assert get_generator(spec, sphere_home) is first
    assert get_generator(spec.model_copy(update={"batch_size": 4}), sphere_home) is not first
    clear_caches()
    assert get_generator(spec, sphere_home) is not first
    clear_caches()


def test_incremental_text_equals_full_decode(gen):
    text = "Total: 48 + 24 = 72 clips. Ünïcödé ✓ 数学 🙂 done.\n\nNext"
    ids = gen.encode(text)
    stream, grown = StreamText(gen.tokenizer), []
    for tok in ids:
        stream.push(tok)
        grown.append(stream.text)
        assert gen.tokenizer.decode(stream.ids).startswith(stream.text)  # never ahead of the truth
    assert stream.text == stream.full() == gen.tokenizer.decode(ids) == text
    assert any(
        a == b for a, b in itertools.pairwise(grown)
    )  # a multi-byte character waits for its last byte


def test_inverse_cdf_sampler_respects_top_k_top_p_and_frequencies():
    import torch

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    freq = torch.bincount(sample_tokens(logits, 1.0, 1.0, 0, g), minlength=4).float() / 20000
    assert freq.tolist() == pytest.approx([0.5, 0.3, 0.15, 0.05], abs=0.015)
    assert set(sample_tokens(logits, 1.0, 1.0, 2, g).tolist()) == {0, 1}  # top-k 2
    assert set(sample_tokens(logits, 1.0, 0.7, 0, g).tolist()) == {0, 1}  # 0.5 < 0.7 <= 0.8
    assert set(sample_tokens(logits, 1.0, 0.5, 0, g).tolist()) == {0}
    hot = torch.bincount(sample_tokens(logits, 3.0, 1.0, 0, g), minlength=4).float() / 20000
    assert hot[3] > 0.15  # a high temperature flattens the distribution
    assert sample_tokens(logits[:2], 0.0, 1.0, 0, g).tolist() == [0, 0]
