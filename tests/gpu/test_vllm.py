"""vllm backend on a real GPU with the embedded model (skipped without CUDA or vLLM)."""

from __future__ import annotations

import pytest

from sphere_core.backends.cache import get_generator
from sphere_core.config import ModelSpec

pytestmark = pytest.mark.gpu


def test_vllm_generates_steps(sphere_home):
    pytest.importorskip("vllm")
    gen = get_generator(
        ModelSpec(backend="vllm", gpu_memory_utilization=0.3, max_model_len=1024), sphere_home
    )
    prompt = gen.apply_chat_template([{"role": "user", "content": "What is 12*7?"}])
    rows = gen.generate_steps([prompt, prompt], 3, 0.8, ["\n\n"], 32, seed=0)
    for step in (s for r in rows for s in r):
        assert "\n\n" not in step.text and step.finish_reason in {"stop", "eos", "length"}
        assert len(step.token_logprobs) == step.num_tokens and max(step.token_logprobs) <= 0
