"""Device and precision choice for every model SPHERE loads (generation, PRMs, DPO, evaluation).

Owns only the decision ("which device, which dtype"); loading models is done by callers.
``auto`` means CUDA when a GPU is visible, else CPU; dtype ``auto`` means bf16 on a CUDA device
that supports it or on a CPU with native bf16 instructions (AVX512-BF16 / AMX / Arm BF16, where
bf16 matmuls run at about twice the float32 rate), else float32. Errors are
``ModelLoadError`` (a bad setting names itself).
"""

from __future__ import annotations

from typing import Literal

from sphere_core.errors import ModelLoadError

DTYPES = ("float32", "bfloat16", "float16")


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def pick_device(requested: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; explicit values are kept."""
    if requested in ("", "auto"):
        return "cuda" if cuda_available() else "cpu"
    if requested.startswith("cuda") and not cuda_available():
        raise ModelLoadError(f"device {requested!r} was requested but CUDA is not available")
    return requested


def use_bf16(setting: Literal["auto", "true", "false"] | str, device: str) -> bool:
    """``auto``: bf16 on a CUDA device that supports it (the paper trains in bf16), or on a CPU
    that computes bf16 natively (elsewhere bf16 is emulated and slower than float32)."""
    if setting == "false":
        return False
    if setting == "true":
        return True
    if device == "cpu":
        from sphere_core.backends.cpu_features import cpu_has_native_bf16

        return cpu_has_native_bf16()
    if not device.startswith("cuda"):
        return False
    import torch

    return bool(torch.cuda.is_bf16_supported())


def pick_dtype(name: str, device: str):
    """Model dtype from a ModelSpec ``dtype`` string (``auto``: see ``use_bf16``)."""
    import torch

    if name == "auto":
        return torch.bfloat16 if use_bf16("auto", device) else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            name
        ]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {name!r}; use auto | {' | '.join(DTYPES)}") from None
