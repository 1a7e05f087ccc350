"""The ``pipeline`` flow end to end: a ``round-1`` subflow (generate -> train -> evaluate) and the
report, under one completed run record. Generation and evaluation sampling use the scripted
fakes (so there are pairs to train on); DPO trains the small embedded model for real."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

from sphere_core.storage.repo import open_repository
from tests.flows.orch_fakes import fake_overrides

pytestmark = pytest.mark.slow


def test_pipeline_runs_every_stage_as_a_subflow(prefect_api, sphere_home, questions_file):
    from flows.pipeline import pipeline_flow

    result = pipeline_flow(
        run_id="pipe",
        preset="demo",
        overrides=fake_overrides(questions_file)
        + [
            "models.policy.path=embedded-small",
            "training.max_steps=2",
            "evaluation.limit=2",
            "evaluation.benchmarks=[gsm8k]",
            "evaluation.max_new_tokens=32",
        ],
    )
    assert result.run_id == "pipe" and len(result.rounds) == 1 and result.status == "completed"
    assert result.last.generate.pairs > 0 and result.last.train.adapter_path
    with open_repository(None, sphere_home) as repo:
        run = repo.get_run("pipe")
        assert run["status"] == "completed" and run["kind"] == "pipeline"
        assert repo.routes_for_run("pipe") and repo.evaluations_for_run("pipe")
    assert (sphere_home / "runs" / "pipe" / "pairs" / "train.parquet").is_file()
    parent = run["prefect_flow_run_id"]
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])
            )
        )
        names = {client_run.name for client_run in children}
        assert len(children) == 2 and "round-1" in names, names
        round_run = next(c for c in children if c.name == "round-1")
        steps = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[round_run.id])
            )
        )
    assert len(steps) == 3  # generate, train, evaluate
    assert all(c.state.is_completed() for c in [*children, *steps])
    report = (sphere_home / "runs" / "pipe" / "report.md").read_text()
    assert "Run status: **completed**" in report


def test_pipeline_without_pairs_skips_dpo_and_still_reports(prefect_api, sphere_home, tmp_path):
    from flows.pipeline import pipeline_flow
    from tests.fakes import write_fake_questions

    data = write_fake_questions(tmp_path / "q.jsonl", ["unresolved", "no_error"])
    result = pipeline_flow(
        run_id="nopairs",
        overrides=fake_overrides(data)
        + [
            "evaluation.limit=1",
            "evaluation.benchmarks=[gsm8k]",
            "evaluation.max_new_tokens=8",
        ],
    )
    assert result.last.generate.pairs == 0 and result.last.train.skipped
    assert [r["model_label"] for r in result.last.evaluate.rows] and {
        r["model_label"] for r in result.last.evaluate.rows
    } == {"base"}
    with open_repository(None, sphere_home) as repo:
        assert repo.get_run("nopairs")["status"] == "completed"
    assert (sphere_home / "runs" / "nopairs" / "report.md").is_file()
