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

Owns training only: no store writes (the flow records checkpoints), no generation.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sphere_core.config import SphereConfig
from sphere_core.devices import pick_device, pick_dtype, use_bf16
from sphere_core.errors import TrainingError
from sphere_core.progress import emit

log = logging.getLogger(__name__)

TRL_COLUMNS = ("prompt", "chosen", "rejected")
TRAIN_LOG = "train_log.json"
# Files a merged model dir must hold to serve as a policy path (weights are checked apart:
# ``model.safetensors`` or a sharded index).
MERGED_FILES = ("config.json", "generation_config.json", "tokenizer_config.json")


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


def _weights_dtype(cfg: SphereConfig, device: str):
    """Policy weights dtype on load: the spec's, or for ``auto`` bf16 on a bf16 CUDA run, else float32.

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
        if isinstance(module, torch.nn.Linear) and module is not tied and module.weight.dtype == torch.float32:
            module.weight.data = module.weight.data.to(torch.bfloat16)
            if module.bias is not None:
                module.bias.data = module.bias.data.to(torch.bfloat16)
            n += 1
    return n


def load_policy(cfg: SphereConfig, home: Path, device: str):
    """(model, tokenizer) of ``cfg.models.policy``: a local HF dir, with its ``adapter`` merged in."""
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


def _progress_callback():
    from transformers import TrainerCallback

    class DPOProgress(TrainerCallback):
        """Turns the trainer's log records into ``sphere_core.progress`` events."""

        def __init__(self) -> None:
            self.started = time.perf_counter()
            self.step_times: list[float] = []
            self._last = self.started
            self.final = False  # set for the evaluation of the best adapter after training

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = self._last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.step_times.append(now - self._last)
            self._last = now

        def on_evaluate(self, args, state, control, **kwargs):
            self._last = time.perf_counter()  # evaluation time is not a step's time

        def on_save(self, args, state, control, **kwargs):
            self._last = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            k, n = state.global_step, state.max_steps
            elapsed = time.perf_counter() - self.started
            if "loss" in logs:
                loss, margin = float(logs["loss"]), float(logs.get("rewards/margins", float("nan")))
                emit("step", f"dpo step {k}/{n}: loss {loss:.4f}, margin {margin:.3f}, {elapsed:.1f}s",
                     stage="dpo", step=k, total=n, loss=loss, margin=margin, elapsed_s=round(elapsed, 2),
                     accuracy=logs.get("rewards/accuracies"))
            elif "eval_loss" in logs:
                loss = float(logs["eval_loss"])
                margin = float(logs.get("eval_rewards/margins", float("nan")))
                what = "best adapter's eval" if self.final else f"eval at step {k}/{n}"
                emit("info", f"dpo {what}: loss {loss:.4f}, margin {margin:.3f}, {elapsed:.1f}s",
                     stage="dpo", step=k, total=n, eval_loss=loss, margin=margin, elapsed_s=round(elapsed, 2))

    return DPOProgress()


def _pair_lengths(dataset) -> list[int]:
    """Tokens of each tokenized pair's longer side (prompt + longer completion)."""
    return [len(p) + max(len(c), len(r))
            for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"])]


def save_merged(cfg: SphereConfig, home: Path, adapter_dir: Path, merged_dir: Path) -> Path:
    """Write the policy with the trained adapter merged in as a complete model dir.

    The policy is reloaded from ``models.policy.path`` in its checkpoint dtype (plus
    ``models.policy.adapter``), so the adapter is merged into the weights as stored, not into
    the training copy (bf16 projections would round a small update away). Tokenizer files and
    the chat template come from ``adapter_dir``; ``merged_dir`` is replaced atomically.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sphere_core.backends.adapters import merge_lora
    from sphere_core.backends.embedded import resolve_model_path

    spec = cfg.models.policy
    merged_dir = Path(merged_dir)
    tmp = merged_dir.with_name(f".{merged_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(spec.path, home), dtype="auto")
        if spec.adapter:
            model = merge_lora(model, spec.adapter)
        model = merge_lora(model, adapter_dir)
        tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
        model.config.use_cache = True  # generation default
        model.save_pretrained(tmp)  # config.json, generation_config.json, *.safetensors
        tokenizer.save_pretrained(tmp)  # tokenizer files and the chat template
    except (OSError, ValueError, RuntimeError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainingError(f"cannot write the merged model to {merged_dir}: {err}") from err
    missing = [name for name in MERGED_FILES if not (tmp / name).is_file()]
    if not any(tmp.glob("*.safetensors")):
        missing.append("*.safetensors")
    if tokenizer.chat_template and not _has_chat_template(tmp):
        missing.append("chat template")
    if missing:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainingError(f"merged model for {merged_dir} is incomplete: missing {', '.join(missing)}")
    if merged_dir.exists():
        shutil.rmtree(merged_dir)
    tmp.rename(merged_dir)
    return merged_dir


def _has_chat_template(model_dir: Path) -> bool:
    if (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((model_dir / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, json.JSONDecodeError):
        return False


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

    from transformers import PrinterCallback

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.models.policy.device)
    args = _dpo_config(cfg, output_dir, device, eval_ds is not None, len(train_ds))
    model, tokenizer = load_policy(cfg, home, device)
    with _torch_threads(device) as threads, _completion_positions_only(device):
        trainer, setup_s = _build_trainer(cfg, model, tokenizer, args, train_ds, eval_ds, train_path)
        lengths = _pair_lengths(trainer.train_dataset)
        n_cut = sum(n > cfg.training.max_length for n in lengths)
        if n_cut:
            log.warning("%d of %d training pairs in %s are longer than training.max_length=%d "
                        "(longest %d tokens): their completion ends are cut", n_cut, len(lengths),
                        train_path, cfg.training.max_length, max(lengths))
        emit("info", f"dpo: {len(train_ds)} train / {len(eval_ds) if eval_ds is not None else 0} eval "
                     f"pairs on {device} ({threads} threads, bf16 {bool(args.bf16)}), longest pair "
                     f"{max(lengths)} tokens; reference log-probs ready in {setup_s:.1f}s",
             stage="dpo", elapsed_s=round(setup_s, 2))
        progress = _progress_callback()
        trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; progress events replace it
        trainer.add_callback(progress)
        try:
            train_output = trainer.train()
        except (ValueError, RuntimeError) as err:
            raise TrainingError(f"DPO training failed on {train_path}: {err}") from err

        metrics: dict[str, Any] = dict(train_output.metrics)
        metrics.update(n_train=len(train_ds), n_eval=len(eval_ds) if eval_ds is not None else 0,
                       device=device, bf16=bool(args.bf16), global_step=trainer.state.global_step,
                       threads=threads, ref_precompute_s=round(setup_s, 3),
                       s_per_step=round(sum(progress.step_times) / max(1, len(progress.step_times)), 3),
                       max_pair_tokens=max(lengths), n_truncated=n_cut)
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
    merged_dir = save_merged(cfg, home, adapter_dir, output_dir / "merged") if cfg.training.save_merged else None

    result = TrainResult(
        adapter_dir=adapter_dir,
        merged_dir=merged_dir,
        metrics={k: _plain(v) for k, v in metrics.items()},
        log_history=history,
        best_checkpoint=best,
    )
    (output_dir / TRAIN_LOG).write_text(json.dumps(
        {"log_history": history, "metrics": result.metrics, "best_checkpoint": result.best_checkpoint},
        indent=2, default=str,
    ))
    return result


def _build_trainer(cfg, model, tokenizer, args, train_ds, eval_ds, train_path):
    """The DPOTrainer (tokenizes the pairs and precomputes reference log-probs); (trainer, seconds)."""
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
        log.warning("%d of %d training pairs in %s have a prompt of at least training.max_length=%d "
                    "tokens and are left out", dropped, len(train_ds), train_path, cfg.training.max_length)
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
