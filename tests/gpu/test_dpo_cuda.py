"""On CUDA: DPO picks the GPU (and bf16 where supported) and evaluation generates there."""

from __future__ import annotations

import pytest

from sphere_core.config import resolve_config
from tests.unit.test_dpo import make_pairs

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_dpo_and_eval_generation_on_cuda(tmp_path, sphere_home):
    import torch

    from sphere_core.evaluation.runner import evaluate
    from sphere_core.training.dpo import train_dpo

    cfg = resolve_config(
        overrides=[
            "training.learning_rate=5e-4",
            "training.warmup_ratio=0.0",
            "training.lora_r=8",
            "training.lora_alpha=16",
            "training.max_steps=4",
            "training.eval_steps=2",
            "training.per_device_batch_size=2",
            "training.max_length=128",
            "training.beta=0.1",
            "evaluation.max_new_tokens=32",
            "evaluation.self_correction=false",
            "models.policy.path=embedded-small",
        ]
    )
    make_pairs(4).to_parquet(tmp_path / "train.parquet")
    make_pairs(4).to_parquet(tmp_path / "eval.parquet")
    result = train_dpo(
        cfg, tmp_path / "train.parquet", tmp_path / "eval.parquet", tmp_path / "model", sphere_home
    )
    assert result.metrics["device"] == "cuda"
    assert result.metrics["bf16"] == bool(torch.cuda.is_bf16_supported())
    evals = [h["eval_loss"] for h in result.log_history if "eval_loss" in h]
    assert evals and min(evals) < 0.69

    from sphere_core.evaluation.model_specs import load_generator

    generator = load_generator(cfg, "embedded-small", result.adapter_dir, sphere_home)
    assert str(next(generator.model.parameters()).device).startswith("cuda")
    items, summary = evaluate(
        cfg, "trained", "embedded-small", result.adapter_dir, ["gsm8k"], 4, home=sphere_home
    )
    assert len(items) == 4 and items["response_1"].str.len().gt(0).all()
    assert set(summary["metric"]) == {"pass@1"}
