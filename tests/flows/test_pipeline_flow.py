"""The ``pipeline`` flow end to end: generate -> train -> evaluate -> report as subflows of one
flow run, under one completed run record. Generation and evaluation sampling use the scripted
fakes (so there are pairs to train on); DPO trains the embedded model for real."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

from sphere_core.storage.repo import open_repository
from tests.flows.orch_fakes import fake_overrides

pytestmark = pytest.mark.slow


def test_pipeline_runs_every_stage_as_a_subflow(prefect_api, sphere_home, questions_file):
    pytest.importorskip("flows.train")
    from flows.pipeline import pipeline_flow

    result = pipeline_flow(run_id="pipe", preset="demo", overrides=fake_overrides(questions_file) + [
        "models.policy.path=embedded", "training.max_steps=2", "evaluation.limit=2",
        "evaluation.benchmarks=[gsm8k]", "evaluation.max_new_tokens=32",
    ])
    assert result["run_id"] == "pipe"
    with open_repository(None, sphere_home) as repo:
        run = repo.get_run("pipe")
        assert run["status"] == "completed" and run["kind"] == "pipeline"
        assert repo.routes_for_run("pipe") and repo.evaluations_for_run("pipe")
    assert (sphere_home / "runs" / "pipe" / "pairs" / "train.parquet").is_file()
    parent = run["prefect_flow_run_id"]
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])))
    names = {client_run.name for client_run in children}
    assert len(children) == 4, names
    assert all(c.state.is_completed() for c in children)
