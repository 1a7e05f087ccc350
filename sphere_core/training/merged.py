"""The merged model a DPO round writes for the next round: the policy with the trained adapter
merged into its stored weights, as a complete model dir (``training.save_merged``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sphere_core import disk
from sphere_core.config import SphereConfig
from sphere_core.errors import TrainingError

# Files a merged model dir must hold to serve as a policy path (weights are checked apart:
# ``model.safetensors`` or a sharded index).
MERGED_FILES = ("config.json", "generation_config.json", "tokenizer_config.json")


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
    policy_path = resolve_model_path(spec.path, home)
    disk.require_free(merged_dir.parent, _weights_bytes(Path(policy_path)), "the merged model")
    try:
        model = AutoModelForCausalLM.from_pretrained(policy_path, dtype="auto")
        if spec.adapter:
            model = merge_lora(model, spec.adapter)
        model = merge_lora(model, adapter_dir)
        tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
        model.config.use_cache = True  # generation default
        model.save_pretrained(tmp)  # config.json, generation_config.json, *.safetensors
        tokenizer.save_pretrained(tmp)  # tokenizer files and the chat template
    except (OSError, ValueError, RuntimeError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk.is_disk_full(err):
            raise  # an infrastructure error: the CLI names the path and the free space
        raise TrainingError(f"cannot write the merged model to {merged_dir}: {err}") from err
    missing = [name for name in MERGED_FILES if not (tmp / name).is_file()]
    if not any(tmp.glob("*.safetensors")):
        missing.append("*.safetensors")
    if tokenizer.chat_template and not _has_chat_template(tmp):
        missing.append("chat template")
    if missing:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainingError(
            f"merged model for {merged_dir} is incomplete: missing {', '.join(missing)}"
        )
    if merged_dir.exists():
        shutil.rmtree(merged_dir)
    tmp.rename(merged_dir)
    return merged_dir


def _has_chat_template(model_dir: Path) -> bool:
    if (model_dir / "chat_template.jinja").is_file() or (
        model_dir / "chat_template.json"
    ).is_file():
        return True
    try:
        return bool(
            json.loads((model_dir / "tokenizer_config.json").read_text()).get("chat_template")
        )
    except (OSError, json.JSONDecodeError):
        return False


def _weights_bytes(model_dir: Path) -> int:
    """Size of a model dir's weight files (what a merged copy of it takes), with 10% slack."""
    if not model_dir.is_dir():
        return 0
    found = [*model_dir.glob("*.safetensors"), *model_dir.glob("*.bin")]
    return int(sum(p.stat().st_size for p in found) * 1.1)
