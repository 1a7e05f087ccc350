"""Artifact verification: truncated, deleted, bit-flipped shards, damaged check records and
damaged manifests are detected, moved aside (never deleted) and recomputed; a run goes on."""

from __future__ import annotations

import json
import logging
import os
import re

import pandas as pd
import pyarrow.parquet as pq
import pytest

from sphere_core.errors import ArtifactError
from sphere_core.storage.artifacts import MANIFEST, ArtifactCorruptError, ArtifactStore

STAMP = r"\d{8}T\d{6}\.\d{6}Z"
MARKER = "sphere-marker-ABCDEFGHIJKLMNOP"


def frame(shard: int, n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "question_id": [f"q{shard}-{i}" for i in range(n)],
            "text": [f"{MARKER}-{shard}-{i}" for i in range(n)],
            "reward": [0.25 * i for i in range(n)],
        }
    )


def sealed(tmp_path, shards: int = 2) -> ArtifactStore:
    store = ArtifactStore(tmp_path)
    for s in range(shards):
        store.write_shard("stage1", "k", s, frame(s))
    store.write_manifest("stage1", "k", {"note": "x"}, expected_shards=shards)
    return store


def quarantined(store: ArtifactStore) -> list[str]:
    directory = store.quarantine_dir("stage1", "k")
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def warned(caplog, path) -> bool:
    return any(str(path) in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_write_records_checksums_in_check_record_and_manifest(tmp_path):
    store = sealed(tmp_path)
    path = store.shard_path("stage1", "k", 0)
    check = json.loads(store.check_path("stage1", "k", 0).read_text())
    data = path.read_bytes()
    import hashlib

    assert check["sha256"] == hashlib.sha256(data).hexdigest()
    assert (check["rows"], check["bytes"], check["file"]) == (3, len(data), path.name)
    manifest = store.read_manifest("stage1", "k")
    assert manifest["files"][path.name] == {k: check[k] for k in ("sha256", "rows", "bytes")}
    assert manifest["rows"] == {"part-00000.parquet": 3, "part-00001.parquet": 3}
    assert store.is_complete("stage1", "k", verify=True)


@pytest.mark.parametrize("complete", [False, True], ids=["incomplete", "complete"])
def test_truncated_shard_is_moved_aside_and_recomputed(tmp_path, caplog, complete):
    store = sealed(tmp_path) if complete else ArtifactStore(tmp_path)
    if not complete:
        store.write_shard("stage1", "k", 0, frame(0))
    path = store.shard_path("stage1", "k", 0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert not store.has_shard("stage1", "k", 0)
    assert not path.exists() and warned(caplog, path)
    names = quarantined(store)
    assert len(names) == 2 and re.fullmatch(rf"part-00000\.parquet\.{STAMP}", names[0])
    assert re.fullmatch(rf"part-00000\.parquet\.check\.json\.{STAMP}", names[1])
    moved = store.quarantine_dir("stage1", "k") / names[0]
    assert moved.read_bytes() == data[: len(data) // 2]  # kept for inspection
    # the run goes on: the shard is written again (a complete artifact allows it)
    store.write_shard("stage1", "k", 0, frame(0, n=4))
    assert store.has_shard("stage1", "k", 0)
    if complete:
        manifest = store.read_manifest("stage1", "k")
        assert manifest["rows"]["part-00000.parquet"] == 4 and manifest["total_rows"] == 7
        assert manifest["files"]["part-00000.parquet"]["bytes"] == path.stat().st_size
        assert manifest["note"] == "x"
        assert len(store.read_stage("stage1", "k")) == 7


def test_deleted_shard_of_complete_artifact_is_recomputed_and_manifest_updated(tmp_path, caplog):
    store = sealed(tmp_path)
    path = store.shard_path("stage1", "k", 1)
    path.unlink()
    with pytest.raises(
        ArtifactCorruptError, match=r"part-00001\.parquet listed in _manifest\.json is missing"
    ):
        store.read_stage("stage1", "k")
    assert not store.has_shard("stage1", "k", 1) and warned(caplog, path)
    assert store.has_shard("stage1", "k", 0)  # the others are untouched
    store.write_shard("stage1", "k", 1, frame(1))  # the recomputed shard is kept, not thrown away
    assert store.read_stage("stage1", "k")["question_id"].tolist()[-1] == "q1-2"
    assert store.write_manifest("stage1", "k", expected_shards=2)["files"]["part-00001.parquet"]


def test_flipped_byte_in_a_shard_that_still_parses(tmp_path, caplog):
    store = ArtifactStore(tmp_path)
    texts = ["alpha bravo charlie", "delta echo foxtrot", "golf hotel india"]
    store.write_shard("stage1", "k", 0, pd.DataFrame({"text": texts}))
    store.write_manifest("stage1", "k", expected_shards=1)
    path = store.shard_path("stage1", "k", 0)
    original = path.read_bytes()
    at = -1
    while (at := original.find(b"delta echo", at + 1)) >= 0:  # the copy the reader decodes
        data = bytearray(original)
        data[at] ^= 0x01  # 'd' -> 'e'
        path.write_bytes(bytes(data))
        if pq.read_table(path).column("text").to_pylist()[1] == "eelta echo foxtrot":
            break  # still a valid Parquet file, serving different data
    else:
        pytest.fail("no data copy of the value found in the shard")
    with pytest.raises(
        ArtifactCorruptError,
        match=f"cannot read artifact shard {re.escape(str(path))}: it has SHA-256",
    ):
        store.read_shard("stage1", "k", 0)
    assert not path.exists() and warned(caplog, path)
    assert len(quarantined(store)) == 2
    with pytest.raises(ArtifactCorruptError, match="listed in _manifest.json is missing"):
        store.read_stage("stage1", "k")


def test_read_stage_reports_every_damaged_shard_at_once(tmp_path):
    store = sealed(tmp_path, shards=3)
    for s in (0, 2):
        store.shard_path("stage1", "k", s).write_bytes(b"garbage")
    with pytest.raises(ArtifactCorruptError) as info:
        store.read_stage("stage1", "k")
    message = str(info.value)
    assert "part-00000.parquet" in message and "part-00002.parquet" in message
    assert "part-00001.parquet" not in message and "\n" not in message
    assert store.list_shards("stage1", "k") == [1]
    assert not store.is_complete("stage1", "k", verify=True)


def test_damaged_check_record_of_complete_artifact_is_rewritten_from_manifest(tmp_path, caplog):
    store = sealed(tmp_path)
    check = store.check_path("stage1", "k", 0)
    good = json.loads(check.read_text())
    check.write_text('{"sha256": "tru')
    assert store.read_stage("stage1", "k")["question_id"].tolist()[:3] == ["q0-0", "q0-1", "q0-2"]
    repaired = json.loads(check.read_text())
    assert {k: repaired[k] for k in ("sha256", "rows", "bytes")} == {
        k: good[k] for k in ("sha256", "rows", "bytes")
    }
    assert warned(caplog, check)
    assert quarantined(store) and all(
        n.startswith("part-00000.parquet.check.json.") for n in quarantined(store)
    )
    assert store.shard_path("stage1", "k", 0).is_file()


@pytest.mark.parametrize("damage", ["garbage", "wrong-record", "deleted"])
def test_damaged_check_record_of_incomplete_artifact_means_recompute(tmp_path, caplog, damage):
    store = ArtifactStore(tmp_path)
    store.write_shard("stage1", "k", 0, frame(0))
    store.write_shard("stage1", "k", 1, frame(1))
    check = store.check_path("stage1", "k", 0)
    if damage == "garbage":
        check.write_bytes(b"\x00\xff not json")
    elif damage == "wrong-record":
        check.write_text(store.check_path("stage1", "k", 1).read_text())
    else:
        check.unlink()
    assert not store.has_shard("stage1", "k", 0)
    assert not store.shard_path("stage1", "k", 0).exists()
    assert warned(caplog, store.shard_path("stage1", "k", 0))
    assert any(n.startswith("part-00000.parquet.") for n in quarantined(store))
    with pytest.raises(ArtifactError, match="missing artifact shard"):
        store.read_shard("stage1", "k", 0)
    assert store.has_shard("stage1", "k", 1)


def test_unreadable_manifest_is_moved_aside_and_rewritten_without_recompute(tmp_path, caplog):
    store = sealed(tmp_path)
    manifest = store.manifest_path("stage1", "k")
    manifest.write_text('{"stage": "stage1", "files": {"part-0')
    with pytest.raises(
        ArtifactCorruptError, match=f"manifest {re.escape(str(manifest))} is not valid JSON"
    ):
        store.read_stage("stage1", "k")
    assert not manifest.exists() and warned(caplog, manifest)
    assert [n.split(".")[0] for n in quarantined(store)] == ["_manifest"]
    assert not store.is_complete("stage1", "k")
    assert store.has_shard("stage1", "k", 0) and store.has_shard("stage1", "k", 1)  # shards kept
    store.write_manifest("stage1", "k", expected_shards=2)
    assert len(store.read_stage("stage1", "k")) == 6


def test_manifest_that_disagrees_with_verified_shards_is_moved_aside(tmp_path, caplog):
    store = sealed(tmp_path)
    path = store.manifest_path("stage1", "k")
    data = json.loads(path.read_text())
    data["files"]["part-00001.parquet"]["sha256"] = "0" * 64
    path.write_text(json.dumps(data))
    with pytest.raises(
        ArtifactCorruptError,
        match=r"part-00001\.parquet has SHA-256 .*; _manifest\.json says 000000000000",
    ):
        store.read_stage("stage1", "k")
    assert not path.exists() and warned(caplog, path)
    assert store.list_shards("stage1", "k") == [0, 1]  # the shards match their own records: kept
    fresh = store.write_manifest("stage1", "k", expected_shards=2)
    assert fresh["files"]["part-00001.parquet"]["sha256"] != "0" * 64
    assert len(store.read_stage("stage1", "k")) == 6


def test_manifest_without_records_is_damaged(tmp_path):
    store = sealed(tmp_path)
    path = store.manifest_path("stage1", "k")
    data = json.loads(path.read_text())
    del data["files"]
    path.write_text(json.dumps(data))
    assert store.read_manifest("stage1", "k") is None and not path.exists()
    assert not store.is_complete("stage1", "k")


def test_shard_without_check_record_is_not_trusted(tmp_path):
    store = ArtifactStore(tmp_path)
    path = store.shard_path("stage1", "k", 0)
    path.parent.mkdir(parents=True)
    frame(0).to_parquet(path)  # a file nobody vouches for (copied in, or a foreign writer)
    assert not store.has_shard("stage1", "k", 0) and not path.exists()


def test_orphan_check_record_from_a_crash_before_the_shard_rename(tmp_path):
    store = ArtifactStore(tmp_path)
    store.write_shard("stage1", "k", 0, frame(0))
    store.shard_path("stage1", "k", 0).unlink()  # crash after the record, before the shard
    assert not store.has_shard("stage1", "k", 0)
    store.write_shard("stage1", "k", 0, frame(0, n=5))
    assert len(store.read_shard("stage1", "k", 0)) == 5


def test_rewriting_a_verified_shard_keeps_it(tmp_path):
    store = sealed(tmp_path)
    path = store.shard_path("stage1", "k", 0)
    before = (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes())
    assert store.write_shard("stage1", "k", 0, frame(0)) == path  # identical: never raises
    assert store.write_shard("stage1", "k", 0, frame(0, n=9)) == path  # first verified shard wins
    assert (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes()) == before
    with pytest.raises(ArtifactError, match="is complete; refusing"):
        store.write_shard("stage1", "k", 2, frame(2))


def test_write_manifest_on_a_complete_artifact_returns_it(tmp_path):
    store = sealed(tmp_path)
    first = store.read_manifest("stage1", "k")
    again = store.write_manifest("stage1", "k", {"note": "other"}, expected_shards=2)
    assert again == first and json.loads(store.manifest_path("stage1", "k").read_text()) == first
    with pytest.raises(ArtifactError, match="expected shards 0..2"):
        store.write_manifest("stage1", "k", expected_shards=3)
    store.shard_path("stage1", "k", 1).write_bytes(b"x")
    with pytest.raises(
        ArtifactCorruptError, match=r"complete but damaged: cannot read artifact shard .*part-00001"
    ):
        store.write_manifest("stage1", "k", expected_shards=2)


def test_write_manifest_refuses_damaged_shards(tmp_path):
    store = ArtifactStore(tmp_path)
    store.write_shard("stage1", "k", 0, frame(0))
    store.shard_path("stage1", "k", 0).write_bytes(os.urandom(64))
    with pytest.raises(
        ArtifactCorruptError, match="not writing _manifest.json: cannot read artifact shard"
    ):
        store.write_manifest("stage1", "k", expected_shards=1)
    assert not store.is_complete("stage1", "k") and not store.manifest_path("stage1", "k").exists()


def test_quarantine_is_not_a_stage_name(tmp_path):
    with pytest.raises(ArtifactError, match="invalid artifact stage '_quarantine'"):
        ArtifactStore(tmp_path).shard_path("_quarantine", "k", 0)
    assert MANIFEST == "_manifest.json"


def test_write_manifest_replaces_a_manifest_that_disagrees_with_verified_shards(tmp_path):
    store = sealed(tmp_path)
    path = store.manifest_path("stage1", "k")
    data = json.loads(path.read_text())
    data["rows"]["part-00000.parquet"] = 99
    path.write_text(json.dumps(data))
    fresh = store.write_manifest("stage1", "k", {"note": "resealed"}, expected_shards=2)
    assert fresh["rows"]["part-00000.parquet"] == 3 and fresh["note"] == "resealed"
    assert json.loads(path.read_text()) == fresh
    assert [n.split(".")[0] for n in quarantined(store)] == ["_manifest"]
