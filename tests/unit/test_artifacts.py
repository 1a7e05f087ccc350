"""Parquet artifact store: keys, layout, atomic shards, manifest-last, corrupt shards."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sphere_core.errors import ArtifactError
from sphere_core.storage.artifacts import ArtifactStore
from sphere_core.storage.keys import CODE_VERSION, artifact_key


def test_key_depends_on_every_input_and_ignores_dict_order():
    base = artifact_key("stage1", {"e": 5, "t": 0.8}, ["abc"])
    assert len(base) == 16 and int(base, 16) >= 0
    assert artifact_key("stage1", {"t": 0.8, "e": 5}, ["abc"]) == base
    others = {
        artifact_key("stage2", {"e": 5, "t": 0.8}, ["abc"]),
        artifact_key("stage1", {"e": 6, "t": 0.8}, ["abc"]),
        artifact_key("stage1", {"e": 5, "t": 0.8}, ["abd"]),
        artifact_key("stage1", {"e": 5, "t": 0.8}, ["abc"], code_version=CODE_VERSION + "x"),
    }
    assert base not in others and len(others) == 4
    assert artifact_key("s", {"p": Path("/a")}, []) == artifact_key("s", {"p": "/a"}, [])
    with pytest.raises(ArtifactError, match="cannot hash the config of stage 's'"):
        artifact_key("s", {"x": object()}, [])


def test_path_is_a_pure_function_of_stage_key_shard(tmp_path):
    store = ArtifactStore(tmp_path)
    assert (
        store.shard_path("stage1", "k" * 16, 7)
        == tmp_path / "artifacts" / "stage1" / ("k" * 16) / "part-00007.parquet"
    )
    for bad in ("../x", "a/b", ""):
        with pytest.raises(ArtifactError, match="invalid artifact"):
            store.shard_path(bad, "key", 0)
    with pytest.raises(ArtifactError, match="invalid shard index"):
        store.shard_path("s", "key", -1)


def test_shards_round_trip_including_chat_messages(tmp_path):
    store = ArtifactStore(tmp_path)
    msgs = [
        [{"role": "system", "content": "Solve."}, {"role": "user", "content": "1+1?"}],
        [{"role": "user", "content": "2+2?"}],
    ]
    df = pd.DataFrame(
        {
            "question_id": ["a", "b"],
            "prompt": msgs,
            "reward": [0.5, None],
            "chosen": [[{"role": "assistant", "content": "2"}], []],
        }
    )
    path = store.write_shard("pairs", "k1", 0, df)
    assert path.name == "part-00000.parquet" and store.has_shard("pairs", "k1", 0)
    # no temp or lock file left: the shard and its check record only
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "part-00000.parquet",
        "part-00000.parquet.check.json",
    ]
    back = store.read_shard("pairs", "k1", 0)
    assert back["prompt"].tolist() == msgs
    assert isinstance(back["prompt"][0], list) and isinstance(back["prompt"][0][0], dict)
    assert back["chosen"].tolist() == [[{"role": "assistant", "content": "2"}], []]
    assert back["question_id"].tolist() == ["a", "b"] and pd.isna(back["reward"][1])


def test_manifest_is_written_last_and_read_stage_concatenates_in_order(tmp_path):
    store = ArtifactStore(tmp_path)
    for shard in (2, 0, 1):
        store.write_shard("stage1", "k", shard, pd.DataFrame({"x": [shard] * (shard + 1)}))
    assert store.list_shards("stage1", "k") == [0, 1, 2]
    assert not store.is_complete("stage1", "k")
    with pytest.raises(ArtifactError, match="incomplete"):
        store.read_stage("stage1", "k")
    assert store.read_stage("stage1", "k", require_complete=False)["x"].tolist() == [
        0,
        1,
        1,
        2,
        2,
        2,
    ]
    manifest = store.write_manifest("stage1", "k", {"stage_config": {"e": 5}}, expected_shards=3)
    assert store.is_complete("stage1", "k")
    on_disk = json.loads(store.manifest_path("stage1", "k").read_text())
    assert on_disk == manifest
    assert manifest["rows"] == {
        "part-00000.parquet": 1,
        "part-00001.parquet": 2,
        "part-00002.parquet": 3,
    }
    assert manifest["total_rows"] == 6 and manifest["columns"] == ["x"]
    assert (
        manifest["schema_version"] >= 1
        and manifest["stage_config"] == {"e": 5}
        and manifest["created_at"]
    )
    assert store.read_stage("stage1", "k")["x"].tolist() == [0, 1, 1, 2, 2, 2]
    with pytest.raises(ArtifactError, match="is complete; refusing"):
        store.write_shard("stage1", "k", 3, pd.DataFrame({"x": [9]}))


def test_manifest_checks_expected_shards(tmp_path):
    store = ArtifactStore(tmp_path)
    store.write_shard("s", "k", 0, pd.DataFrame({"x": [1]}))
    with pytest.raises(ArtifactError, match=r"missing \['part-00001.parquet'\]"):
        store.write_manifest("s", "k", {}, expected_shards=2)
    assert not store.is_complete("s", "k")


def test_empty_complete_artifact_reads_as_empty_frame(tmp_path):
    store = ArtifactStore(tmp_path)
    store.write_manifest("s", "k", {"columns": ["a", "b"]})
    df = store.read_stage("s", "k")
    assert df.empty and list(df.columns) == ["a", "b"]
    with pytest.raises(ArtifactError, match="no artifact at"):
        store.read_stage("s", "other", require_complete=False)


def test_corrupt_or_missing_shard_names_the_file(tmp_path):
    store = ArtifactStore(tmp_path)
    for shard in (0, 1):
        store.write_shard("s", "k", shard, pd.DataFrame({"x": [shard]}))
    store.write_manifest("s", "k")
    bad = store.shard_path("s", "k", 1)
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ArtifactError, match=f"cannot read artifact shard {bad}"):
        store.read_stage("s", "k")
    assert not bad.exists()  # moved aside, not deleted
    assert [p.name.split(".")[0] for p in store.quarantine_dir("s", "k").iterdir()] == [
        "part-00001"
    ] * 2
    with pytest.raises(ArtifactError, match="part-00001.parquet.*missing"):
        store.read_stage("s", "k")
    with pytest.raises(ArtifactError, match="missing artifact shard"):
        store.read_shard("s", "k", 5)


def test_row_count_mismatch_with_manifest_is_detected(tmp_path):
    store = ArtifactStore(tmp_path)
    store.write_shard("s", "k", 0, pd.DataFrame({"x": [1, 2]}))
    store.write_manifest("s", "k")
    manifest = store.manifest_path("s", "k")
    data = json.loads(manifest.read_text())
    data["rows"]["part-00000.parquet"] = 5
    manifest.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="has 2 rows; _manifest.json says 5"):
        store.read_stage("s", "k")


def test_failed_write_leaves_no_partial_file(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(ArtifactError, match="cannot convert shard"):
        store.write_shard("s", "k", 0, pd.DataFrame({"x": [object()]}))
    assert not store.has_shard("s", "k", 0)
    directory = store.artifact_dir("s", "k")
    assert not directory.exists() or list(directory.iterdir()) == []
