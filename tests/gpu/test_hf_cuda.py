"""hf generation and teacher-forced scoring on CUDA (skipped without a GPU)."""

from __future__ import annotations

import pytest

from sphere_core.backends.embedded import EMBEDDED_DIR_NAME, embedded_gguf_path, ensure_converted
from sphere_core.backends.hf import HFGenerator

pytestmark = pytest.mark.gpu


def test_hf_on_cuda_matches_cpu(session_models_dir):
    model_dir = ensure_converted(embedded_gguf_path(), session_models_dir / EMBEDDED_DIR_NAME)
    gpu = HFGenerator(model_dir, device="auto", dtype="float32")
    assert gpu.device == "cuda" and next(gpu.model.parameters()).is_cuda
    prompt = gpu.apply_chat_template([{"role": "user", "content": "What is 12*7?"}])
    rows = gpu.generate_steps([prompt, prompt], 4, 0.8, ["\n\n"], 32, seed=0)
    assert all(len(r) == 4 and all(s.num_tokens == len(s.token_logprobs) for s in r) for r in rows)
    greedy = gpu.generate_steps([prompt], 1, 0.0, None, 16)[0][0]
    forced = gpu.sequence_logprobs([prompt], [greedy.text])[0]
    assert forced == pytest.approx(greedy.token_logprobs, abs=1e-3)
    cpu = HFGenerator(model_dir, device="cpu").sequence_logprobs([prompt], [greedy.text])[0]
    assert forced == pytest.approx(cpu, abs=1e-2)
    bf16 = HFGenerator(model_dir, device="cuda")  # dtype auto -> bfloat16 on CUDA
    assert bf16.generate_steps([prompt], 2, 0.8, ["\n\n"], 16, seed=1)[0][0].num_tokens >= 1
