"""Which model an evaluation runs: a ``ModelSpec`` for the base policy, a merged model dir, or
the base plus a LoRA adapter, always built through the backend registry on the configured
backend (so a vLLM user's trained model is evaluated on vLLM, and a test double stays a test
double for both the base and the trained model).
"""

from __future__ import annotations

from pathlib import Path

from sphere_core.backends.adapters import check_adapter_dir, is_adapter_dir
from sphere_core.config import ModelSpec, SphereConfig


def model_spec(
    cfg: SphereConfig, model_path: str | Path | None = None, adapter_dir: str | Path | None = None
) -> ModelSpec:
    """The policy's spec with another weights path and/or an adapter.

    ``model_path`` may itself be an adapter dir: it is then applied on top of the policy.
    """
    spec = cfg.models.policy
    update: dict[str, str | None] = {}
    if model_path is not None and is_adapter_dir(model_path):
        adapter_dir, model_path = model_path, None
    if model_path is not None:
        update["path"] = str(model_path)
    if adapter_dir is not None:
        update["adapter"] = str(check_adapter_dir(adapter_dir))
    return spec.model_copy(update=update) if update else spec


def load_generator(spec: ModelSpec, home: Path):
    """The generator of ``spec`` from the process-wide cache (the registry builds it)."""
    from sphere_core.backends.cache import get_generator

    return get_generator(spec, home)
