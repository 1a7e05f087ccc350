"""Content-addressed Parquet artifact store, verified on every read.

Owns: the on-disk layout under ``$SPHERE_HOME/artifacts/<stage>/<key>/``
(``part-<shard:05d>.parquet`` shards, one ``part-<shard:05d>.parquet.check.json`` record per
shard with its SHA-256, row count and byte size, and ``_manifest.json``, written last, which
marks an artifact complete and collects the shard records); atomic writes (temp file in the
same directory + ``os.replace``); verification of every shard read or asked about; moving
damaged files aside to ``artifacts/_quarantine/<stage>/<key>/<name>.<utc-stamp>``; and the
inter-process claims (``claim``, ``claim_artifact``) that let concurrent runs share artifacts.
Does not own the keys (``keys.py``), what a stage computes, the metadata database
(``repo.py``), or when a stage runs.

Verification. A shard is good when its bytes match the record that vouches for it: the
manifest's record when the artifact is complete, else the shard's own check record. Where the
two records disagree, the one the bytes match wins: a damaged check record is rewritten from
the manifest, and a manifest that disagrees with a shard matching its own check record is
moved aside (the artifact is then incomplete until ``write_manifest`` runs again). Anything
else (no check record, bytes matching neither) makes the shard damaged: it and its check
record are moved aside (never deleted), a warning naming the file is logged, and the shard
counts as absent so the caller recomputes it. ``read_shard``/``read_stage`` raise
``ArtifactCorruptError`` (naming the file) instead of returning damaged data.

Concurrency. Writers of one shard are serialised by a per-shard lock file
(``.part-<shard:05d>.parquet.lock``, removed when released); the first verified shard wins
and later writes of it are no-ops (identical key = identical content). Lock order, outermost
first: ``claim_artifact`` -> ``claim`` (shard) -> the manifest lock; nothing is acquired while
the manifest lock is held. A shard's check record is written before the shard, so a reader
never sees a shard without its record.

Nested columns (lists of dicts such as chat messages) are read back as plain Python
lists/dicts. Dicts in one column are stored as one Arrow struct, so a key missing from
some rows comes back as ``None`` there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sphere_core.errors import ArtifactError
from sphere_core.locks import file_lock
from sphere_core.paths import artifacts_dir
from sphere_core.schemas import SCHEMA_VERSION
from sphere_core.storage.keys import CODE_VERSION, json_default

logger = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
CHECK_SUFFIX = ".check.json"
QUARANTINE = "_quarantine"
_ARTIFACT_LOCK = ".artifact.lock"
_MANIFEST_LOCK = ".manifest.lock"
_SHARD_RE = re.compile(r"^part-(\d{5,})\.parquet$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactCorruptError(ArtifactError):
    """A shard or manifest failed verification; it was moved aside and must be recomputed."""


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or (kind == "stage" and value == QUARANTINE):
        raise ArtifactError(
            f"invalid artifact {kind} {value!r}: use letters, digits, '_', '-', '.' only"
            + (f" (and not {QUARANTINE!r})" if value == QUARANTINE else "")
        )
    return value


def _fsync_dir(directory: Path) -> None:
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


def _atomic_write(final: Path, data: bytes) -> None:
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
    _fsync_dir(final.parent)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
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
class _Actual:
    """A shard file as found: its bytes, hash, size and (when it parses) row count."""

    data: bytes
    sha256: str
    bytes: int
    rows: int | None

    @classmethod
    def read(cls, path: Path) -> _Actual | None:
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

    def mismatch(self, record: ShardRecord, source: str, manifest_rows: int | None = None) -> str | None:
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


class _State(enum.Enum):
    OK = "ok"
    ABSENT = "absent"  # never written (or written by nobody yet)
    MISSING = "missing"  # listed in the manifest but not on disk
    DAMAGED = "damaged"


@dataclasses.dataclass
class _Verdict:
    state: _State
    path: Path
    reason: str = ""
    data: bytes | None = None
    record: ShardRecord | None = None
    quarantined: list[Path] = dataclasses.field(default_factory=list)
    repair_check: bool = False  # the check record is damaged; the manifest vouches for the shard
    manifest_damaged: str = ""  # the manifest disagrees with a shard that matches its check record

    @property
    def ok(self) -> bool:
        return self.state is _State.OK

    def describe(self) -> str:
        if self.state is _State.MISSING:
            return f"artifact shard {self.path} listed in {MANIFEST} is missing"
        if self.state is _State.ABSENT:
            return f"missing artifact shard {self.path}"
        moved = f"; moved it aside to {self.quarantined[0]}" if self.quarantined else ""
        return f"cannot read artifact shard {self.path}: it {self.reason}{moved}"


class ArtifactStore:
    """Shards of one stage output live under ``artifacts/<stage>/<key>/``.

    Safe to share between threads and processes (see the module docstring for the locks).
    """

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

    def check_path(self, stage: str, key: str, shard: int) -> Path:
        """The shard's check record (SHA-256, rows, bytes), written just before the shard."""
        path = self.shard_path(stage, key, shard)
        return path.with_name(path.name + CHECK_SUFFIX)

    def manifest_path(self, stage: str, key: str) -> Path:
        return self.artifact_dir(stage, key) / MANIFEST

    def quarantine_dir(self, stage: str, key: str) -> Path:
        return self.root / QUARANTINE / _check_name("stage", stage) / _check_name("key", key)

    def list_shards(self, stage: str, key: str) -> list[int]:
        """Shard indices whose files are present on disk, ascending (not verified)."""
        directory = self.artifact_dir(stage, key)
        if not directory.is_dir():
            return []
        found = (_SHARD_RE.match(p.name) for p in directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    # -- claims -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def claim(self, stage: str, key: str, shard: int) -> Iterator[Path]:
        """Hold the inter-process lock of one shard; yields the shard's path.

        Use as ``with store.claim(s, k, i): if not store.has_shard(s, k, i): compute; write``:
        a second process (or thread) claiming the same shard waits, then sees the first one's
        shard and computes nothing. Re-entrant within a thread.
        """
        path = self.shard_path(stage, key, shard)
        with file_lock(path.with_name(f".{path.name}.lock"), remove=True):
            yield path

    @contextlib.contextmanager
    def claim_artifact(self, stage: str, key: str) -> Iterator[Path]:
        """Hold the lock of a whole single-writer artifact (ingest, pairs); yields its directory.

        Take it before any ``claim`` of the same artifact, never inside one.
        """
        directory = self.artifact_dir(stage, key)
        with file_lock(directory / _ARTIFACT_LOCK, remove=True):
            yield directory

    def _manifest_lock(self, stage: str, key: str) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.artifact_dir(stage, key) / _MANIFEST_LOCK, remove=True)

    # -- quarantine -------------------------------------------------------------------------
    def _quarantine(self, stage: str, key: str, path: Path, reason: str) -> Path | None:
        """Move ``path`` aside (never delete it); returns where it went, None if it vanished."""
        if not path.exists():
            return None
        target_dir = self.quarantine_dir(stage, key)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = target_dir / f"{path.name}.{stamp}"
        n = 0
        while target.exists():
            n += 1
            target = target_dir / f"{path.name}.{stamp}-{n}"
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise ArtifactError(f"cannot move damaged {path} aside to {target}: {err}") from err
        logger.warning("artifact file %s %s; moved it aside to %s", path, reason, target)
        return target

    # -- manifest ---------------------------------------------------------------------------
    def _parse_manifest(self, path: Path) -> tuple[dict | None, str]:
        """(manifest, "") when valid; (None, why) when damaged; (None, "") when absent."""
        try:
            raw = path.read_text()
        except FileNotFoundError:
            return None, ""
        except (OSError, UnicodeDecodeError) as err:
            return None, f"cannot be read ({err})"
        try:
            manifest = json.loads(raw)
        except ValueError as err:
            return None, f"is not valid JSON ({err})"
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            return None, "has no per-shard records ('files')"
        for name, value in manifest["files"].items():
            if not _SHARD_RE.match(str(name)) or ShardRecord.parse(value) is None:
                return None, f"has an invalid record for {name!r}"
        if not isinstance(manifest.get("rows", {}), dict):
            return None, "has an invalid 'rows' field"
        return manifest, ""

    def _load_manifest(self, stage: str, key: str) -> tuple[dict | None, str]:
        """The valid manifest or None; a damaged one is moved aside and its problem returned."""
        path = self.manifest_path(stage, key)
        manifest, why = self._parse_manifest(path)
        if not why:
            return manifest, ""
        with self._manifest_lock(stage, key):
            manifest, why = self._parse_manifest(path)  # a writer may have replaced it
            if not why:
                return manifest, ""
            moved = self._quarantine(stage, key, path, why)
        where = f"; moved it aside to {moved}" if moved else ""
        return None, f"manifest {path} {why}{where}"

    def _quarantine_manifest(self, stage: str, key: str, manifest: dict, reason: str) -> Path | None:
        """Move the manifest aside if it is still the one judged wrong."""
        path = self.manifest_path(stage, key)
        with self._manifest_lock(stage, key):
            current, _ = self._parse_manifest(path)
            fields = ("created_at", "updated_at", "files", "rows")
            if current is None or any(current.get(f) != manifest.get(f) for f in fields):
                return None  # replaced meanwhile (or already moved aside)
            return self._quarantine(stage, key, path, reason)

    def read_manifest(self, stage: str, key: str) -> dict | None:
        """The manifest, or None when the artifact is incomplete (a damaged one is moved aside)."""
        return self._load_manifest(stage, key)[0]

    def is_complete(self, stage: str, key: str, *, verify: bool = False) -> bool:
        """True when a valid manifest exists; with ``verify`` also every listed shard verifies
        (damaged ones are moved aside, and the answer is then False)."""
        manifest, _ = self._load_manifest(stage, key)
        if manifest is None:
            return False
        if not verify:
            return True
        for name in sorted(manifest["files"]):
            verdict = self._verify(stage, key, _shard_index(name), manifest)
            if not verdict.ok or verdict.manifest_damaged:
                return False
        return True

    # -- verification -----------------------------------------------------------------------
    def _read_check(self, stage: str, key: str, shard: int) -> tuple[ShardRecord | None, bool]:
        """(record, exists): a check record that is present but unreadable gives (None, True)."""
        path = self.check_path(stage, key, shard)
        try:
            raw = path.read_text()
        except FileNotFoundError:
            return None, False
        except (OSError, UnicodeDecodeError):
            return None, True
        try:
            return ShardRecord.parse(json.loads(raw)), True
        except ValueError:
            return None, True

    def _judge(self, stage: str, key: str, shard: int, manifest: dict | None) -> _Verdict:
        """Compare a shard with its records; no side effects."""
        path = self.shard_path(stage, key, shard)
        listed = manifest is not None and path.name in manifest["files"]
        actual = _Actual.read(path)
        check, check_exists = self._read_check(stage, key, shard)
        if actual is None:
            return _Verdict(_State.MISSING if listed else _State.ABSENT, path)
        check_problem = (
            "has no check record" if not check_exists
            else "has an unreadable check record" if check is None
            else actual.mismatch(check, path.name + CHECK_SUFFIX)
        )
        if listed:
            assert manifest is not None
            record = ShardRecord.parse(manifest["files"][path.name])
            assert record is not None  # validated by _parse_manifest
            manifest_rows = manifest.get("rows", {}).get(path.name)
            problem = actual.mismatch(record, MANIFEST, manifest_rows)
            if problem is None:
                return _Verdict(_State.OK, path, data=actual.data, record=record,
                                repair_check=check_problem is not None, reason=check_problem or "")
            if check_problem is None:
                assert check is not None
                return _Verdict(_State.OK, path, data=actual.data, record=check,
                                manifest_damaged=f"shard {path} {problem}")
            return _Verdict(_State.DAMAGED, path, reason=problem)
        if check_problem is None:
            return _Verdict(_State.OK, path, data=actual.data, record=check)
        return _Verdict(_State.DAMAGED, path, reason=check_problem)

    def _verify(self, stage: str, key: str, shard: int, manifest: dict | None) -> _Verdict:
        """Judge a shard; repairs and moves aside happen under the shard lock, after a re-judge."""
        verdict = self._judge(stage, key, shard, manifest)
        if verdict.state is _State.MISSING:
            logger.warning("artifact shard %s listed in %s is missing; it will be recomputed",
                           verdict.path, self.manifest_path(stage, key))
        if not (verdict.state is _State.DAMAGED or verdict.repair_check or verdict.manifest_damaged):
            return verdict
        with self.claim(stage, key, shard):
            manifest, _ = self._load_manifest(stage, key)
            verdict = self._judge(stage, key, shard, manifest)
            check_path = self.check_path(stage, key, shard)
            if verdict.state is _State.DAMAGED:
                reasons = {verdict.path: verdict.reason,
                           check_path: f"belongs to the damaged shard {verdict.path.name}"}
                for path, reason in reasons.items():
                    moved = self._quarantine(stage, key, path, reason)
                    if moved is not None:
                        verdict.quarantined.append(moved)
                verdict.data = None
            elif verdict.repair_check:
                self._quarantine(stage, key, check_path, f"is damaged (the shard {verdict.reason}); "
                                 f"rewriting it from {MANIFEST}")
                assert verdict.record is not None
                self._write_check(check_path, verdict.record)
            elif verdict.manifest_damaged and manifest is not None:
                self._quarantine_manifest(stage, key, manifest, f"disagrees with {verdict.manifest_damaged}")
        return verdict

    def has_shard(self, stage: str, key: str, shard: int) -> bool:
        """True when the shard exists and verifies; a damaged one is moved aside (False)."""
        manifest, _ = self._load_manifest(stage, key)
        return self._verify(stage, key, shard, manifest).ok

    # -- writes -----------------------------------------------------------------------------
    def _write_check(self, path: Path, record: ShardRecord) -> None:
        body = {"file": path.name[: -len(CHECK_SUFFIX)], **record.as_dict(),
                "written_at": datetime.now(UTC).isoformat()}
        _atomic_write(path, json.dumps(body, indent=2, sort_keys=True).encode())

    def write_shard(self, stage: str, key: str, shard: int, df: pd.DataFrame) -> Path:
        """Write one shard atomically (check record first, then the shard); returns its path.

        When a verified shard is already there (another run with the same key, or a retry),
        it is kept and its path returned: identical key = identical content. A complete
        artifact takes no new shards, but a listed shard that is missing or damaged may be
        written again; the manifest's record of it is then updated.
        """
        final = self.shard_path(stage, key, shard)
        try:
            table = pa.Table.from_pandas(df, preserve_index=False)
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
        except (pa.ArrowException, TypeError, ValueError) as err:
            raise ArtifactError(f"cannot convert shard {final} to Parquet: {err}") from err
        data = sink.getvalue().to_pybytes()
        record = ShardRecord(hashlib.sha256(data).hexdigest(), table.num_rows, len(data))
        with self.claim(stage, key, shard):
            manifest, _ = self._load_manifest(stage, key)
            if manifest is not None and final.name not in manifest["files"]:
                raise ArtifactError(
                    f"artifact {stage}/{key} is complete; refusing to add {final} "
                    f"(not one of its {len(manifest['files'])} shard(s))"
                )
            existing = self._verify(stage, key, shard, manifest)
            if existing.ok:
                if existing.record is not None and existing.record.sha256 != record.sha256:
                    logger.info("artifact shard %s already exists and verifies; kept it "
                                "(the new content differs)", final)
                return final
            self._write_check(self.check_path(stage, key, shard), record)
            _atomic_write(final, data)
            if manifest is not None:
                self._update_manifest_record(stage, key, final.name, record)
        return final

    def _update_manifest_record(self, stage: str, key: str, name: str, record: ShardRecord) -> None:
        with self._manifest_lock(stage, key):
            manifest, _ = self._parse_manifest(self.manifest_path(stage, key))
            if manifest is None or name not in manifest["files"]:
                return  # moved aside meanwhile: write_manifest rebuilds it from the shards
            manifest["files"][name] = record.as_dict()
            rows = dict(manifest.get("rows", {}))
            rows[name] = record.rows
            manifest.update(rows=rows, total_rows=sum(rows.values()),
                            updated_at=datetime.now(UTC).isoformat())
            self._write_manifest_file(stage, key, manifest)
        logger.warning("artifact shard %s of complete artifact %s/%s was rewritten; "
                       "updated its record in %s", name, stage, key, MANIFEST)

    def _write_manifest_file(self, stage: str, key: str, manifest: dict) -> None:
        blob = json.dumps(manifest, indent=2, sort_keys=True, default=json_default).encode()
        _atomic_write(self.manifest_path(stage, key), blob)

    def write_manifest(
        self, stage: str, key: str, meta: dict | None = None, *, expected_shards: int | None = None
    ) -> dict:
        """Verify the shards on disk and write ``_manifest.json`` (call after the last shard).

        ``meta`` is stored alongside; the computed fields (rows, files, shards, total_rows,
        columns, schema_version, ...) take precedence. With ``expected_shards`` the shards on
        disk must be exactly ``0..expected_shards-1``. When the artifact is already complete
        (another process finished first, or a retry) and its shards verify, the existing
        manifest is returned unchanged. A damaged shard is moved aside and raises
        ``ArtifactCorruptError``: write it again, then call this again.
        """
        existing, _ = self._load_manifest(stage, key)
        if existing is not None:
            return self._existing_manifest(stage, key, existing, meta, expected_shards)
        shards = self.list_shards(stage, key)
        if expected_shards is not None and shards != list(range(expected_shards)):
            missing = sorted(set(range(expected_shards)) - set(shards))
            raise ArtifactError(
                f"artifact {stage}/{key}: expected shards 0..{expected_shards - 1}, "
                f"missing {[self.shard_path(stage, key, s).name for s in missing]}"
            )
        verdicts = [self._verify(stage, key, s, None) for s in shards]
        _refuse_damaged(verdicts, f"artifact {self.artifact_dir(stage, key)}: not writing {MANIFEST}: ")
        files: dict[str, dict] = {}
        rows: dict[str, int] = {}
        columns: list[str] = list((meta or {}).get("columns", []))
        for verdict in verdicts:
            assert verdict.record is not None and verdict.data is not None
            files[verdict.path.name] = verdict.record.as_dict()
            rows[verdict.path.name] = verdict.record.rows
            if not columns:
                columns = list(pq.ParquetFile(pa.BufferReader(verdict.data)).schema_arrow.names)
        manifest = {
            **(meta or {}),
            "stage": stage,
            "key": key,
            "code_version": CODE_VERSION,
            "schema_version": (meta or {}).get("schema_version", SCHEMA_VERSION),
            "shards": len(shards),
            "files": files,
            "rows": rows,
            "total_rows": sum(rows.values()),
            "columns": columns,
            "created_at": datetime.now(UTC).isoformat(),
        }
        manifest = json.loads(json.dumps(manifest, default=json_default))
        with self._manifest_lock(stage, key):
            current, _ = self._parse_manifest(self.manifest_path(stage, key))
            if current is not None:  # another process sealed it while we verified
                return current
            self._write_manifest_file(stage, key, manifest)
        return manifest

    def _existing_manifest(self, stage: str, key: str, manifest: dict, meta: dict | None,
                           expected_shards: int | None) -> dict:
        names = sorted(manifest["files"])
        indices = [_shard_index(n) for n in names]
        if expected_shards is not None and indices != list(range(expected_shards)):
            raise ArtifactError(
                f"artifact {stage}/{key} is complete with shards {names}; "
                f"expected shards 0..{expected_shards - 1}"
            )
        verdicts = [self._verify(stage, key, i, manifest) for i in indices]
        _refuse_damaged(verdicts, f"artifact {self.artifact_dir(stage, key)} is complete but damaged: ",
                        "; write the shard(s) again")
        if any(v.manifest_damaged for v in verdicts):  # it was moved aside: write a fresh one
            return self.write_manifest(stage, key, meta, expected_shards=expected_shards)
        return manifest

    # -- reads ------------------------------------------------------------------------------
    def read_shard(self, stage: str, key: str, shard: int) -> pd.DataFrame:
        """One verified shard; ``ArtifactCorruptError`` (naming the file) when damaged."""
        manifest, _ = self._load_manifest(stage, key)
        verdict = self._verify(stage, key, shard, manifest)
        return self._frame(verdict)

    def _frame(self, verdict: _Verdict) -> pd.DataFrame:
        if verdict.state is _State.ABSENT:
            raise ArtifactError(verdict.describe())
        if not verdict.ok:
            raise ArtifactCorruptError(verdict.describe() + "; run its stage again to recompute it")
        assert verdict.data is not None
        try:
            table = pq.read_table(pa.BufferReader(verdict.data))
        except Exception as err:  # a shard that matches its record always parses
            raise ArtifactError(f"cannot read artifact shard {verdict.path}: {err}") from err
        return _to_pandas(table)

    def read_stage(self, stage: str, key: str, *, require_complete: bool = True) -> pd.DataFrame:
        """All shards concatenated in shard order, each verified.

        A complete artifact reads exactly the shards its manifest lists. Without a manifest
        the artifact is incomplete: it raises unless ``require_complete=False``, which reads
        whatever shards exist. Damaged shards (all of them, in one pass) are moved aside and
        raise ``ArtifactCorruptError`` naming them; so does a damaged manifest.
        """
        manifest, manifest_problem = self._load_manifest(stage, key)
        directory = self.artifact_dir(stage, key)
        if manifest is None and manifest_problem and require_complete:
            raise ArtifactCorruptError(
                f"cannot read artifact {directory}: {manifest_problem}; "
                "its stage must run again to write it"
            )
        if manifest is None and require_complete:
            raise ArtifactError(
                f"artifact {directory} is incomplete (no {MANIFEST}); "
                "its stage has not finished writing"
            )
        if manifest is not None:
            shards = [_shard_index(n) for n in sorted(manifest["files"])]
        else:
            shards = self.list_shards(stage, key)
            if not shards:
                raise ArtifactError(f"no artifact at {directory}")
        verdicts = [self._verify(stage, key, s, manifest) for s in shards]
        problems = [v.describe() for v in verdicts if not v.ok]
        problems += [f"{v.manifest_damaged}; moved {MANIFEST} aside" for v in verdicts if v.manifest_damaged]
        if problems:
            raise ArtifactCorruptError(
                f"artifact {directory} is damaged: " + "; ".join(problems)
                + "; run its stage again to recompute what was moved aside"
            )
        frames = [self._frame(v) for v in verdicts]
        if not frames:
            return pd.DataFrame(columns=(manifest or {}).get("columns", []))
        return pd.concat(frames, ignore_index=True)


def _shard_index(name: str) -> int:
    match = _SHARD_RE.match(name)
    if not match:
        raise ArtifactError(f"{name!r} is not a shard file name")
    return int(match.group(1))


def _refuse_damaged(verdicts: list, prefix: str, suffix: str = "") -> None:
    """ArtifactCorruptError describing every shard whose verdict is not ok, if any."""
    bad = [v for v in verdicts if not v.ok]
    if bad:
        raise ArtifactCorruptError(prefix + "; ".join(v.describe() for v in bad) + suffix)
