"""DPO fine-tuning of the policy with a LoRA adapter (paper §3.4, Appendix A.3).

Reads ``pairs/train.parquet`` and ``pairs/eval.parquet`` (TRL conversational columns
``prompt``/``chosen``/``rejected``; everything else is dropped before training), trains a
PEFT LoRA adapter with TRL's ``DPOTrainer`` and writes, under ``output_dir``
(``runs/<id>/model/``): ``adapter/`` (the lowest-eval-loss adapter when an eval split
exists), ``merged/`` (when ``training.save_merged``), ``checkpoints/`` and ``train_log.json``
(the trainer's ``log_history``, read by the report).

Granularity: every pair in the files is used — trajectory pairs and, when ``pairs.step_pairs``
produced them, step pairs (the paper trains on both). ``granularities=`` narrows it.

Owns training only: no store writes (the flow records checkpoints), no generation.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sphere_core.config import SphereConfig
from sphere_core.errors import TrainingError
from sphere_core.training.device import pick_device, torch_dtype, use_bf16

log = logging.getLogger(__name__)

TRL_COLUMNS = ("prompt", "chosen", "rejected")
TRAIN_LOG = "train_log.json"


@dataclass
class TrainResult:
    adapter_dir: Path
    merged_dir: Path | None
    metrics: dict[str, Any]
    log_history: list[dict[str, Any]] = field(default_factory=list)
    best_checkpoint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["adapter_dir"] = str(self.adapter_dir)
        out["merged_dir"] = str(self.merged_dir) if self.merged_dir else None
        return out


def load_pairs(path: Path | None, granularities: Sequence[str] | None = None):
    """Pairs file -> ``datasets.Dataset`` with only prompt/chosen/rejected (empty when missing)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from datasets import Dataset

    if path is None or not Path(path).is_file():
        return None
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise TrainingError(f"cannot read pairs file {path}: {err}") from None
    missing = [c for c in TRL_COLUMNS if c not in table.column_names]
    if missing:
        raise TrainingError(f"pairs file {path} lacks column(s) {', '.join(missing)}")
    if granularities is not None and "granularity" in table.column_names:
        table = table.filter(pc.is_in(table["granularity"], value_set=pa.array(list(granularities))))
    table = table.select(list(TRL_COLUMNS)).replace_schema_metadata(None)
    return Dataset(table)


def _eval_steps(cfg: SphereConfig, n_train: int) -> tuple[str, int | None]:
    """Evaluation/save schedule: per epoch, every ``eval_steps``, or 4 times in a max_steps run."""
    t = cfg.training
    if t.eval_steps:
        return "steps", t.eval_steps
    if t.max_steps > 0:
        steps_per_epoch = math.ceil(n_train / (t.per_device_batch_size * t.gradient_accumulation_steps))
        if t.max_steps < steps_per_epoch * t.num_epochs:
            return "steps", max(1, math.ceil(t.max_steps / 4))
    return "epoch", None


def _dpo_config(cfg: SphereConfig, output_dir: Path, device: str, has_eval: bool, n_train: int):
    from trl import DPOConfig

    t = cfg.training
    bf16 = use_bf16(t.bf16, device)
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir / "checkpoints"),
        "beta": t.beta,
        "learning_rate": t.learning_rate,
        "warmup_steps": t.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        "num_train_epochs": t.num_epochs,
        "max_steps": t.max_steps,
        "per_device_train_batch_size": t.per_device_batch_size,
        "per_device_eval_batch_size": t.per_device_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "max_length": t.max_length,
        "logging_steps": t.logging_steps,
        "seed": t.seed,
        "bf16": bf16,
        "fp16": False,
        "use_cpu": device == "cpu",
        "activation_checkpointing": device.startswith("cuda"),
        "report_to": "none",
        "save_total_limit": 2,
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


def load_policy(cfg: SphereConfig, home: Path, device: str):
    """(model, tokenizer) of ``cfg.models.policy`` resolved to a local HF directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sphere_core.backends.embedded import resolve_model_path

    path = resolve_model_path(cfg.models.policy.path, home)
    spec_dtype = cfg.models.policy.dtype
    if spec_dtype == "auto":  # follow the training precision
        spec_dtype = "bfloat16" if use_bf16(cfg.training.bf16, device) else "float32"
    dtype = torch_dtype(spec_dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as err:
        raise TrainingError(f"cannot load policy model from {path}: {err}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _best_checkpoint(trainer) -> str | None:
    best = trainer.state.best_model_checkpoint
    return str(best) if best else None


def train_dpo(
    cfg: SphereConfig,
    train_path: Path,
    eval_path: Path | None,
    output_dir: Path,
    home: Path,
    *,
    granularities: Sequence[str] | None = None,
) -> TrainResult:
    """Train a LoRA adapter with DPO on the pairs; see the module docstring for outputs."""
    train_ds = load_pairs(train_path, granularities)
    if train_ds is None or len(train_ds) == 0:
        raise TrainingError(
            f"no preference pairs to train on in {train_path}"
            + ("" if granularities is None else f" (granularities {list(granularities)})")
            + "; generate pairs first (sphere generate) or check the routing summary"
        )
    eval_ds = load_pairs(eval_path, granularities) if eval_path else None
    if eval_ds is None or len(eval_ds) == 0:
        log.warning(
            "no eval pairs in %s: training on %d pairs without an eval split; the final "
            "adapter is kept instead of the lowest-eval-loss checkpoint",
            eval_path, len(train_ds),
        )
        eval_ds = None

    from trl import DPOTrainer

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.models.policy.device)
    args = _dpo_config(cfg, output_dir, device, eval_ds is not None, len(train_ds))
    model, tokenizer = load_policy(cfg, home, device)
    try:
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            peft_config=_lora_config(cfg),
        )
        train_output = trainer.train()
    except (ValueError, RuntimeError) as err:
        raise TrainingError(f"DPO training failed on {train_path}: {err}") from err

    metrics: dict[str, Any] = dict(train_output.metrics)
    metrics.update(n_train=len(train_ds), n_eval=len(eval_ds) if eval_ds is not None else 0,
                   device=device, bf16=bool(args.bf16), global_step=trainer.state.global_step)
    if eval_ds is not None:
        metrics.update(trainer.evaluate())  # the loaded (best) adapter's eval metrics
        metrics["best_eval_loss"] = trainer.state.best_metric

    adapter_dir = output_dir / "adapter"
    trainer.save_model(str(adapter_dir))
    tokenizer.save_pretrained(adapter_dir)
    merged_dir = None
    if cfg.training.save_merged:
        merged_dir = output_dir / "merged"
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)

    history = list(trainer.state.log_history)
    result = TrainResult(
        adapter_dir=adapter_dir,
        merged_dir=merged_dir,
        metrics={k: _plain(v) for k, v in metrics.items()},
        log_history=history,
        best_checkpoint=_best_checkpoint(trainer),
    )
    (output_dir / TRAIN_LOG).write_text(json.dumps(
        {"log_history": history, "metrics": result.metrics, "best_checkpoint": result.best_checkpoint},
        indent=2, default=str,
    ))
    return result


def _plain(value: Any) -> Any:
    """JSON-friendly metric values (numpy/torch scalars -> float)."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
