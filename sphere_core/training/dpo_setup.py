"""How DPO is set up: TRL's ``DPOConfig`` from ``training.*``, the LoRA config, the policy
model as loaded for training, and the CPU speed-ups (threads, completion-only LM head); see the
docstring of :mod:`sphere_core.training.dpo` for what each does."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sphere_core.config import SphereConfig
from sphere_core.devices import pick_dtype, use_bf16
from sphere_core.errors import TrainingError


def _eval_steps(cfg: SphereConfig, n_train: int) -> tuple[str, int | None]:
    """Evaluation/save schedule: per epoch, every ``eval_steps``, or 4 times in a max_steps run."""
    t = cfg.training
    if t.eval_steps:
        return "steps", t.eval_steps
    if t.max_steps > 0:
        steps_per_epoch = math.ceil(
            n_train / (t.per_device_batch_size * t.gradient_accumulation_steps)
        )
        if t.max_steps < steps_per_epoch * t.num_epochs:
            return "steps", max(1, math.ceil(t.max_steps / 4))
    return "epoch", None


def _batching(cfg: SphereConfig, device: str) -> tuple[int, int]:
    """(pairs per forward, accumulation steps): one-pair micro-batches on CPU, same update."""
    t = cfg.training
    if device == "cpu":
        return 1, t.per_device_batch_size * t.gradient_accumulation_steps
    return t.per_device_batch_size, t.gradient_accumulation_steps


def _dpo_config(cfg: SphereConfig, output_dir: Path, device: str, has_eval: bool, n_train: int):
    from trl import DPOConfig

    t = cfg.training
    bf16 = use_bf16(t.bf16, device)
    per_forward, accumulation = _batching(cfg, device)
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir / "checkpoints"),
        "beta": t.beta,
        "learning_rate": t.learning_rate,
        "warmup_steps": t.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        "num_train_epochs": t.num_epochs,
        "max_steps": t.max_steps,
        "per_device_train_batch_size": per_forward,
        "per_device_eval_batch_size": per_forward,
        "gradient_accumulation_steps": accumulation,
        "max_length": t.max_length,
        "precompute_ref_log_probs": True,
        "precompute_ref_batch_size": per_forward,
        "logging_steps": t.logging_steps,
        "seed": t.seed,
        "bf16": bf16,
        "fp16": False,
        "use_cpu": device == "cpu",
        "activation_checkpointing": device.startswith("cuda"),
        "dataloader_pin_memory": device.startswith("cuda"),
        "report_to": "none",
        "disable_tqdm": True,  # progress goes through sphere_core.progress
        "save_total_limit": t.save_total_limit,
        "dataset_num_proc": None,
    }
    if has_eval:
        strategy, steps = _eval_steps(cfg, n_train)
        kwargs.update(
            eval_strategy=strategy,
            save_strategy=strategy,
            load_best_model_at_end=True,
            metric_for_best_model="eval_loss",
            greater_is_better=False,
        )
        if steps:
            kwargs.update(eval_steps=steps, save_steps=steps)
    else:
        kwargs.update(eval_strategy="no", save_strategy="no")
    return DPOConfig(**kwargs)


def _lora_config(cfg: SphereConfig):
    from peft import LoraConfig

    t = cfg.training
    return LoraConfig(
        r=t.lora_r,
        lora_alpha=t.lora_alpha,
        lora_dropout=t.lora_dropout,
        target_modules="all-linear",  # every linear projection (attention + MLP), not lm_head
        bias="none",
        task_type="CAUSAL_LM",
    )


def _weights_dtype(cfg: SphereConfig, device: str):
    """Policy weights dtype on load: the spec's, or for ``auto`` bf16 on a bf16 CUDA run, else
    float32.

    On CPU the weights load in float32 even for a bf16 run: ``_bf16_frozen_linears`` then
    stores only the frozen projections in bf16 (see there).
    """
    spec_dtype = cfg.models.policy.dtype
    if spec_dtype == "auto":
        bf16 = use_bf16(cfg.training.bf16, device)
        spec_dtype = "bfloat16" if bf16 and device.startswith("cuda") else "float32"
    return pick_dtype(spec_dtype, device)


def _bf16_frozen_linears(model) -> int:
    """Store the float32 weights and biases of the model's ``nn.Linear`` layers in bf16.

    For a CPU bf16-autocast run: autocast rounds every projection's weight to bf16 on each
    call anyway, so keeping them in bf16 gives the same matmuls without the per-call casts,
    and halves their memory. Embeddings, norms and (new, float32) LoRA weights are untouched,
    so the residual stream stays float32. An LM head tied to the input embeddings is left
    alone. Returns the number of layers converted. Call before PEFT wraps the model.
    """
    import torch

    tied = model.get_output_embeddings()
    tied = tied if tied is not None and tied.weight is model.get_input_embeddings().weight else None
    n = 0
    for module in model.modules():
        if (
            isinstance(module, torch.nn.Linear)
            and module is not tied
            and module.weight.dtype == torch.float32
        ):
            module.weight.data = module.weight.data.to(torch.bfloat16)
            if module.bias is not None:
                module.bias.data = module.bias.data.to(torch.bfloat16)
            n += 1
    return n


def load_policy(cfg: SphereConfig, home: Path, device: str):
    """(model, tokenizer) of ``cfg.models.policy``: a local HF dir, with its ``adapter`` merged
    in."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sphere_core.backends.adapters import merge_lora
    from sphere_core.backends.embedded import resolve_model_path

    spec = cfg.models.policy
    path = resolve_model_path(spec.path, home)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_weights_dtype(cfg, device))
    except (OSError, ValueError) as err:
        raise TrainingError(f"cannot load policy model from {path}: {err}") from None
    if spec.adapter:  # the policy is base + adapter: that is also the DPO reference
        model = merge_lora(model, spec.adapter)
    if device == "cpu" and use_bf16(cfg.training.bf16, device):
        _bf16_frozen_linears(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def usable_cores() -> int:
    """CPU cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _torch_threads(device: str) -> Iterator[int]:
    """On CPU run torch on every usable core for the duration; yields the thread count."""
    import torch

    before = torch.get_num_threads()
    wanted = usable_cores() if device == "cpu" else before
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if wanted != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def _completion_positions_only(device: str) -> Iterator[bool]:
    """On CPU, let TRL's fused LM head score only completion positions (yields whether it does).

    TRL projects hidden states through the LM head only where a label is set on CUDA, but on
    every position elsewhere (to keep tile shapes fixed for compiled backends), which on CPU
    spends a large share of a step on prompt and padding rows whose log-probs are then zeroed.
    The choice is TRL's private ``trl.trainer.utils._use_triton``; it is switched for the
    duration only, and left alone when the installed TRL does not have it. Log-probs and
    gradients are the same either way (``tests/unit/test_dpo_config.py`` checks it).
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if device != "cpu" or not callable(original):
        yield False
        return
    trl_utils._use_triton = lambda dev: dev.type == "cpu" or original(dev)
    try:
        yield True
    finally:
        trl_utils._use_triton = original
