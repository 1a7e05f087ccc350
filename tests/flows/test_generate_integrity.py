"""Damaged artifacts under a finished run: a flipped byte, a truncated shard, a deleted shard
(stage outputs and questions) are found by checksum on the next run of the same run id, moved
aside (never deleted), recomputed, and the run ends with exactly the undamaged results."""

from __future__ import annotations

import pandas as pd
import pytest

from flows.generate import generate_flow
from sphere_core.backends.cache import clear_caches
from sphere_core.storage.repo import open_repository
from sphere_core.storage.run_view import RunView
from tests.flows.orch_fakes import fake_overrides


@pytest.fixture(autouse=True)
def _fresh_backends(sphere_home):
    clear_caches()
    yield
    clear_caches()


def _snapshot(home, run_id):
    view = RunView(home, run_id)
    routing = (
        view.routing().drop(columns="run_id").astype(str).sort_values(["question_id", "stage"])
    )
    pairs = (
        view.pairs()
        .drop(columns="run_id")
        .astype(str)
        .sort_values(["question_id", "stage", "route"])
    )
    with open_repository(None, home) as repo:
        events = sorted(
            (e["question_id"], e["stage"], e["decision"]) for e in repo.routes_for_run(run_id)
        )
    return routing.reset_index(drop=True), pairs.reset_index(drop=True), events


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-200])


DAMAGE = {"flip": _flip, "truncate": _truncate, "delete": lambda p: p.unlink()}


@pytest.mark.parametrize("output", ["stage1_routing", "stage2_tree", "questions"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_shard_is_quarantined_and_recomputed(
    prefect_api, sphere_home, questions_file, damage, output
):
    overrides = fake_overrides(questions_file)
    first = generate_flow(run_id="intact", overrides=overrides)
    before = _snapshot(sphere_home, "intact")
    key = first.artifact_keys["questions" if output == "questions" else output.split("_")[0]]
    shard = sphere_home / "artifacts" / output / key / "part-00001.parquet"
    assert shard.is_file()
    DAMAGE[damage](shard)

    generate_flow(run_id="intact", overrides=overrides)  # the same run id again: resumes

    assert shard.is_file()  # recomputed
    quarantined = list((sphere_home / "artifacts" / "_quarantine").rglob("part-00001.parquet*"))
    assert (len(quarantined) >= 1) if damage != "delete" else True  # damaged bytes are kept aside
    after = _snapshot(sphere_home, "intact")
    pd.testing.assert_frame_equal(after[0], before[0])
    pd.testing.assert_frame_equal(after[1], before[1])
    assert after[2] == before[2]
