"""LoRA adapters on top of a model: recognising an adapter dir and merging it into weights.

A trained model is described by a ``ModelSpec`` whose ``path`` is the base weights and whose
``adapter`` is the LoRA adapter dir; every generator backend builds it through the registry
(``hf`` merges the adapter into its own copy of the weights with PEFT, in memory; ``vllm``
serves it as a LoRA request). Owns the PEFT calls; nothing here touches the process caches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sphere_core.errors import ModelLoadError

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path: str | Path | None) -> bool:
    return path is not None and (Path(path) / ADAPTER_CONFIG).is_file()


def check_adapter_dir(path: str | Path) -> Path:
    if not is_adapter_dir(path):
        raise ModelLoadError(f"{path} is not a LoRA adapter dir (no {ADAPTER_CONFIG}); train first")
    return Path(path)


def merge_lora(model: Any, adapter_dir: str | Path) -> Any:
    """``model`` with the LoRA adapter merged into its weights (``merge_and_unload``)."""
    from peft import PeftModel

    adapter_dir = check_adapter_dir(adapter_dir)
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise ModelLoadError(f"cannot load LoRA adapter {adapter_dir}: {err}") from err
    return peft_model.merge_and_unload().eval()


def adapter_base(adapter_dir: str | Path) -> str | None:
    """The base model path recorded in an adapter's config (informational)."""
    try:
        return json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text()).get(
            "base_model_name_or_path"
        )
    except (OSError, json.JSONDecodeError):
        return None


def lora_rank(adapter_dir: str | Path) -> int:
    """The LoRA rank ``r`` recorded in an adapter's config (servers size their slots by it)."""
    try:
        return int(json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text()).get("r", 8))
    except (OSError, ValueError, TypeError):
        return 8
