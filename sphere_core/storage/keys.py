"""Identity of everything SPHERE stores: artifact keys, fingerprints, weights ids, code version.

One module decides when two computations are "the same": every content-addressed artifact
(``artifacts/<output>/<key>/``), the evaluation records and the "already trained" marker are
found by a key computed here, from the config sections that can change the result, the keys
or fingerprints of the inputs, and ``CODE_VERSION``. One hashing helper (``update_digest``)
reads files for every fingerprint.

* ``artifact_key(output, config, input_keys)``: SHA-256 of the canonical JSON of the four,
  first 16 hex characters. Every other key is an ``artifact_key`` of some config.
* ``input_fingerprint(path)``: the content of an input file (or a directory, by relative name).
* ``weights_id(path)``: the content id of a merged model written by an earlier round (base +
  adapter checksum, recorded by ``write_weights_record``); None for other model paths, which
  are keyed by their path. ``weights_fingerprint(spec)`` adds an adapter's content.
* ``ingest_key``, ``stage_keys`` (each stage's and the pairs' key), ``eval_key`` and
  ``training_key``: which config sections each output depends on.

**Code version.** ``CODE_VERSION`` is part of every key: bump it when a stage's output (or the
store's format) changes incompatibly, and every key changes with it. It is a constant, not a
hash of the source, so that a refactor that changes nothing keeps every cache valid. What it
cannot forget: ``KEYED_SOURCE`` records a hash of the code that computes keys (this module's
functions and each stage's ``artifact_config``, comments and docstrings ignored);
``tests/unit/test_keys.py`` fails when that code changes until ``KEYED_SOURCE`` is updated,
which is the moment to decide whether ``CODE_VERSION`` must change too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import IO, Any

from sphere_core.config import ModelSpec, SphereConfig
from sphere_core.errors import ArtifactError
from sphere_core.stages import stages_for

CODE_VERSION = "2"
"""Bump when a stage's output (or the store's format) changes incompatibly: every artifact
key changes with it. "2": shards carry check records and manifests carry per-shard SHA-256."""

KEYED_SOURCE = "2c19ec615b6e206e"
"""Hash of the key-computing code (see the module docstring); checked by tests/unit/test_keys.py."""

WEIGHTS_RECORD = "sphere_weights.json"
"""Written into a merged model dir: what the weights are (base + adapter checksum)."""

CHECKPOINT_SETTINGS = ("save_steps", "save_total_limit")
"""Training settings that decide when checkpoints are written, not what is learned."""

EVAL_ITEMS = "eval_items"
"""The output (artifact directory) of per-item evaluation records, keyed by ``eval_key``."""

_BLOCK = 1 << 22

# what changes neither the questions nor the answers (the statistics are computed from the items)
_NOT_IN_EVAL_KEY = ("benchmarks", "limit", "compare_base", "bootstrap_samples", "bootstrap_seed")


# -- hashing ---------------------------------------------------------------------------------
def update_digest(digest: Any, path: Path, sink: IO[bytes] | None = None) -> int:
    """Feed the bytes of ``path`` into ``digest`` (and ``sink``, if given); returns the count."""
    size = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
            size += len(block)
            if sink is not None:
                sink.write(block)
    return size


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    update_digest(digest, Path(path))
    return digest.hexdigest()


def json_default(value: Any) -> Any:
    """JSON fallback for config values: paths, dataclasses, sets, numpy scalars, pydantic models."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if hasattr(value, "model_dump"):  # pydantic models
        return value.model_dump(mode="json")
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


# -- keys --------------------------------------------------------------------------------------
def artifact_key(
    stage: str,
    stage_config: dict,
    input_keys: list[str] | tuple[str, ...],
    code_version: str = CODE_VERSION,
) -> str:
    """sha256 of (stage, stage config, ordered input keys, code version); first 16 hex chars."""
    payload = {
        "stage": stage,
        "config": stage_config,
        "inputs": [str(k) for k in input_keys],
        "code_version": str(code_version),
    }
    try:
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=json_default)
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"cannot hash the config of stage {stage!r}: {err}") from err
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def input_fingerprint(path: Path) -> str:
    """Content hash of an input file (or of every file under a directory, by relative name)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        update_digest(digest, file)
    return "file-" + digest.hexdigest()[:24]


def ingest_key(cfg: SphereConfig, fingerprint: str) -> str:
    """Key of the questions artifact: the data config, what decides rejections, the input."""
    d = cfg.to_dict()
    config = {
        "data": d["data"],
        "shard_size": d["orchestration"]["shard_size"],
        # prompts longer than the context are rejected at ingest with the policy tokenizer
        "tokenizer": d["models"]["policy"]["path"],
        "max_model_len": d["models"]["policy"]["max_model_len"],
        "max_step_tokens": d["search"]["max_step_tokens"],
    }
    return artifact_key("ingest", config, [fingerprint])


def stage_keys(cfg: SphereConfig, questions_key: str) -> tuple[dict[str, str], str]:
    """(stage name -> key of the selected stages in run order, the pairs key); pure.

    A stage's key hashes its ``artifact_config`` and its inputs (the questions, and the
    upstream stage it takes questions from); the pairs key hashes the pairs config and every
    stage key.
    """
    keys: dict[str, str] = {}
    for stage in stages_for(cfg.routing.stages):
        inputs = [questions_key] + ([keys[stage.consumes.stage]] if stage.consumes else [])
        keys[stage.name] = artifact_key(stage.name, stage.artifact_config(cfg), inputs)
    pairs_config = {"pairs": cfg.to_dict()["pairs"], "stages": list(keys)}
    return keys, artifact_key("pairs", pairs_config, [questions_key, *keys.values()])


def questions_fingerprint(questions: Any) -> str:
    """Content hash of a question frame (its id, problem and answer columns, as text)."""
    from pandas.util import hash_pandas_object  # pandas only when a frame is hashed

    cols = [c for c in ("question_id", "problem", "answer") if c in questions.columns]
    rows = hash_pandas_object(questions[cols].astype(str), index=False).values.tobytes()
    return "questions-" + hashlib.sha256(rows).hexdigest()[:24]


def eval_key(cfg: SphereConfig, spec: ModelSpec, benchmark: str, questions: Any) -> str | None:
    """Key of one model's evaluation on one question set; None when it must not be reused."""
    weights = weights_fingerprint(spec)
    if weights is None:
        return None
    d = cfg.to_dict()
    config = {
        "evaluation": {k: v for k, v in d["evaluation"].items() if k not in _NOT_IN_EVAL_KEY},
        "grading": {k: v for k, v in d["grading"].items() if k != "workers"},
        "model": spec.model_dump(mode="json"),
        # the second turn's context budget comes from the policy section
        "max_model_len": d["models"]["policy"]["max_model_len"],
        "benchmark": benchmark,
    }
    return artifact_key(EVAL_ITEMS, config, [*weights, questions_fingerprint(questions)])


def training_config(cfg: SphereConfig) -> dict[str, Any]:
    """``cfg.training`` as it decides the trained weights (the checkpoint schedule left out)."""
    return {k: v for k, v in cfg.to_dict()["training"].items() if k not in CHECKPOINT_SETTINGS}


def training_key(cfg: SphereConfig, pairs_key: str) -> str:
    """What decides a round's DPO result: the pairs, the training config and the policy weights."""
    policy = cfg.models.policy
    config = {
        "training": training_config(cfg),
        "policy": policy.model_dump(mode="json"),
        "weights": weights_id(policy.path),
    }
    return artifact_key("train", config, [pairs_key])


# -- weights -------------------------------------------------------------------------------------
def write_weights_record(merged_dir: Path, base: str, adapter_dir: Path) -> None:
    """Record what a merged model is made of (read by :func:`weights_id`)."""
    adapter = Path(adapter_dir) / "adapter_model.safetensors"
    record = {"base": base, "adapter_sha256": file_sha256(adapter) if adapter.is_file() else None}
    (Path(merged_dir) / WEIGHTS_RECORD).write_text(json.dumps(record, indent=2))


def weights_id(path: str) -> str | None:
    """Content id of a merged model dir (None for other model paths, which are keyed by path)."""
    record = Path(path).expanduser() / WEIGHTS_RECORD
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def weights_fingerprint(spec: ModelSpec) -> list[str] | None:
    """What identifies the weights behind ``spec`` beyond its fields; None when nothing can.

    Model paths are keyed as everywhere else (the spec's path, plus ``weights_id`` for a merged
    model of an earlier round); an adapter, rewritten in place by training, by its content. The
    weights behind a server URL (``base_url``) are unknown: None, and nothing is reused.
    """
    if spec.base_url:
        return None
    parts = [f"weights:{weights_id(spec.path)}"]
    if spec.adapter:
        parts.append(f"adapter:{input_fingerprint(Path(spec.adapter).expanduser())}")
    return parts
