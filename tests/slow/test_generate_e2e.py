"""The demo pipeline through the CLI's own path (`sphere run --preset demo`, in-process) on the
embedded models: a real search with the Qwen2.5 policy and its judge PRM, SmolLM2 as pi_small,
real DPO, base-vs-trained evaluation and the report. Smaller than the full demo (fewer
questions, shorter evaluation) so that it fits the test budget; the same code path."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from sphere_core.backends.cache import clear_caches
from sphere_core.grading import get_grader, has_final_answer
from sphere_core.storage.repo import open_repository
from sphere_core.storage.run_view import RunView

# the whole demo pipeline (search, DPO with checkpoints, evaluation) on a 2-core CPU
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

SMALLER = [
    "data.limit=2",
    "training.max_steps=2",
    "evaluation.limit=1",
    "evaluation.max_new_tokens=96",
    "evaluation.self_correction=false",
    "grading.workers=1",
]


def _lora_hash(adapter_dir) -> str:
    return hashlib.sha256((adapter_dir / "adapter_model.safetensors").read_bytes()).hexdigest()


def test_demo_pipeline_through_the_cli(prefect_api, sphere_home, capsys):
    from flows.cli import main

    clear_caches()
    args = ["run", "--preset", "demo", "--run-id", "demo-e2e"] + [
        a for s in SMALLER for a in ("--set", s)
    ]
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    assert "run demo-e2e completed" in captured.out

    view = RunView(sphere_home, "demo-e2e")
    pairs = view.pairs()
    traj = pairs[pairs["granularity"] == "trajectory"]
    assert len(traj) >= 1, view.routing()[["stage", "decision", "reason"]].to_string()
    grader = get_grader(view_cfg_grading())
    for row in traj.to_dict("records"):
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert has_final_answer(chosen) and has_final_answer(rejected)  # finished solutions
        (_, ok_c), (_, ok_r) = grader.grade_texts(
            [chosen, rejected], [row["gold_answer"]] * 2, fallback="none"
        )
        assert ok_c and not ok_r
    tree = view.tree()
    assert tree["prm_score"].between(0, 1).all() and len(tree) > 0

    model = view.model_dir()
    adapter = model / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    from safetensors.torch import load_file

    lora_b = [
        v for k, v in load_file(str(adapter / "adapter_model.safetensors")).items() if "lora_B" in k
    ]
    assert lora_b and any(
        float(v.abs().sum()) > 0 for v in lora_b
    )  # LoRA B starts at zero: it moved

    with open_repository(None, sphere_home) as repo:
        run = repo.get_run("demo-e2e")
        assert run["status"] == "completed"
        labels = {e["model_label"] for e in repo.evaluations_for_run("demo-e2e")}
        assert labels == {"base", "trained"}
    report = (sphere_home / "runs" / "demo-e2e" / "report.md").read_text()
    assert "Run status: **completed**" in report
    assert isinstance(pd.read_parquet(view.pairs_path("train")), pd.DataFrame)


def view_cfg_grading():
    from sphere_core.config import resolve_config

    return resolve_config(preset="demo").grading
