"""Deployments: ``infra/prefect.yaml`` and ``sphere serve`` (``flows.pipeline.build_deployments``)
describe the same deployments (equal sets of names, entrypoints, tags and default parameters),
every entrypoint resolves to a Prefect flow, and the pipeline one is on a cron schedule."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml
from prefect import Flow

from flows.pipeline import build_deployments

REPO = Path(__file__).resolve().parents[2]
YAML = REPO / "infra" / "prefect.yaml"


def _deployments() -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load(YAML.read_text())["deployments"]}


def _served(cron: str = "0 3 * * *") -> dict:
    return {d.name: d for d in build_deployments(preset="demo", cron=cron)}


def test_prefect_yaml_and_serve_describe_the_same_deployments():
    listed, served = _deployments(), _served()
    assert set(listed) == set(served)
    for name, d in listed.items():
        assert sorted(d.get("tags") or []) == sorted(served[name].tags), name
        assert (d.get("parameters") or {}) == (served[name].parameters or {}), name
        module, attr = d["entrypoint"].split(":")
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), attr)
        assert flow.name == served[name].flow_name, name


def test_prefect_yaml_pipeline_is_on_the_serve_default_cron():
    deployments = _deployments()
    assert deployments["sphere-pipeline"]["schedules"][0]["cron"] == "0 3 * * *"
    assert _served()["sphere-pipeline"].schedules[0].schedule.cron == "0 3 * * *"
    for d in deployments.values():
        assert d["work_pool"]["name"] == "sphere-process"
        assert (REPO / d["entrypoint"].split(":")[0]).is_file(), d["entrypoint"]


@pytest.mark.parametrize("name", sorted(_deployments()))
def test_prefect_yaml_entrypoints_are_flows(name):
    path, attr = _deployments()[name]["entrypoint"].split(":")
    module = path.removesuffix(".py").replace("/", ".")
    flow = getattr(importlib.import_module(module), attr)
    assert isinstance(flow, Flow)


def test_serve_builds_deployments_with_the_schedule():
    built = _served(cron="*/10 * * * *")
    assert built["sphere-pipeline"].schedules[0].schedule.cron == "*/10 * * * *"
    assert built["sphere-generate"].parameters == {"preset": "demo"}
