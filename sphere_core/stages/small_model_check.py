"""Check that the diversity stage's pi_small is really smaller than the policy pi (paper §3.3.1).

Owns the comparison only: equal model specs, or parameter counts read from the
safetensors headers of two local HF directories (no weights are loaded).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from sphere_core.config import ModelSpec


def count_parameters(model_dir: Path) -> int | None:
    """Parameters in a local HF dir from its *.safetensors headers; None if there are none."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            n = 1
            for d in meta["shape"]:
                n *= int(d)
            total += n
    return total


def small_model_warning(policy: ModelSpec, small: ModelSpec, intended: bool = False) -> str | None:
    """A sentence when pi_small is not smaller than pi (None when it is, or cannot be told)."""
    if intended:
        return None
    if (small.path, small.backend, small.adapter) == (policy.path, policy.backend, policy.adapter):
        return (
            f"the diversity stage uses pi_small = the policy itself ({policy.path!r}); the paper "
            "asks for a smaller model of the same family (set models.small, or "
            "models.small_is_intended=true)."
        )
    p_dir, s_dir = Path(policy.path).expanduser(), Path(small.path).expanduser()
    if p_dir.is_dir() and s_dir.is_dir():
        n_p, n_s = count_parameters(p_dir), count_parameters(s_dir)
        if n_p is not None and n_s is not None and n_s >= n_p:
            return (
                f"pi_small ({small.path}, {n_s:,} parameters) is not smaller than the policy "
                f"({policy.path}, {n_p:,} parameters)."
            )
    return None
