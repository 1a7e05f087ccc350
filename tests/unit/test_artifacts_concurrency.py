"""Concurrent runs sharing content-addressed artifacts: shard claims between processes and
threads, first verified shard wins, idempotent manifests, a killed claim holder.

Orderings are forced with events (never sleeps): whatever the scheduling, a test passes only
when the locks exclude, and it cannot pass by luck when they do not hold.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from pathlib import Path

import pandas as pd
import pytest

from sphere_core.locks import file_lock
from sphere_core.storage.artifacts import ArtifactStore

CTX = multiprocessing.get_context("forkserver")
WAIT_S = 60


def frame(writer: str, shard: int, n: int = 2) -> pd.DataFrame:
    return pd.DataFrame({"writer": [writer] * n, "shard": [shard] * n})


def _claim_and_compute(home: str, name: str, holding, release, results) -> None:
    """Worker: claim shard 0; reuse it if present, else 'compute' (wait for ``release``) + write."""
    store = ArtifactStore(Path(home))
    with store.claim("stage1", "k", 0):
        if store.has_shard("stage1", "k", 0):
            results.put((name, "reused", store.read_shard("stage1", "k", 0)["writer"].tolist()))
            return
        holding.set()
        if not release.wait(WAIT_S):
            results.put((name, "timeout", []))
            return
        store.write_shard("stage1", "k", 0, frame(name, 0))
        results.put((name, "computed", [name, name]))


def _start(target, *args):
    proc = CTX.Process(target=target, args=args)
    proc.start()
    return proc


@pytest.mark.parametrize("repeat", range(int(os.environ.get("SPHERE_REPEAT", "1"))))
def test_second_process_waits_for_the_claim_and_computes_nothing(tmp_path, repeat):
    first_holds, second_holds = CTX.Event(), CTX.Event()
    release, never = CTX.Event(), CTX.Event()
    results = CTX.Queue()
    first = _start(_claim_and_compute, str(tmp_path), "first", first_holds, release, results)
    try:
        assert first_holds.wait(WAIT_S)  # first holds the claim and is computing
        second = _start(_claim_and_compute, str(tmp_path), "second", second_holds, never, results)
        # while the first holds the claim the second cannot get in, so it never computes
        assert not second_holds.wait(0.5)
        release.set()
        got = {results.get(timeout=WAIT_S)[0:2] for _ in range(2)}
        assert got == {("first", "computed"), ("second", "reused")}
        first.join(WAIT_S)
        second.join(WAIT_S)
        assert (first.exitcode, second.exitcode) == (0, 0) and not second_holds.is_set()
    finally:
        for proc in multiprocessing.active_children():
            proc.kill()
    store = ArtifactStore(tmp_path)
    assert store.read_shard("stage1", "k", 0)["writer"].tolist() == ["first", "first"]
    assert not list(store.artifact_dir("stage1", "k").glob(".*.lock"))  # released: cleaned up


def _hold_until_killed(home: str, holding) -> None:
    with ArtifactStore(Path(home)).claim("stage1", "k", 0):
        holding.set()
        threading.Event().wait(WAIT_S)


def test_a_killed_holder_releases_its_claim(tmp_path):
    holding = CTX.Event()
    proc = _start(_hold_until_killed, str(tmp_path), holding)
    assert holding.wait(WAIT_S)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(WAIT_S)
    store = ArtifactStore(tmp_path)
    with store.claim("stage1", "k", 0):  # the kernel dropped the dead process's lock
        assert not store.has_shard("stage1", "k", 0)
        store.write_shard("stage1", "k", 0, frame("survivor", 0))
    assert store.has_shard("stage1", "k", 0)


def _write_everything(home: str, name: str, start, shards: int, results) -> None:
    """Worker: a whole run over an artifact without claims: every shard, then the manifest."""
    store = ArtifactStore(Path(home))
    start.wait()
    try:
        for shard in range(shards):
            store.write_shard("stage1", "k", shard, frame(name, shard))
        manifest = store.write_manifest("stage1", "k", {"by": name}, expected_shards=shards)
        results.put((name, "ok", manifest["created_at"]))
    except Exception as err:  # noqa: BLE001 - reported to the test
        results.put((name, "error", repr(err)))


def test_runs_racing_on_one_artifact_all_succeed_with_one_consistent_result(tmp_path):
    start, results, shards = CTX.Event(), CTX.Queue(), 6
    procs = [
        _start(_write_everything, str(tmp_path), f"run-{i}", start, shards, results)
        for i in range(3)
    ]
    try:
        start.set()
        outcomes = [results.get(timeout=WAIT_S * 2) for _ in procs]
        for proc in procs:
            proc.join(WAIT_S)
    finally:
        for proc in multiprocessing.active_children():
            proc.kill()
    assert [o[1] for o in outcomes] == ["ok"] * 3, outcomes
    assert len({o[2] for o in outcomes}) == 1  # one manifest; the others got it back
    store = ArtifactStore(tmp_path)
    df = store.read_stage("stage1", "k")
    assert df["shard"].tolist() == [s for s in range(shards) for _ in range(2)]
    # each shard comes whole from one writer (first verified shard wins)
    assert df.groupby("shard")["writer"].nunique().eq(1).all()
    assert store.is_complete("stage1", "k", verify=True)


def test_slower_run_with_another_run_id_reuses_the_sealed_artifact(tmp_path):
    fast, slow = ArtifactStore(tmp_path), ArtifactStore(tmp_path)
    for shard in range(2):
        fast.write_shard("questions", "k", shard, frame("fast", shard))
    sealed = fast.write_manifest("questions", "k", {"stats": {"n": 4}}, expected_shards=2)
    # the slower run computed the same shards meanwhile and now writes them: no error
    for shard in range(2):
        assert slow.write_shard("questions", "k", shard, frame("slow", shard)) == slow.shard_path(
            "questions", "k", shard
        )
    assert slow.write_manifest("questions", "k", {"stats": {"n": 4}}, expected_shards=2) == sealed
    assert set(slow.read_stage("questions", "k")["writer"]) == {"fast"}


def test_threads_claiming_one_shard_exclude_each_other(tmp_path):
    store, n = ArtifactStore(tmp_path), 8
    inside, computed, errors = [], [], []
    gate = threading.Barrier(n)
    guard = threading.Lock()

    def work(i: int) -> None:
        try:
            gate.wait(WAIT_S)
            for _ in range(5):
                with store.claim("stage1", "k", 0):
                    with guard:
                        inside.append(i)
                        assert len(inside) == 1, inside
                    if not store.has_shard("stage1", "k", 0):
                        store.write_shard("stage1", "k", 0, frame(f"t{i}", 0))
                        computed.append(i)
                    with guard:
                        inside.remove(i)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert errors == [] and len(computed) == 1


def test_claims_are_reentrant_and_nest_in_lock_order(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.claim_artifact("pairs_train", "k") as directory:
        assert directory == store.artifact_dir("pairs_train", "k")
        with store.claim("pairs_train", "k", 0), store.claim("pairs_train", "k", 0):
            store.write_shard("pairs_train", "k", 0, frame("me", 0))  # takes the same claim inside
        store.write_manifest("pairs_train", "k", expected_shards=1)
        assert (directory / ".artifact.lock").exists()  # not cleaned up while held
    assert not (store.artifact_dir("pairs_train", "k") / ".artifact.lock").exists()
    assert store.read_stage("pairs_train", "k")["writer"].tolist() == ["me", "me"]


def _artifact_worker(home: str, name: str, holding, release, results) -> None:
    store = ArtifactStore(Path(home))
    with store.claim_artifact("ingest", "k"):
        if store.is_complete("ingest", "k"):
            results.put((name, "reused"))
            return
        holding.set()
        release.wait(WAIT_S)
        store.write_shard("ingest", "k", 0, frame(name, 0))
        store.write_manifest("ingest", "k", expected_shards=1)
        results.put((name, "computed"))


def test_claim_artifact_serialises_single_writer_stages(tmp_path):
    first_holds, second_holds, release, never = CTX.Event(), CTX.Event(), CTX.Event(), CTX.Event()
    results = CTX.Queue()
    first = _start(_artifact_worker, str(tmp_path), "first", first_holds, release, results)
    try:
        assert first_holds.wait(WAIT_S)
        second = _start(_artifact_worker, str(tmp_path), "second", second_holds, never, results)
        assert not second_holds.wait(0.5)
        release.set()
        assert {results.get(timeout=WAIT_S) for _ in range(2)} == {
            ("first", "computed"),
            ("second", "reused"),
        }
        first.join(WAIT_S)
        second.join(WAIT_S)
    finally:
        for proc in multiprocessing.active_children():
            proc.kill()


def test_file_lock_removal_never_admits_two_holders(tmp_path):
    lock, n, rounds = tmp_path / "x.lock", 6, 40
    inside, errors = [], []
    guard = threading.Lock()
    gate = threading.Barrier(n)

    def work() -> None:
        try:
            gate.wait(WAIT_S)
            for _ in range(rounds):
                with file_lock(lock, remove=True):
                    with guard:
                        inside.append(1)
                        assert len(inside) == 1
                    with guard:
                        inside.pop()
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert errors == [] and not lock.exists()
