"""Catches Prefect server breaks caused by its dependencies (fastapi >= 0.151 answered 422 on
filter endpoints, >= 0.155 crashed every flow run; SQLAlchemy 2.1 broke the scheduler's
bulk insert): a flow run read back through a filter query, and a cron deployment scheduled.
"""

from __future__ import annotations

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
)


@flow(name="sphere-smoke")
def smoke_flow(x: int) -> int:
    return x + 1


def test_flow_run_is_read_back_through_a_filter(prefect_api):
    state = smoke_flow(41, return_state=True)
    assert state.is_completed() and state.result() == 42
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    assert [r.id for r in runs] == [run_id]
    assert runs[0].state.is_completed()
    assert runs[0].parameters == {"x": 41}


def test_cron_deployment_gets_scheduled_runs(prefect_api):
    deployment_id = smoke_flow.to_deployment(
        name="smoke-cron", cron="*/5 * * * *", parameters={"x": 1}
    ).apply()
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
        assert deployment.schedules and deployment.schedules[0].schedule.cron == "*/5 * * * *"
        # the server's bulk insert of scheduled runs (what its scheduler service does)
        response = client.request(
            "POST", "/deployments/{id}/schedule", path_params={"id": deployment_id}, json={}
        )
        assert response.status_code < 300, response.text
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    assert runs and all(r.state.is_scheduled() for r in runs)
