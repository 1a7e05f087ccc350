"""DPO fine-tuning of the policy with a LoRA adapter (paper §3.4, Appendix A.3).

Reads ``pairs/train.parquet`` and ``pairs/eval.parquet`` (TRL conversational columns
``prompt``/``chosen``/``rejected``; everything else is dropped before training), trains a
PEFT LoRA adapter with TRL's ``DPOTrainer`` and writes, under ``output_dir``
(``runs/<id>/model/``): ``adapter/`` (the lowest-eval-loss adapter when an eval split
exists), ``merged/`` (when ``training.save_merged``: a complete model dir — config,
safetensors weights, tokenizer, generation config, chat template — usable as the next
round's ``models.policy.path``), ``checkpoints/`` and ``train_log.json``.

Policy and reference: the policy is ``models.policy.path`` (``embedded``, ``embedded-small``,
a ``.gguf`` or any local HF model dir, e.g. the previous round's ``merged/``), with
``models.policy.adapter`` merged into it when set. The DPO reference is that same model: the
new LoRA adapter starts at zero and the reference is the policy with the adapter disabled.

Granularity: every pair in the files is used — trajectory pairs and, when ``pairs.step_pairs``
produced them, step pairs (the paper trains on both). ``granularities=`` narrows it.

Speed (what is learned is unchanged by all of these):

* reference log-probs are computed once per pair before training (TRL
  ``precompute_ref_log_probs``), so a step is one policy forward + backward;
* on CPU a batch of ``per_device_batch_size`` pairs runs as that many one-pair micro-batches
  with gradient accumulation (same update: TRL averages the per-pair loss), so pairs of
  different lengths are not padded to each other; sequences are padded per batch only
  (``max_length`` is a cap, and pairs it cuts are counted in the metrics and warned about);
* on CPU the LM head scores completion positions only (as TRL does on CUDA), not the prompt;
* no activation checkpointing on CPU (it only trades speed for memory); on CUDA it is on;
* torch uses every core this process may run on while training (restored afterwards);
* ``training.bf16`` (auto | true | false, resolved by ``devices.use_bf16``) turns on bf16
  autocast. On CPU the frozen projection weights are then stored in bf16 (the same matmuls
  autocast would run, without a cast per call, in half the memory) while embeddings, norms,
  the LoRA weights and the residual stream stay float32; on CUDA the policy is loaded in bf16
  when its ``dtype`` is ``auto``. ``merged/`` is built from the policy as stored on disk.

Logging: every ``training.logging_steps`` optimizer steps a ``step`` progress event is emitted
through ``sphere_core.progress`` (``dpo step k/N: loss .., margin .., 12.3s`` with fields
``step``, ``total``, ``loss``, ``margin``, ``elapsed_s``); an evaluation emits an ``info``
event. ``train_log.json`` holds ``{"log_history", "metrics", "best_checkpoint"}``;
``log_history`` is the trainer's full list of log records (TRL names, installed TRL 1.x):

* training records (one per logging step): ``step``, ``epoch``, ``loss``, ``grad_norm``,
  ``learning_rate``, ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``
  (chosen - rejected), ``rewards/accuracies`` (share of pairs with chosen > rejected),
  ``logps/chosen``, ``logps/rejected``, ``logits/chosen``, ``logits/rejected``, ``entropy``,
  ``mean_token_accuracy``, ``num_tokens``; a reward is ``beta * (log pi - log pi_ref)`` of the
  completion;
* evaluation records: the same names prefixed ``eval_`` (``eval_loss``, ``eval_rewards/margins``,
  ...) plus ``eval_runtime``;
* the last record: ``train_runtime``, ``train_loss``, ``train_samples_per_second``, ...

``metrics`` adds ``n_train``, ``n_eval``, ``device``, ``bf16``, ``global_step``, ``threads``,
``ref_precompute_s`` (trainer set-up incl. reference log-probs), ``s_per_step``,
``max_pair_tokens``, ``n_truncated`` and, with an eval split, the best adapter's ``eval_*``
metrics and ``best_eval_loss``.

Checkpoints, resume and stop (:mod:`sphere_core.training.checkpoints`): a checkpoint is written
every ``training.save_steps`` optimizer steps (``save_total_limit`` kept); a re-run with the same
training key resumes from the newest complete one (``dpo: resuming from step k``); SIGINT or
SIGTERM during training ends the current step, writes a checkpoint, then ends the process with
130/143 (:func:`sphere_core.interrupts.deferred`).

Set-up, data, progress and the merged model live in ``dpo_setup``, ``dpo_data``,
``dpo_progress`` and ``merged``; their public names are importable from here.

Owns training only: no store writes (the flow records checkpoints), no generation.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sphere_core import disk, interrupts
from sphere_core.config import SphereConfig
from sphere_core.devices import pick_device
from sphere_core.errors import TrainingError
from sphere_core.progress import emit
from sphere_core.training import checkpoints
from sphere_core.training.dpo_data import TRL_COLUMNS, load_pairs, pair_lengths
from sphere_core.training.dpo_progress import progress_callback
from sphere_core.training.dpo_setup import (  # noqa: F401  (re-exported: callers import them here)
    _batching,
    _bf16_frozen_linears,
    _completion_positions_only,
    _dpo_config,
    _eval_steps,
    _lora_config,
    _torch_threads,
    _weights_dtype,
    load_policy,
    usable_cores,
)
from sphere_core.training.merged import MERGED_FILES, save_merged

__all__ = [
    "MERGED_FILES",
    "TRAIN_LOG",
    "TRL_COLUMNS",
    "TrainResult",
    "load_pairs",
    "load_policy",
    "save_merged",
    "train_dpo",
    "usable_cores",
]

log = logging.getLogger(__name__)
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


def _datasets(train_path: Path, eval_path: Path | None, granularities: Sequence[str] | None):
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
            eval_path,
            len(train_ds),
        )
        eval_ds = None
    return train_ds, eval_ds


def train_dpo(
    cfg: SphereConfig,
    train_path: Path,
    eval_path: Path | None,
    output_dir: Path,
    home: Path,
    *,
    granularities: Sequence[str] | None = None,
    key: str | None = None,
) -> TrainResult:
    """Train a LoRA adapter with DPO on the pairs; see the module docstring for outputs.

    ``key`` identifies the training (the flow passes its artifact key); checkpoints written
    under another key are never resumed. Default: derived from the pairs files and the config.
    """
    train_ds, eval_ds = _datasets(train_path, eval_path, granularities)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    key = key or checkpoints.default_key(cfg, train_path, eval_path, granularities)
    device = pick_device(cfg.models.policy.device)
    args = _dpo_config(cfg, output_dir, device, eval_ds is not None, len(train_ds))
    resume = checkpoints.prepare(Path(args.output_dir), key)
    model, tokenizer = load_policy(cfg, home, device)
    with _torch_threads(device) as threads, _completion_positions_only(device):
        trainer, setup_s = _build_trainer(
            cfg, model, tokenizer, args, train_ds, eval_ds, train_path
        )
        lengths = _preflight(cfg, trainer, train_path, train_ds, eval_ds, device, threads, setup_s)
        progress = _attach_callbacks(trainer, cfg, key)
        metrics: dict[str, Any] = dict(_train(trainer, resume, train_path).metrics)
        metrics.update(
            n_train=len(train_ds),
            n_eval=len(eval_ds) if eval_ds is not None else 0,
            device=device,
            bf16=bool(args.bf16),
            threads=threads,
            ref_precompute_s=round(setup_s, 3),
            max_pair_tokens=max(lengths),
            n_truncated=sum(n > cfg.training.max_length for n in lengths),
            **_run_metrics(trainer, progress, resume),
        )
        if eval_ds is not None:
            progress.final = True
            metrics.update(trainer.evaluate())  # the loaded (best) adapter's eval metrics
            metrics["best_eval_loss"] = trainer.state.best_metric
        adapter_dir = output_dir / "adapter"
        trainer.save_model(str(adapter_dir))
        tokenizer.save_pretrained(adapter_dir)
    history, best = list(trainer.state.log_history), _best_checkpoint(trainer)
    del trainer, model  # free the training copy before the merge loads the policy again
    gc.collect()
    return _finish(cfg, home, output_dir, adapter_dir, metrics, history, best)


def _preflight(
    cfg: SphereConfig,
    trainer,
    train_path: Path,
    train_ds,
    eval_ds,
    device: str,
    threads: int,
    setup_s: float,
) -> list[int]:
    """Check the pairs' token lengths, announce the run and require disk room for its
    checkpoints (under ``trainer.args``); returns each train pair's length in tokens."""
    args = trainer.args
    lengths = _check_lengths(cfg, trainer, train_path)
    emit(
        "info",
        f"dpo: {len(train_ds)} train / {len(eval_ds) if eval_ds is not None else 0} eval "
        f"pairs on {device} ({threads} threads, bf16 {bool(args.bf16)}), longest pair "
        f"{max(lengths)} tokens; reference log-probs ready in {setup_s:.1f}s",
        stage="dpo",
        elapsed_s=round(setup_s, 2),
    )
    disk.require_free(
        Path(args.output_dir),
        checkpoints.space_needed(trainer.model, cfg.training),
        "DPO checkpoints",
    )
    return lengths


def _finish(
    cfg: SphereConfig,
    home: Path,
    output_dir: Path,
    adapter_dir: Path,
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    best: str | None,
) -> TrainResult:
    """Merge the adapter when configured, then write ``train_log.json`` (the trainer's log
    history, the final metrics, the best checkpoint)."""
    merged_dir = (
        save_merged(cfg, home, adapter_dir, output_dir / "merged")
        if cfg.training.save_merged
        else None
    )
    result = TrainResult(
        adapter_dir=adapter_dir,
        merged_dir=merged_dir,
        metrics={k: _plain(v) for k, v in metrics.items()},
        log_history=history,
        best_checkpoint=best,
    )
    (output_dir / TRAIN_LOG).write_text(
        json.dumps(
            {
                "log_history": result.log_history,
                "metrics": result.metrics,
                "best_checkpoint": result.best_checkpoint,
            },
            indent=2,
            default=str,
        )
    )
    return result


def _run_metrics(trainer, progress, resume: Path | None) -> dict[str, Any]:
    times = progress.step_times
    return {
        "global_step": trainer.state.global_step,
        "s_per_step": round(sum(times) / max(1, len(times)), 3),
        "resumed_from_step": checkpoints.step_of(resume) if resume else None,
    }


def _check_lengths(cfg: SphereConfig, trainer, train_path: Path) -> list[int]:
    """Token lengths of the tokenized training pairs; warns about pairs ``max_length`` cuts."""
    lengths = pair_lengths(trainer.train_dataset)
    n_cut = sum(n > cfg.training.max_length for n in lengths)
    if n_cut:
        log.warning(
            "%d of %d training pairs in %s are longer than training.max_length=%d "
            "(longest %d tokens): their completion ends are cut",
            n_cut,
            len(lengths),
            train_path,
            cfg.training.max_length,
            max(lengths),
        )
    return lengths


def _attach_callbacks(trainer, cfg: SphereConfig, key: str):
    """Progress events instead of the printer; checkpoints every save_steps and on a stop."""
    from transformers import PrinterCallback

    progress = progress_callback()
    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; progress events replace it
    trainer.add_callback(progress)
    trainer.add_callback(checkpoints.checkpoint_callback(key, cfg.training.save_steps))
    return progress


def _train(trainer, resume: Path | None, train_path: Path):
    """``trainer.train()``, resumed from ``resume`` when given. SIGINT/SIGTERM meanwhile end the
    current step, write a checkpoint, and are then delivered (the process ends 130/143)."""
    total = trainer.state.max_steps or "?"
    if resume is not None:
        emit(
            "info",
            f"dpo: resuming from step {checkpoints.step_of(resume)} ({resume})",
            stage="dpo",
            step=checkpoints.step_of(resume),
        )
    with interrupts.deferred():
        try:
            output = trainer.train(**checkpoints.resume_kwargs(resume))
        except (ValueError, RuntimeError) as err:
            raise TrainingError(f"DPO training failed on {train_path}: {err}") from err
        if interrupts.stop_requested():
            step, total = trainer.state.global_step, trainer.state.max_steps or total
            emit(
                "info",
                f"dpo: stopped at step {step}/{total}; checkpoint written, the same "
                f"command resumes from step {step}",
                stage="dpo",
                step=step,
                total=total,
            )
    interrupts.check()  # training in a worker thread: the stop still ends here
    return output


def _build_trainer(cfg, model, tokenizer, args, train_ds, eval_ds, train_path):
    """The DPOTrainer (tokenizes the pairs and precomputes reference log-probs); (trainer,
    seconds)."""
    from trl import DPOTrainer

    t0 = time.perf_counter()
    try:
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            peft_config=_lora_config(cfg),
        )
    except (ValueError, RuntimeError) as err:
        raise TrainingError(f"DPO set-up failed on {train_path}: {err}") from err
    dropped = len(train_ds) - len(trainer.train_dataset)
    if dropped:
        log.warning(
            "%d of %d training pairs in %s have a prompt of at least training.max_length=%d "
            "tokens and are left out",
            dropped,
            len(train_ds),
            train_path,
            cfg.training.max_length,
        )
    return trainer, time.perf_counter() - t0


def _best_checkpoint(trainer) -> str | None:
    best = trainer.state.best_model_checkpoint
    return str(best) if best else None


def _plain(value: Any) -> Any:
    """JSON-friendly metric values (numpy/torch scalars -> float)."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
