"""The routing-decision vocabulary has one source, the stage registry: a toy stage with a new
decision shows up, in registry order, in the CLI summary, the report and the routing plot, and a
decision nobody registered is shown after the known ones instead of being dropped."""

from __future__ import annotations

import pandas as pd
import pytest
from rich.console import Console

from sphere_core import stages
from sphere_core.evaluation import plots
from sphere_core.evaluation.report import RunParts, render
from sphere_core.evaluation.report.loading import RoundData
from sphere_core.evaluation.report.markdown import Figures
from sphere_core.stages.base import BaseStage, Decision, Upstream
from sphere_core.summary import summarize, summary_table

HARD = Decision("hard_negative", "a near-miss wrong path was found", "#123456")


class ToyStage(BaseStage):
    name = "stage4"
    title = "Stage 4 (toy hard negatives)"
    consumes = Upstream("stage3", "no_error")
    decisions = (HARD,)
    summary = "Questions Stage 3 found no error for get one more search."


@pytest.fixture
def toy_stage(monkeypatch):
    """The registry with the toy stage appended (restored after the test)."""
    stages.all_stages()  # load the real stages first
    monkeypatch.setattr(stages, "_REGISTRY", dict(stages._REGISTRY))
    stages.register(ToyStage())
    return ToyStage


def _routing() -> pd.DataFrame:
    rows = [
        ("q1", "stage1", "to_diversity"),
        ("q2", "stage1", "to_diversity"),
        ("q3", "stage1", "pair"),
        ("q1", "stage3", "no_error"),
        ("q2", "stage3", "no_error"),
        ("q1", "stage4", "hard_negative"),
        ("q2", "stage4", "hard_negative"),
        ("q3", "stage3", "from_the_future"),
    ]
    return pd.DataFrame(
        [
            {"question_id": q, "stage": s, "decision": d, "reason": f"{d} because"}
            for q, s, d in rows
        ]
    )


def _pairs() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "question_id": "q1",
                "stage": "stage4",
                "route": "hard_negative",
                "granularity": "trajectory",
                "split": "train",
                "reward_chosen": 0.9,
                "reward_rejected": 0.2,
                "gold_answer": "7",
                "answer_chosen": "7",
                "answer_rejected": "8",
                "prompt": [{"role": "user", "content": "What is 3 + 4?"}],
                "chosen": [{"role": "assistant", "content": "The answer is 7."}],
                "rejected": [{"role": "assistant", "content": "The answer is 8."}],
            }
        ]
    )


def test_registry_orders_decisions_with_the_toy_stage_last_before_error(toy_stage):
    decisions = stages.all_decisions()
    assert list(decisions)[-2:] == ["hard_negative", "error"]
    assert decisions["hard_negative"] is HARD
    assert stages.decision_order(["error", "zzz", "hard_negative", "pair"]) == [
        "pair",
        "hard_negative",
        "error",
        "zzz",
    ]


def test_cli_summary_shows_the_new_decision_and_keeps_unknown_ones(toy_stage):
    summary = summarize(_routing(), _pairs(), run_id="toy")
    assert summary["stages"]["stage4"] == {"questions": 2, "hard_negative": 2}
    assert summary["stages"]["stage3"] == {"questions": 3, "no_error": 2, "from_the_future": 1}
    console = Console(record=True, width=200)
    console.print(summary_table(_routing(), _pairs()))
    text = console.export_text()
    assert "Stage 4 (toy hard negatives)" in text and "hard_negative 2" in text
    assert "no_error 2, from_the_future 1" in text


def test_report_shows_the_new_decision_its_meaning_and_plots_it(toy_stage, tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    labels: list[str] = []
    colors: list[object] = []
    bar = Axes.bar

    def spy(self, *args, **kwargs):
        labels.append(kwargs.get("label"))
        colors.append(kwargs.get("color"))
        return bar(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "bar", spy)
    data = RoundData(
        1, tmp_path / "run", routing=_routing(), pairs=_pairs(), routing_source="run view"
    )
    run = RunParts("toy", tmp_path, None, 1, 1, 1, [data], [])
    text = "\n".join(render(run, Figures(tmp_path / "run")))
    assert "| Stage 4 (toy hard negatives) | 2 | hard_negative 2 (100%) | 1 |" in text
    assert "no_error 2 (67%), from_the_future 1 (33%)" in text
    assert (
        "`hard_negative`: a near-miss wrong path was found" in text
        and "Questions Stage 3 found no error for get one more search." in text
    )
    assert "`from_the_future`: not registered" in text
    assert (tmp_path / "run" / "report" / "routing.png").is_file()
    assert "hard_negative" in labels and colors[labels.index("hard_negative")] == "#123456"
    assert "from_the_future" in labels
    assert plots.decision_colors(["from_the_future"])["from_the_future"] is None
