"""How train_dpo sets up TRL: reference log-probs precomputed, one-pair micro-batches on CPU
with the same effective batch, no activation checkpointing on CPU, bf16 from training.bf16,
float32 weights under CPU autocast, torch threads on every usable core while training, and on CPU
an LM head that scores completion positions only (same log-probs and gradients)."""

from __future__ import annotations

import pytest

from sphere_core.backends.cpu_features import cpu_has_native_bf16
from sphere_core.training import dpo
from tests.unit.test_dpo import quick_cfg


def test_cpu_config_precomputes_reference_and_micro_batches(tmp_path):
    cfg = quick_cfg(
        **{"training.per_device_batch_size": "2", "training.gradient_accumulation_steps": "3"}
    )
    args = dpo._dpo_config(cfg, tmp_path, "cpu", has_eval=True, n_train=12)
    assert args.precompute_ref_log_probs is True
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (1, 6)
    assert args.per_device_eval_batch_size == 1 and args.precompute_ref_batch_size == 1
    assert args.activation_checkpointing is False and args.gradient_checkpointing is False
    assert args.bf16 is cpu_has_native_bf16()  # training.bf16=auto on CPU
    assert args.max_length == 128 and args.eval_strategy == "steps"


def test_cuda_keeps_batches_and_loads_bf16_weights():
    import torch

    cfg = quick_cfg(**{"training.per_device_batch_size": "2", "training.bf16": "'true'"})
    assert dpo._batching(cfg, "cuda") == (2, 1)
    assert dpo._weights_dtype(cfg, "cuda") == torch.bfloat16
    assert dpo._weights_dtype(quick_cfg(**{"training.bf16": "'false'"}), "cuda") == torch.float32


@pytest.mark.parametrize("setting, expected", [("true", True), ("false", False)])
def test_bf16_setting_drives_autocast_and_cpu_weights_stay_float32(tmp_path, setting, expected):
    import torch

    cfg = quick_cfg(**{"training.bf16": f"'{setting}'"})
    assert dpo._dpo_config(cfg, tmp_path, "cpu", has_eval=False, n_train=4).bf16 is expected
    assert dpo._weights_dtype(cfg, "cpu") == torch.float32
    assert (
        dpo._weights_dtype(quick_cfg(**{"models.policy.dtype": "bfloat16"}), "cpu")
        == torch.bfloat16
    )


def test_torch_threads_use_every_core_and_are_restored():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with dpo._torch_threads("cpu") as n:
            assert n == dpo.usable_cores() == torch.get_num_threads()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cpu_lm_head_scores_completion_positions_only_with_the_same_result(
    sphere_home, monkeypatch
):
    import torch
    import trl.trainer.utils as trl_utils
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from sphere_core.backends.embedded import resolve_model_path

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("embedded-small", sphere_home))
    add_fused_lm_head(model)
    ids = torch.arange(100, 124).reshape(2, 12)
    labels = ids.clone()
    labels[:, :7] = -100  # prompt positions
    rows: list[int] = []
    function = trl_utils._ChunkedLogProbFunction

    class Spy:
        @staticmethod
        def apply(hidden, *args):
            rows.append(hidden.shape[0])
            return function.apply(hidden, *args)

    def run():
        model.zero_grad()
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.log_probs.sum().backward()
        return out.log_probs.detach(), model.model.norm.weight.grad.clone()

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Spy)
    full = run()
    with dpo._completion_positions_only("cpu") as active:
        compact = run()
    with dpo._completion_positions_only("cuda") as untouched:
        pass
    assert active is True and untouched is False
    assert rows == [2 * 11, 2 * 5]  # every shifted position, then only the labelled ones
    assert torch.allclose(full[0], compact[0], atol=1e-5)
    assert torch.allclose(full[1], compact[1], rtol=1e-3, atol=1e-4)  # summation order only
    assert trl_utils._use_triton(torch.device("cpu")) is False  # restored
