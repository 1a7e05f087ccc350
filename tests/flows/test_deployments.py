"""Deployments: every ``infra/prefect.yaml`` entrypoint resolves to a Prefect flow, the
pipeline one is on a cron schedule, and ``sphere serve`` builds the same set."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml
from prefect import Flow

REPO = Path(__file__).resolve().parents[2]
YAML = REPO / "infra" / "prefect.yaml"


def _deployments() -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load(YAML.read_text())["deployments"]}


def test_prefect_yaml_lists_the_four_flows_with_a_cron():
    deployments = _deployments()
    assert set(deployments) == {"sphere-generate", "sphere-pipeline", "sphere-train", "sphere-evaluate"}
    assert deployments["sphere-pipeline"]["schedules"][0]["cron"] == "0 3 * * *"
    for d in deployments.values():
        assert d["work_pool"]["name"] == "sphere-process"
        assert (REPO / d["entrypoint"].split(":")[0]).is_file(), d["entrypoint"]


@pytest.mark.parametrize("name", ["sphere-generate", "sphere-pipeline", "sphere-train", "sphere-evaluate"])
def test_prefect_yaml_entrypoints_are_flows(name):
    path, attr = _deployments()[name]["entrypoint"].split(":")
    module = path.removesuffix(".py").replace("/", ".")
    if module in ("flows.train", "flows.evaluate"):
        pytest.importorskip(module)
    flow = getattr(importlib.import_module(module), attr)
    assert isinstance(flow, Flow)


def test_serve_builds_deployments_with_the_schedule():
    pytest.importorskip("flows.train")
    from flows.pipeline import build_deployments

    built = {d.name: d for d in build_deployments(preset="demo", cron="*/10 * * * *")}
    assert {"sphere-generate", "sphere-pipeline", "sphere-train", "sphere-evaluate"} <= set(built)
    assert built["sphere-pipeline"].schedules[0].schedule.cron == "*/10 * * * *"
    assert built["sphere-generate"].parameters == {"preset": "demo"}
