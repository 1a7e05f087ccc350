"""Layout, claims, quarantine and verification of the artifact store's files.

``ArtifactFiles`` knows where an artifact's files are (``artifacts/<stage>/<key>/``), holds
the inter-process claims, parses manifests and check records, and judges every shard against
the records that vouch for it (the rules are in ``artifacts.py``'s module docstring): a
damaged file is moved aside to ``artifacts/_quarantine/`` (never deleted). ``ArtifactStore``
(``artifacts.py``) adds writes and reads on top.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sphere_core.errors import ArtifactError
from sphere_core.locks import file_lock
from sphere_core.paths import artifacts_dir
from sphere_core.storage.shard_records import (
    _ARTIFACT_LOCK,
    _MANIFEST_LOCK,
    CHECK_SUFFIX,
    MANIFEST,
    QUARANTINE,
    SHARD_RE,
    ShardFile,
    ShardRecord,
    ShardState,
    Verdict,
    check_name,
    shard_index,
)

logger = logging.getLogger("sphere_core.storage.artifacts")


class ArtifactFiles:
    """Where the files of an artifact are, who holds them, and whether they verify."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.root = artifacts_dir(self.home)

    # -- layout -----------------------------------------------------------------------------
    def artifact_dir(self, stage: str, key: str) -> Path:
        return self.root / check_name("stage", stage) / check_name("key", key)

    def shard_path(self, stage: str, key: str, shard: int) -> Path:
        if not isinstance(shard, int) or isinstance(shard, bool) or shard < 0:
            raise ArtifactError(
                f"invalid shard index {shard!r} for {stage}/{key}: need an int >= 0"
            )
        return self.artifact_dir(stage, key) / f"part-{shard:05d}.parquet"

    def check_path(self, stage: str, key: str, shard: int) -> Path:
        """The shard's check record (SHA-256, rows, bytes), written just before the shard."""
        path = self.shard_path(stage, key, shard)
        return path.with_name(path.name + CHECK_SUFFIX)

    def manifest_path(self, stage: str, key: str) -> Path:
        return self.artifact_dir(stage, key) / MANIFEST

    def quarantine_dir(self, stage: str, key: str) -> Path:
        return self.root / QUARANTINE / check_name("stage", stage) / check_name("key", key)

    def list_shards(self, stage: str, key: str) -> list[int]:
        """Shard indices whose files are present on disk, ascending (not verified)."""
        directory = self.artifact_dir(stage, key)
        if not directory.is_dir():
            return []
        found = (SHARD_RE.match(p.name) for p in directory.iterdir())
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
            if not SHARD_RE.match(str(name)) or ShardRecord.parse(value) is None:
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

    def _quarantine_manifest(
        self, stage: str, key: str, manifest: dict, reason: str
    ) -> Path | None:
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
            verdict = self._verify(stage, key, shard_index(name), manifest)
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

    def _judge(self, stage: str, key: str, shard: int, manifest: dict | None) -> Verdict:
        """Compare a shard with its records; no side effects."""
        path = self.shard_path(stage, key, shard)
        listed = manifest is not None and path.name in manifest["files"]
        actual = ShardFile.read(path)
        check, check_exists = self._read_check(stage, key, shard)
        if actual is None:
            return Verdict(ShardState.MISSING if listed else ShardState.ABSENT, path)
        check_problem = (
            "has no check record"
            if not check_exists
            else "has an unreadable check record"
            if check is None
            else actual.mismatch(check, path.name + CHECK_SUFFIX)
        )
        if listed:
            assert manifest is not None
            record = ShardRecord.parse(manifest["files"][path.name])
            assert record is not None  # validated by _parse_manifest
            manifest_rows = manifest.get("rows", {}).get(path.name)
            problem = actual.mismatch(record, MANIFEST, manifest_rows)
            if problem is None:
                return Verdict(
                    ShardState.OK,
                    path,
                    data=actual.data,
                    record=record,
                    repair_check=check_problem is not None,
                    reason=check_problem or "",
                )
            if check_problem is None:
                assert check is not None
                return Verdict(
                    ShardState.OK,
                    path,
                    data=actual.data,
                    record=check,
                    manifest_damaged=f"shard {path} {problem}",
                )
            return Verdict(ShardState.DAMAGED, path, reason=problem)
        if check_problem is None:
            return Verdict(ShardState.OK, path, data=actual.data, record=check)
        return Verdict(ShardState.DAMAGED, path, reason=check_problem)

    def _verify(self, stage: str, key: str, shard: int, manifest: dict | None) -> Verdict:
        """Judge a shard; repairs and moves aside happen under the shard lock, after a re-judge."""
        verdict = self._judge(stage, key, shard, manifest)
        if verdict.state is ShardState.MISSING:
            logger.warning(
                "artifact shard %s listed in %s is missing; it will be recomputed",
                verdict.path,
                self.manifest_path(stage, key),
            )
        if not (
            verdict.state is ShardState.DAMAGED or verdict.repair_check or verdict.manifest_damaged
        ):
            return verdict
        with self.claim(stage, key, shard):
            manifest, _ = self._load_manifest(stage, key)
            verdict = self._judge(stage, key, shard, manifest)
            check_path = self.check_path(stage, key, shard)
            if verdict.state is ShardState.DAMAGED:
                reasons = {
                    verdict.path: verdict.reason,
                    check_path: f"belongs to the damaged shard {verdict.path.name}",
                }
                for path, reason in reasons.items():
                    moved = self._quarantine(stage, key, path, reason)
                    if moved is not None:
                        verdict.quarantined.append(moved)
                verdict.data = None
            elif verdict.repair_check:
                self._quarantine(
                    stage,
                    key,
                    check_path,
                    f"is damaged (the shard {verdict.reason}); rewriting it from {MANIFEST}",
                )
                assert verdict.record is not None
                self._write_check(check_path, verdict.record)
            elif verdict.manifest_damaged and manifest is not None:
                self._quarantine_manifest(
                    stage, key, manifest, f"disagrees with {verdict.manifest_damaged}"
                )
        return verdict

    def has_shard(self, stage: str, key: str, shard: int) -> bool:
        """True when the shard exists and verifies; a damaged one is moved aside (False)."""
        manifest, _ = self._load_manifest(stage, key)
        return self._verify(stage, key, shard, manifest).ok
