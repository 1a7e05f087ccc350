"""The generator a model is evaluated with: the base policy, a merged model dir, or
base + LoRA adapter merged in memory.

Owns the "which weights" decision for evaluation. The base model goes through the backend
cache (``get_generator``, so the configured backend — hf, vllm, server — is used). A LoRA
adapter is merged into a *fresh* ``HFGenerator``'s own copy of the base weights with PEFT's
``merge_and_unload`` (no disk round trip); the cached base generator is never modified.
"""

from __future__ import annotations

import json
from pathlib import Path

from sphere_core.config import SphereConfig
from sphere_core.errors import EvaluationError

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def load_generator(cfg: SphereConfig, model_path: str, adapter_dir: Path | None, home: Path):
    """Generator for ``model_path`` (``embedded``/dir/.gguf), with ``adapter_dir`` merged if given."""
    from sphere_core.backends.cache import get_generator

    spec = cfg.models.policy.model_copy(update={"path": str(model_path)})
    if adapter_dir is None:
        return get_generator(spec, home)
    adapter_dir = Path(adapter_dir)
    if not is_adapter_dir(adapter_dir):
        raise EvaluationError(f"{adapter_dir} is not a LoRA adapter dir (no {ADAPTER_CONFIG}); train first")
    return merged_generator(spec, adapter_dir, home)


_MERGED: dict[tuple[str, str, float], object] = {}
"""Process-wide cache of merged generators: (spec json, adapter dir, adapter mtime) -> generator."""


def clear_merged_cache() -> None:
    _MERGED.clear()


def merged_generator(spec, adapter_dir: Path, home: Path):
    """A private HFGenerator on ``spec``'s weights with the adapter merged in (cached per process)."""
    weights = adapter_dir / "adapter_model.safetensors"
    key = (spec.model_dump_json(), str(adapter_dir.resolve()), weights.stat().st_mtime if weights.exists() else 0.0)
    if key not in _MERGED:
        _MERGED.clear()  # one merged model at a time: they are large
        _MERGED[key] = _merge(spec, adapter_dir, home)
    return _MERGED[key]


def _merge(spec, adapter_dir: Path, home: Path):
    from peft import PeftModel

    from sphere_core.backends.hf import HFGenerator

    generator = HFGenerator.from_spec(spec, home)  # its own copy, not the cached instance
    try:
        peft_model = PeftModel.from_pretrained(generator.model, str(adapter_dir))
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise EvaluationError(f"cannot load LoRA adapter {adapter_dir} onto {spec.path}: {err}") from err
    generator.model = peft_model.merge_and_unload().eval()
    return generator


def adapter_base(adapter_dir: Path) -> str | None:
    """The base model path recorded in an adapter's config (informational)."""
    try:
        return json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError):
        return None
