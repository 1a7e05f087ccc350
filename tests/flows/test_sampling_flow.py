"""The generate flow with search.strategy=sampling on the fakes: routing, pairs, tokens in the
summary, and artifact keys that change with the strategy (a pruned run is not reused)."""

from __future__ import annotations

import pytest
from rich.console import Console

from flows.generate import generate_flow
from sphere_core.backends.cache import clear_caches
from sphere_core.storage.run_view import RunView
from sphere_core.summary import summarize, summary_table
from tests.fakes import write_fake_questions
from tests.flows.orch_fakes import fake_overrides

SCENARIOS = ["contrastive", "corrected", "unresolved", "diverse", "no_error"]


@pytest.fixture(autouse=True)
def _fresh_backends(sphere_home):
    clear_caches()
    yield
    clear_caches()


def test_sampling_run_routes_pairs_and_counts_tokens(prefect_api, tmp_path, sphere_home):
    data = write_fake_questions(tmp_path / "q.jsonl", SCENARIOS)
    pruned = generate_flow(run_id="pruned", overrides=fake_overrides(data))
    sampled = generate_flow(
        run_id="sampled", overrides=fake_overrides(data) + ["search.strategy=sampling"]
    )
    assert pruned.artifact_keys["stage1"] != sampled.artifact_keys["stage1"]
    assert pruned.artifact_keys["questions"] == sampled.artifact_keys["questions"]
    counts = {(c["stage"], c["decision"]): c["questions"] for c in sampled.routing_counts}
    assert counts == {
        ("stage1", "pair"): 1,
        ("stage1", "to_correction"): 2,
        ("stage1", "to_diversity"): 2,
        ("stage2", "pair"): 1,
        ("stage2", "unresolved"): 1,
        ("stage3", "pair"): 1,
        ("stage3", "no_error"): 1,
    }
    view = RunView(sphere_home, "sampled")
    pairs, tree = view.pairs(), view.tree()
    assert pairs["stage"].value_counts().to_dict() == {"stage1": 1, "stage2": 1, "stage3": 1}
    assert (tree["depth"] == 0).all() and tree["prm_score"].isna().all()

    tokens = summarize(view.routing(), pairs, run_id="sampled", trees=tree)["tokens"]
    assert (
        tokens["all"]["total"]
        == int(tree["num_tokens"].sum())
        == sampled.search["generated_tokens"]
    )
    assert tokens["all"]["questions"] == len(SCENARIOS) and tokens["all"]["pairs"] == 3
    assert tokens["all"]["per_pair"] == round(tokens["all"]["total"] / 3, 1)
    s1 = tree[tree["stage"] == "stage1"]
    assert tokens["stage1"]["per_question"] == round(s1["num_tokens"].sum() / len(SCENARIOS), 1)
    assert tokens["stage2"]["questions"] == 2 and tokens["stage3"]["questions"] == 2

    console = Console(record=True, width=200)
    console.print(summary_table(view.routing(), pairs, trees=tree))
    text = console.export_text()
    assert "Tokens/question" in text and f"{tokens['all']['total']:,}" in text

    from sphere_core.evaluation.report import build_report

    report = build_report("sampled", sphere_home).read_text()
    line = next(x for x in report.splitlines() if x.startswith("Tokens generated:"))
    total, per_pair = tokens["all"]["total"], tokens["all"]["per_pair"]
    assert (
        f"per pair {per_pair:,.0f}, total {total:,}" in line and "Stage 1 (self-generation)" in line
    )
