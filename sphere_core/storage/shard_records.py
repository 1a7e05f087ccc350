"""The files of one artifact shard and what vouches for them: records, verdicts, atomic writes.

A shard ``part-<shard:05d>.parquet`` is vouched for by a ``ShardRecord`` (SHA-256, rows, bytes)
in its check record and, once the artifact is complete, in the manifest. ``ShardFile`` is the
shard as found on disk; ``Verdict`` is what the store concluded about it. The rules that
compare them live in ``artifact_checks.py``; the store (``artifacts.py``) writes and reads.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sphere_core.errors import ArtifactError

logger = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
CHECK_SUFFIX = ".check.json"
QUARANTINE = "_quarantine"
_ARTIFACT_LOCK = ".artifact.lock"
_MANIFEST_LOCK = ".manifest.lock"
SHARD_RE = re.compile(r"^part-(\d{5,})\.parquet$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactCorruptError(ArtifactError):
    """A shard or manifest failed verification; it was moved aside and must be recomputed."""


def check_name(kind: str, value: str) -> str:
    if (
        not isinstance(value, str)
        or not _NAME_RE.match(value)
        or (kind == "stage" and value == QUARANTINE)
    ):
        raise ArtifactError(
            f"invalid artifact {kind} {value!r}: use letters, digits, '_', '-', '.' only"
            + (f" (and not {QUARANTINE!r})" if value == QUARANTINE else "")
        )
    return value


def fsync_dir(directory: Path) -> None:
    try:  # make a rename durable; not supported everywhere
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(final: Path, data: bytes) -> None:
    """``data`` to ``final`` via a temp file in the same directory + fsync + rename."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas, with nested columns as Python lists/dicts (not numpy arrays)."""
    df = table.to_pandas()
    for i, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            df[field.name] = pd.Series(table.column(i).to_pylist(), index=df.index, dtype=object)
    return df


@dataclasses.dataclass(frozen=True)
class ShardRecord:
    """What a shard's bytes must hash to: SHA-256 (hex), row count, size in bytes."""

    sha256: str
    rows: int
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "rows": self.rows, "bytes": self.bytes}

    @classmethod
    def parse(cls, value: Any) -> ShardRecord | None:
        """A record from JSON, or None when it is not one."""
        if not isinstance(value, dict):
            return None
        sha, rows, size = value.get("sha256"), value.get("rows"), value.get("bytes")
        if not (isinstance(sha, str) and _HEX64.match(sha)):
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (rows, size)):
            return None
        return cls(sha, rows, size)


@dataclasses.dataclass
class ShardFile:
    """A shard file as found: its bytes, hash, size and (when it parses) row count."""

    data: bytes
    sha256: str
    bytes: int
    rows: int | None

    @classmethod
    def read(cls, path: Path) -> ShardFile | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            data = b""
        try:
            rows = pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows
        except Exception:  # noqa: BLE001 - any parse failure means "not a readable shard"
            rows = None
        return cls(data, hashlib.sha256(data).hexdigest(), len(data), rows)

    def mismatch(
        self, record: ShardRecord, source: str, manifest_rows: int | None = None
    ) -> str | None:
        """Why the file does not match ``record`` (from ``source``), or None when it does."""
        if self.bytes != record.bytes:
            return f"is {self.bytes} bytes; {source} says {record.bytes}"
        if self.sha256 != record.sha256:
            return f"has SHA-256 {self.sha256[:12]}...; {source} says {record.sha256[:12]}..."
        if self.rows is None:
            return "is not a readable Parquet file"
        for expected in (record.rows, manifest_rows):
            if expected is not None and self.rows != expected:
                return f"has {self.rows} rows; {source} says {expected}"
        return None


class ShardState(enum.Enum):
    OK = "ok"
    ABSENT = "absent"  # never written (or written by nobody yet)
    MISSING = "missing"  # listed in the manifest but not on disk
    DAMAGED = "damaged"


@dataclasses.dataclass
class Verdict:
    state: ShardState
    path: Path
    reason: str = ""
    data: bytes | None = None
    record: ShardRecord | None = None
    quarantined: list[Path] = dataclasses.field(default_factory=list)
    repair_check: bool = False  # the check record is damaged; the manifest vouches for the shard
    manifest_damaged: str = ""  # the manifest disagrees with a shard that matches its check record

    @property
    def ok(self) -> bool:
        return self.state is ShardState.OK

    def describe(self) -> str:
        if self.state is ShardState.MISSING:
            return f"artifact shard {self.path} listed in {MANIFEST} is missing"
        if self.state is ShardState.ABSENT:
            return f"missing artifact shard {self.path}"
        moved = f"; moved it aside to {self.quarantined[0]}" if self.quarantined else ""
        return f"cannot read artifact shard {self.path}: it {self.reason}{moved}"


def shard_index(name: str) -> int:
    match = SHARD_RE.match(name)
    if not match:
        raise ArtifactError(f"{name!r} is not a shard file name")
    return int(match.group(1))


def refuse_damaged(verdicts: list, prefix: str, suffix: str = "") -> None:
    """ArtifactCorruptError describing every shard whose verdict is not ok, if any."""
    bad = [v for v in verdicts if not v.ok]
    if bad:
        raise ArtifactCorruptError(prefix + "; ".join(v.describe() for v in bad) + suffix)
