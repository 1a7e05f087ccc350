"""Whether this CPU computes bfloat16 natively (x86 AVX512-BF16 / AMX-BF16, Arm BF16).

On such CPUs a bf16 model runs the matrix products at roughly twice the fp32 rate and reads
half the weight bytes per decoded token (figures in docs/performance.md); without them bf16
is emulated and usually slower than fp32. Owns the detection only; which dtype a model gets
is decided by ``sphere_core.devices.pick_dtype``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16", "sve_bf16"})
"""Capability names (torch.cpu.get_capabilities keys, /proc/cpuinfo flags) meaning native bf16."""


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 arithmetic instructions (not just bf16 storage)."""
    try:
        import torch

        caps = torch.cpu.get_capabilities()
        return any(bool(caps.get(flag)) for flag in NATIVE_BF16_FLAGS)
    except (ImportError, AttributeError, RuntimeError):
        pass
    try:  # older torch: read the kernel's flag list (Linux)
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return bool(NATIVE_BF16_FLAGS & set(value.split()))
    return False
