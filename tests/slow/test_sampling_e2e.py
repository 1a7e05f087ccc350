"""The sampling control arm through the CLI's own path (`sphere generate`, in-process) on the
smallest embedded model (SmolLM2-135M as policy and pi_small): real whole-solution sampling,
real grading and routing, a finished run with tree and routing rows and token counts."""

from __future__ import annotations

import pytest

from sphere_core.backends.cache import clear_caches
from sphere_core.storage.repo import open_repository
from sphere_core.storage.run_view import RunView

pytestmark = pytest.mark.slow

SETTINGS = [
    "models.policy.path=embedded-small",
    "search.strategy=sampling",
    "data.limit=2",
    "search.samples_per_question=2",
    "search.sampling_max_tokens=96",
    "grading.workers=1",
]


def test_sampling_generate_through_the_cli(prefect_api, sphere_home, capsys):
    from flows.cli import main

    clear_caches()
    args = ["generate", "--preset", "demo", "--run-id", "sampling-e2e"]
    code = main(args + [a for s in SETTINGS for a in ("--set", s)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    assert "Tokens/question" in captured.out

    view = RunView(sphere_home, "sampling-e2e")
    routing, tree = view.routing(), view.tree()
    s1 = routing[routing["stage"] == "stage1"]
    assert len(s1) == 2 and set(s1["decision"]) <= {"pair", "to_correction", "to_diversity"}
    t1 = tree[tree["stage"] == "stage1"]
    assert t1.groupby("question_id").size().eq(2).all()  # N = 2 whole solutions per question
    assert (t1["depth"] == 0).all() and t1["prm_score"].isna().all()
    assert (t1["num_tokens"] > 0).all() and (t1["num_tokens"] <= 96 + 24).all()  # + answer cue
    assert t1.groupby("question_id")["selected"].sum().between(1, 2).all()
    chosen = set(s1["solution_max"]) | set(s1["solution_min"])
    assert chosen <= set(t1["text"])
    with open_repository(None, sphere_home) as repo:
        assert repo.get_run("sampling-e2e")["status"] == "completed"
        assert repo.get_run("sampling-e2e")["config"]["search"]["strategy"] == "sampling"
