"""Content-addressed Parquet artifact store (DESIGN §8).

Owns: artifact keys, the on-disk layout
``$SPHERE_HOME/artifacts/<stage>/<key>/part-<shard:05d>.parquet``, atomic shard writes
(temp file in the same directory + ``os.replace``), and ``_manifest.json``, written last,
which marks an artifact complete. Does not own: what a stage computes, the metadata
database (see ``repo.py``), or deciding when to recompute (a shard that exists is reused).

Nested columns (lists of dicts such as chat messages) are read back as plain Python
lists/dicts. Dicts in one column are stored as one Arrow struct, so a key missing from
some rows comes back as ``None`` there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sphere_core.errors import ArtifactError
from sphere_core.paths import artifacts_dir
from sphere_core.schemas import SCHEMA_VERSION

CODE_VERSION = "1"
"""Bump when a stage's output changes incompatibly: every artifact key changes with it."""

MANIFEST = "_manifest.json"
_SHARD_RE = re.compile(r"^part-(\d{5,})\.parquet$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _canonical(value: Any) -> Any:
    """JSON fallback for config values: paths, dataclasses, sets, numpy scalars."""
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


def artifact_key(
    stage: str,
    stage_config: dict,
    input_keys: Sequence[str],
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
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_canonical)
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"cannot hash the config of stage {stage!r}: {err}") from err
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ArtifactError(
            f"invalid artifact {kind} {value!r}: use letters, digits, '_', '-', '.' only"
        )
    return value


def _fsync_replace(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)
    try:  # make the rename durable; not supported everywhere
        fd = os.open(final.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas, with nested columns as Python lists/dicts (not numpy arrays)."""
    df = table.to_pandas()
    for i, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            df[field.name] = pd.Series(table.column(i).to_pylist(), index=df.index, dtype=object)
    return df


class ArtifactStore:
    """Shards of one stage output live under ``artifacts/<stage>/<key>/``."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.root = artifacts_dir(self.home)

    # -- layout -----------------------------------------------------------------------------
    def artifact_dir(self, stage: str, key: str) -> Path:
        return self.root / _check_name("stage", stage) / _check_name("key", key)

    def shard_path(self, stage: str, key: str, shard: int) -> Path:
        if not isinstance(shard, int) or isinstance(shard, bool) or shard < 0:
            raise ArtifactError(f"invalid shard index {shard!r} for {stage}/{key}: need an int >= 0")
        return self.artifact_dir(stage, key) / f"part-{shard:05d}.parquet"

    def manifest_path(self, stage: str, key: str) -> Path:
        return self.artifact_dir(stage, key) / MANIFEST

    def has_shard(self, stage: str, key: str, shard: int) -> bool:
        return self.shard_path(stage, key, shard).is_file()

    def list_shards(self, stage: str, key: str) -> list[int]:
        """Shard indices present on disk, ascending (temp files ignored)."""
        directory = self.artifact_dir(stage, key)
        if not directory.is_dir():
            return []
        found = (_SHARD_RE.match(p.name) for p in directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def is_complete(self, stage: str, key: str) -> bool:
        return self.manifest_path(stage, key).is_file()

    # -- writes -----------------------------------------------------------------------------
    def write_shard(self, stage: str, key: str, shard: int, df: pd.DataFrame) -> Path:
        """Write one shard atomically; a complete artifact (manifest present) is immutable."""
        final = self.shard_path(stage, key, shard)
        if self.is_complete(stage, key):
            raise ArtifactError(f"artifact {stage}/{key} is complete; refusing to rewrite {final}")
        try:
            table = pa.Table.from_pandas(df, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as err:
            raise ArtifactError(f"cannot convert shard {final} to Parquet: {err}") from err
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh)
                fh.flush()
                os.fsync(fh.fileno())
            _fsync_replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return final

    def write_manifest(
        self, stage: str, key: str, meta: dict | None = None, *, expected_shards: int | None = None
    ) -> dict:
        """Write ``_manifest.json`` from the shards on disk (call after the last shard).

        ``meta`` is stored alongside; the computed fields (rows, shards, total_rows, columns,
        schema_version, ...) take precedence. With ``expected_shards`` the shards on disk must
        be exactly ``0..expected_shards-1``.
        """
        shards = self.list_shards(stage, key)
        if expected_shards is not None and shards != list(range(expected_shards)):
            missing = sorted(set(range(expected_shards)) - set(shards))
            raise ArtifactError(
                f"artifact {stage}/{key}: expected shards 0..{expected_shards - 1}, "
                f"missing {[self.shard_path(stage, key, s).name for s in missing]}"
            )
        rows: dict[str, int] = {}
        columns: list[str] = list((meta or {}).get("columns", []))
        for shard in shards:
            path = self.shard_path(stage, key, shard)
            try:
                pf = pq.ParquetFile(path)
            except Exception as err:
                raise ArtifactError(f"cannot read artifact shard {path}: {err}") from err
            rows[path.name] = pf.metadata.num_rows
            if not columns:
                columns = list(pf.schema_arrow.names)
        manifest = {
            **(meta or {}),
            "stage": stage,
            "key": key,
            "code_version": CODE_VERSION,
            "schema_version": (meta or {}).get("schema_version", SCHEMA_VERSION),
            "shards": len(shards),
            "rows": rows,
            "total_rows": sum(rows.values()),
            "columns": columns,
            "created_at": datetime.now(UTC).isoformat(),
        }
        final = self.manifest_path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{MANIFEST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=_canonical))
            _fsync_replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return manifest

    # -- reads ------------------------------------------------------------------------------
    def read_manifest(self, stage: str, key: str) -> dict | None:
        path = self.manifest_path(stage, key)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ArtifactError(f"cannot read manifest {path}: {err}") from err

    def read_shard(self, stage: str, key: str, shard: int) -> pd.DataFrame:
        path = self.shard_path(stage, key, shard)
        if not path.is_file():
            raise ArtifactError(f"missing artifact shard {path}")
        try:
            table = pq.read_table(path)
        except Exception as err:
            raise ArtifactError(f"cannot read artifact shard {path}: {err}") from err
        return _to_pandas(table)

    def read_stage(self, stage: str, key: str, *, require_complete: bool = True) -> pd.DataFrame:
        """All shards concatenated in shard order, checked against the manifest.

        An artifact without a manifest is incomplete: it raises unless
        ``require_complete=False``, which reads whatever shards exist.
        """
        manifest = self.read_manifest(stage, key)
        directory = self.artifact_dir(stage, key)
        if manifest is None and require_complete:
            raise ArtifactError(
                f"artifact {directory} is incomplete (no {MANIFEST}); "
                "its stage has not finished writing"
            )
        shards = self.list_shards(stage, key)
        if manifest is not None:
            expected = manifest.get("rows", {})
            missing = sorted(set(expected) - {self.shard_path(stage, key, s).name for s in shards})
            if missing:
                raise ArtifactError(f"artifact {directory}: shard(s) {missing} listed in {MANIFEST} are missing")
        if not shards and manifest is None:
            raise ArtifactError(f"no artifact at {directory}")
        frames = []
        for shard in shards:
            df = self.read_shard(stage, key, shard)
            name = self.shard_path(stage, key, shard).name
            expected_rows = (manifest or {}).get("rows", {}).get(name)
            if expected_rows is not None and len(df) != expected_rows:
                raise ArtifactError(
                    f"artifact shard {directory / name} has {len(df)} rows; "
                    f"{MANIFEST} says {expected_rows}"
                )
            frames.append(df)
        if not frames:
            return pd.DataFrame(columns=(manifest or {}).get("columns", []))
        return pd.concat(frames, ignore_index=True)
