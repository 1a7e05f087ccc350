"""vllm backend: without vLLM installed the factory names the install command."""

from __future__ import annotations

import importlib.util

import pytest

from sphere_core.backends.registry import lookup
from sphere_core.config import ModelSpec
from sphere_core.errors import BackendError


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_missing_vllm_names_install_command(tmp_path):
    factory = lookup("generator", "vllm")
    with pytest.raises(BackendError, match=r"pip install 'sphere-dpo\[gpu\]'"):
        factory(spec=ModelSpec(backend="vllm"), home=tmp_path)
