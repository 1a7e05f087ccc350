"""Device and precision choice for training and evaluation: CUDA + bf16 when available.

Owns only the decision ("which device, which dtype"); loading models is done by callers.
"""

from __future__ import annotations

from typing import Literal

from sphere_core.errors import TrainingError


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def pick_device(requested: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; explicit values are kept."""
    if requested in ("", "auto"):
        return "cuda" if cuda_available() else "cpu"
    if requested.startswith("cuda") and not cuda_available():
        raise TrainingError(f"device {requested!r} was requested but CUDA is not available")
    return requested


def use_bf16(setting: Literal["auto", "true", "false"] | str, device: str) -> bool:
    """``auto``: bf16 only on a CUDA device that supports it (the paper trains in bf16)."""
    if setting == "false":
        return False
    if setting == "true":
        return True
    if not device.startswith("cuda"):
        return False
    import torch

    return bool(torch.cuda.is_bf16_supported())


def torch_dtype(name: str, device: str):
    """Model dtype from a ModelSpec ``dtype`` string (``auto``: bf16 on capable CUDA, else fp32)."""
    import torch

    if name == "auto":
        return torch.bfloat16 if use_bf16("auto", device) else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise TrainingError(f"unknown dtype {name!r}; use auto | float32 | bfloat16 | float16") from None
