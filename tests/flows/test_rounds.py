"""Self-evolution rounds through the real flows: generation and evaluation sampling use the
scripted fakes, DPO trains the small embedded model for real, so round 2 searches with the
merged model trained in round 1. Checks: round 2's policy differs from round 1's (weights
hash), round-keyed artifacts and store rows, the report's rounds section, `sphere routes
--question` across rounds, `sphere runs` showing the round reached, and resume after kill -9
inside round 2 without duplicates and without retraining round 1.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import pytest

from sphere_core.backends.cache import clear_caches
from sphere_core.storage.repo import open_repository
from tests.fakes import write_fake_questions
from tests.flows.conftest import sphere_cli
from tests.flows.orch_fakes import fake_overrides

pytestmark = pytest.mark.slow

SCENARIOS = ["contrastive", "diverse", "corrected", "inverted"]
ROUND_SETTINGS = [
    "models.policy.path=embedded-small",
    "evolution.rounds=2",
    "training.max_steps=2",
    "training.per_device_batch_size=2",
    "training.max_length=128",
    "training.learning_rate=5e-3",
    "training.lora_r=4",
    "training.lora_alpha=8",
    "evaluation.limit=1",
    "evaluation.benchmarks=[gsm8k]",
    "evaluation.max_new_tokens=8",
    "evaluation.self_correction=false",
    "pairs.eval_fraction=0",
]


def _weights_hash(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        digest.update(f.read_bytes())
    return digest.hexdigest()


@pytest.fixture(autouse=True)
def _fresh_backends(sphere_home):
    clear_caches()
    yield
    clear_caches()


def test_two_rounds_evolve_the_policy(prefect_api, sphere_home, tmp_path, capsys):
    from flows.cli import main
    from flows.pipeline import pipeline_flow
    from sphere_core.backends.embedded import resolve_model_path

    data = write_fake_questions(tmp_path / "q.jsonl", SCENARIOS)
    result = pipeline_flow(run_id="evo", overrides=fake_overrides(data) + ROUND_SETTINGS)
    r1, r2 = result.rounds
    assert (r1.round, r2.round) == (1, 2) and result.status == "completed"
    merged = Path(r1.train.merged_path)
    assert _weights_hash(merged) != _weights_hash(resolve_model_path("embedded-small", sphere_home))
    assert r2.generate.pairs > 0 and r2.train.adapter_path
    # round-keyed artifacts: the policy changed, so every stage key of round 2 is new
    for stage in ("stage1", "stage2", "stage3"):
        assert r1.generate.artifact_keys[stage] != r2.generate.artifact_keys[stage]
    assert (
        r1.generate.artifact_keys["questions"] != r2.generate.artifact_keys["questions"]
    )  # tokenizer path
    assert (sphere_home / "runs" / "evo" / "round-2" / "outputs.json").is_file()
    assert (sphere_home / "runs" / "evo" / "round-2" / "pairs" / "train.parquet").is_file()
    with open_repository(None, sphere_home) as repo:
        run = repo.get_run("evo")
        assert (run["round"], run["rounds"], run["status"]) == (2, 2, "completed")
        events = repo.routes_for_run("evo")
        assert {e["round"] for e in events} == {1, 2}
        assert len(events) == len({(e["round"], e["question_id"], e["stage"]) for e in events})
        assert {p["round"] for p in repo.pairs_for_run("evo")} == {1, 2}
        assert {c["round"] for c in repo.checkpoints_for_run("evo")} == {1, 2}
        assert {e["round"] for e in repo.evaluations_for_run("evo")} == {1, 2}
        qid = events[0]["question_id"]
    report = (sphere_home / "runs" / "evo" / "report.md").read_text()
    assert "Round 1" in report and "Round 2" in report

    capsys.readouterr()
    assert main(["routes", "--question", qid, "--format", "json"]) == 0
    import json

    history = json.loads(capsys.readouterr().out)
    assert {(h["run_id"], h["round"]) for h in history} >= {("evo", 1), ("evo", 2)}
    assert main(["runs"]) == 0
    assert "2/2" in capsys.readouterr().out


def test_kill_in_round_two_then_resume(prefect_api, tmp_path):
    home = tmp_path / "home"
    data = write_fake_questions(tmp_path / "q.jsonl", SCENARIOS * 2)
    sets = [
        arg
        for o in fake_overrides(data, backend="fake-slow") + ROUND_SETTINGS
        for arg in ("--set", o)
    ]
    proc = sphere_cli(
        ["run", "--run-id", "evo-kill", *sets],
        home,
        prefect_api,
        {"SPHERE_FAKE_DELAY_S": "0.4"},
        wait=False,
    )
    marker = home / "runs" / "evo-kill" / "model" / "sphere_trained.json"
    deadline = time.time() + 600
    while time.time() < deadline:  # round 1 trained; then wait for round 2's first stage shard
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if marker.is_file() and _round2_shards(home) >= 1:
            break
        time.sleep(0.2)
    else:
        pytest.fail("round 2 never started")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    trained_at = marker.stat().st_mtime_ns
    with open_repository(None, home) as repo:
        run = repo.get_run("evo-kill")
        assert run["status"] == "running" and run["round"] == 2

    resumed = sphere_cli(["resume", "evo-kill"], home, prefect_api, {"SPHERE_FAKE_DELAY_S": "0"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert marker.stat().st_mtime_ns == trained_at  # round 1 was not trained again
    with open_repository(None, home) as repo:
        run = repo.get_run("evo-kill")
        assert (run["status"], run["round"]) == ("completed", 2)
        events = repo.routes_for_run("evo-kill")
        keys = [(e["round"], e["question_id"], e["stage"]) for e in events]
        assert len(keys) == len(set(keys)) and {k[0] for k in keys} == {1, 2}
        assert sum(1 for k in keys if k[0] == 1 and k[2] == "stage1") == 8
        assert sum(1 for k in keys if k[0] == 2 and k[2] == "stage1") == 8
        pairs = repo.pairs_for_run("evo-kill")
        ordinals = [(p["round"], p["ordinal"]) for p in pairs]
        assert len(ordinals) == len(set(ordinals))


def _round2_shards(home: Path) -> int:
    """Stage-1 routing shards written for round 2 (the run view of round 1 names round 1's key)."""
    import json

    view = home / "runs" / "evo-kill" / "outputs.json"
    if not view.is_file():
        return 0
    key1 = json.loads(view.read_text())["plan"]["stages"]["stage1"]
    root = home / "artifacts" / "stage1_routing"
    return (
        sum(len(list(d.glob("part-*.parquet"))) for d in root.iterdir() if d.name != key1)
        if root.is_dir()
        else 0
    )
