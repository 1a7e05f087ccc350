"""Content-addressed Parquet artifact store, verified on every read.

Owns (with ``artifact_checks.py``, the layout, claims and verification, and
``shard_records.py``, the records and atomic writes): the on-disk layout under
``$SPHERE_HOME/artifacts/<stage>/<key>/``
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

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sphere_core.errors import ArtifactError
from sphere_core.schemas import SCHEMA_VERSION
from sphere_core.storage.artifact_checks import ArtifactFiles
from sphere_core.storage.keys import CODE_VERSION, json_default
from sphere_core.storage.shard_records import (
    CHECK_SUFFIX,
    MANIFEST,
    ArtifactCorruptError,
    ShardRecord,
    ShardState,
    Verdict,
    atomic_write,
    refuse_damaged,
    shard_index,
    to_pandas,
)

__all__ = ["MANIFEST", "ArtifactCorruptError", "ArtifactStore"]

logger = logging.getLogger(__name__)


class ArtifactStore(ArtifactFiles):
    """Shards of one stage output live under ``artifacts/<stage>/<key>/``.

    Safe to share between threads and processes (see the module docstring for the locks).
    """

    # -- writes -----------------------------------------------------------------------------
    def _write_check(self, path: Path, record: ShardRecord) -> None:
        body = {
            "file": path.name[: -len(CHECK_SUFFIX)],
            **record.as_dict(),
            "written_at": datetime.now(UTC).isoformat(),
        }
        atomic_write(path, json.dumps(body, indent=2, sort_keys=True).encode())

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
                    logger.info(
                        "artifact shard %s already exists and verifies; kept it "
                        "(the new content differs)",
                        final,
                    )
                return final
            self._write_check(self.check_path(stage, key, shard), record)
            atomic_write(final, data)
            if manifest is not None:
                self._update_manifest_record(stage, key, final.name, record)
        return final

    def replace_shard(
        self, stage: str, key: str, shard: int, df: pd.DataFrame, reason: str
    ) -> Path:
        """Replace a shard on purpose (the old one is moved aside, saying ``reason``), e.g. once
        the questions that ended in error were searched again; the manifest's record follows."""
        with self.claim(stage, key, shard):
            self._quarantine(stage, key, self.shard_path(stage, key, shard), reason)
            return self.write_shard(stage, key, shard, df)

    def discard(self, stage: str, key: str, reason: str) -> None:
        """Move a whole artifact (shards and manifest) aside so that it is computed again."""
        with self._manifest_lock(stage, key):
            for shard in self.list_shards(stage, key):
                self._quarantine(stage, key, self.shard_path(stage, key, shard), reason)
            self._quarantine(stage, key, self.manifest_path(stage, key), reason)

    def _update_manifest_record(self, stage: str, key: str, name: str, record: ShardRecord) -> None:
        with self._manifest_lock(stage, key):
            manifest, _ = self._parse_manifest(self.manifest_path(stage, key))
            if manifest is None or name not in manifest["files"]:
                return  # moved aside meanwhile: write_manifest rebuilds it from the shards
            manifest["files"][name] = record.as_dict()
            rows = dict(manifest.get("rows", {}))
            rows[name] = record.rows
            manifest.update(
                rows=rows, total_rows=sum(rows.values()), updated_at=datetime.now(UTC).isoformat()
            )
            self._write_manifest_file(stage, key, manifest)
        logger.warning(
            "artifact shard %s of complete artifact %s/%s was rewritten; updated its record in %s",
            name,
            stage,
            key,
            MANIFEST,
        )

    def _write_manifest_file(self, stage: str, key: str, manifest: dict) -> None:
        blob = json.dumps(manifest, indent=2, sort_keys=True, default=json_default).encode()
        atomic_write(self.manifest_path(stage, key), blob)

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
        refuse_damaged(
            verdicts, f"artifact {self.artifact_dir(stage, key)}: not writing {MANIFEST}: "
        )
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

    def _existing_manifest(
        self, stage: str, key: str, manifest: dict, meta: dict | None, expected_shards: int | None
    ) -> dict:
        names = sorted(manifest["files"])
        indices = [shard_index(n) for n in names]
        if expected_shards is not None and indices != list(range(expected_shards)):
            raise ArtifactError(
                f"artifact {stage}/{key} is complete with shards {names}; "
                f"expected shards 0..{expected_shards - 1}"
            )
        verdicts = [self._verify(stage, key, i, manifest) for i in indices]
        refuse_damaged(
            verdicts,
            f"artifact {self.artifact_dir(stage, key)} is complete but damaged: ",
            "; write the shard(s) again",
        )
        if any(v.manifest_damaged for v in verdicts):  # it was moved aside: write a fresh one
            return self.write_manifest(stage, key, meta, expected_shards=expected_shards)
        return manifest

    # -- reads ------------------------------------------------------------------------------
    def read_shard(self, stage: str, key: str, shard: int) -> pd.DataFrame:
        """One verified shard; ``ArtifactCorruptError`` (naming the file) when damaged."""
        manifest, _ = self._load_manifest(stage, key)
        verdict = self._verify(stage, key, shard, manifest)
        return self._frame(verdict)

    def _frame(self, verdict: Verdict) -> pd.DataFrame:
        if verdict.state is ShardState.ABSENT:
            raise ArtifactError(verdict.describe())
        if not verdict.ok:
            raise ArtifactCorruptError(verdict.describe() + "; run its stage again to recompute it")
        assert verdict.data is not None
        try:
            table = pq.read_table(pa.BufferReader(verdict.data))
        except Exception as err:  # a shard that matches its record always parses
            raise ArtifactError(f"cannot read artifact shard {verdict.path}: {err}") from err
        return to_pandas(table)

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
            shards = [shard_index(n) for n in sorted(manifest["files"])]
        else:
            shards = self.list_shards(stage, key)
            if not shards:
                raise ArtifactError(f"no artifact at {directory}")
        verdicts = [self._verify(stage, key, s, manifest) for s in shards]
        problems = [v.describe() for v in verdicts if not v.ok]
        problems += [
            f"{v.manifest_damaged}; moved {MANIFEST} aside" for v in verdicts if v.manifest_damaged
        ]
        if problems:
            raise ArtifactCorruptError(
                f"artifact {directory} is damaged: "
                + "; ".join(problems)
                + "; run its stage again to recompute what was moved aside"
            )
        frames = [self._frame(v) for v in verdicts]
        if not frames:
            return pd.DataFrame(columns=(manifest or {}).get("columns", []))
        return pd.concat(frames, ignore_index=True)
