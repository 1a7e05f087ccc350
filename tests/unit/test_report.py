"""The run report of a fabricated one-round run: each section's content, valid PNGs, and gaps
(no store record, an empty run, zero pairs, no training log, no run view, a damaged artifact)."""

from __future__ import annotations

import re

import pytest

from sphere_core.config import resolve_config
from sphere_core.evaluation.report import build_report
from sphere_core.evaluation.report import markdown as md
from sphere_core.paths import run_dir
from sphere_core.stages import stage_titles
from sphere_core.storage.artifacts import ArtifactStore
from sphere_core.storage.run_outputs import routing_output
from sphere_core.storage.run_view import RunView
from tests.support.run_factory import (
    PNG_MAGIC,
    RoundSpec,
    fabricate_run,
    fabricated_report,
    first_stage,
    main_stages,
    mixed_spec,
)


def _config(*overrides: str):
    return resolve_config(overrides=["pairs.eval_fraction=0.25", *overrides])


def _valid_png(path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_MAGIC) and len(data) > 5000


@pytest.fixture(scope="module")
def full_home(tmp_path_factory):
    """One fabricated run (every route) and its report, shared by the section tests."""
    home = tmp_path_factory.mktemp("report_home")
    (fab,), text = fabricated_report(
        home, _config("models.small.path=embedded-small"), "r1", [mixed_spec()]
    )
    return home, fab, text


@pytest.fixture
def full_run(full_home):
    return full_home[1:]


def test_status_rounds_and_setup(full_home):
    home, _, text = full_home
    assert (run_dir(home, "r1") / "report.md").is_file()
    assert "Run status: **completed**" in text
    assert "rounds reached: **1 of 1**" in text
    assert "`embedded` (Qwen2.5-Coder-0.5B-Instruct)" in text
    assert "`embedded-small` (SmolLM2-135M-Instruct)" in text
    assert (
        "π_small is a weaker model of another family, not a smaller sibling as in the paper" in text
    )
    assert "π_small = π" not in text
    assert "## Self-evolution rounds" not in text  # one round planned and run


def test_table5_pairs_per_route_and_dropped(full_run):
    fab, text = full_run
    first, correction, diversity = main_stages()
    titles = stage_titles()
    assert (
        f"| {titles[first]} | 11 | pair 4 (36%), pair_inverted 1 (9%), to_correction 4 (36%), "
        f"to_diversity 2 (18%) | 4 |"
    ) in text
    assert (
        f"| {titles[correction]} | 4 | pair 2 (50%), pair_inverted 1 (25%), unresolved 1 (25%) | "
        "3 |" in text
    )
    assert f"| {titles[diversity]} | 2 | pair 1 (50%), no_error 1 (50%) | 1 |" in text
    assert f"preference pairs: **8** ({len(fab.train)} train, {len(fab.eval)} eval)" in text
    pairs = fab.pairs
    for (stage, route), group in pairs.groupby(["stage", "route"]):
        train, evaluation = (
            int((group["split"] == "train").sum()),
            int((group["split"] == "eval").sum()),
        )
        assert (
            f"| {titles[stage]} | {route} | trajectory | {train} | {evaluation} | {len(group)} |"
            in text
        )
    assert "**Dropped pair candidates: 1**" in text
    assert f"| {titles[first]} | rejected solution is unfinished (no final answer) | 1 |" in text


def test_completion_rollouts_of_chosen_paths(full_run):
    _, text = full_run
    first, correction, diversity = main_stages()
    titles = stage_titles()
    # first stage: 4 rollouts in its tree (3 Sol_max + 1 Sol_min); 2 of its 4 pairs chose one
    assert f"| {titles[first]} | 4 | 4 | 2 |" in text
    assert f"| {titles[correction]} | 0 | 3 | 0 |" in text
    # the diversity stage's chosen path is the first stage's Sol_max of question 9
    assert f"| {titles[diversity]} | 0 | 1 | 1 |" in text


def test_dpo_loss_and_margins(full_run):
    _, text = full_run
    # last train step 8: loss 0.69 - 0.32, margin 0.4, chosen 0.24; eval: margin x 0.9, acc 0.7
    assert (
        "| metric | train (last logged step) | eval (last logged) | eval (kept adapter) |" in text
    )
    assert "| loss | 0.37 | 0.38 | 0.38 |" in text
    assert "| rewards/margins | 0.4 | 0.36 | 0.36 |" in text
    assert "| rewards/chosen | 0.24 | 0.24 | – |" in text
    assert "| rewards/rejected | -0.16 | -0.12 | – |" in text
    assert "| rewards/accuracies | 1 | 0.7 | 0.7 |" in text
    assert "Implicit-reward accuracy at the end: **0.7**" in text
    assert "checkpoint-8" in text
    assert "DPO skipped" not in text


def test_evaluation_has_n_and_flips(full_run):
    _, text = full_run
    assert (
        "| benchmark | model | n | Pass@1 (%) | after self-correction (%) | right→wrong | "
        "wrong→right |" in text
    )
    assert "| gsm8k | base | 4 | 25 | 50 | 0 | 1 |" in text
    assert "| gsm8k | trained | 4 | 50 | 75 | 0 | 1 |" in text
    assert "| math500 | trained | 4 | 25 | – | – | – |" in text
    assert "- gsm8k: Pass@1 25.0% → 50.0% (+25.0 points; n=4" in text


def test_one_example_per_stage_and_route_with_its_reason(full_run):
    fab, text = full_run
    titles = stage_titles()
    section = text.split("Example pairs (one per stage and route)")[1]
    headers = re.findall(
        r"^\*\*(.+?) · (\w+)\*\* \(trajectory, (\w+) split\): question `([^`]+)`",
        section,
        re.MULTILINE,
    )
    expected = {
        (titles[s], r)
        for s, r in fab.pairs[["stage", "route"]].drop_duplicates().itertuples(index=False)
    }
    assert {(h[0], h[1]) for h in headers} == expected
    assert section.count("<details>") == len(expected) == 5
    why = re.findall(r"^Why: (.+)$", section, re.MULTILINE)
    assert len(why) == len(headers)
    stage_of = {v: k for k, v in titles.items()}
    for (title, route, _, qid), reason in zip(headers, why):
        row = fab.routing[
            (fab.routing["question_id"] == qid) & (fab.routing["stage"] == stage_of[title])
        ]
        assert reason == row["reason"].iloc[0]
        assert route in set(fab.pairs[fab.pairs["question_id"] == qid]["route"])
    assert (
        "Problem (first user message):" in section
    )  # the correction stage's prompt has two user turns


def test_pngs_are_valid_and_linked(full_home):
    home, _, text = full_home
    folder = run_dir(home, "r1") / "report"
    names = {p.name for p in folder.glob("*.png")}
    assert names == {"routing.png", "rewards.png", "loss.png", "margins.png", "accuracy.png"}
    for name in names:
        assert _valid_png(folder / name), name
        assert f"](report/{name})" in text


def test_long_texts_are_clipped_in_the_middle():
    text = "A" * 3000 + "Final Answer: The final answer is $7$."
    clipped = md.clip(text, md.ANSWER_HEAD, md.ANSWER_TAIL)
    assert len(clipped) < md.ANSWER_HEAD + md.ANSWER_TAIL + 60
    assert clipped.endswith("$7$.") and "characters omitted" in clipped
    assert md.clip("short", 10, 5) == "short"
    assert md.fenced("a ``` b").startswith("````text")


def test_report_without_store_record(sphere_home):
    text = build_report("r3", sphere_home, None).read_text()
    assert "configuration is unknown" in text
    assert "Run status: **unknown**" in text


def test_report_of_an_empty_run_notes_the_missing_parts(sphere_home, home_store):
    cfg = resolve_config(preset="demo")
    home_store.create_run("r2", cfg.to_dict(), cfg.config_hash())
    text = build_report("r2", sphere_home, home_store).read_text()
    assert "Run status: **pending**" in text and "the run is in progress or it stopped" in text
    assert "No routing records for this round" in text
    assert "DPO skipped: no pairs" in text
    assert "No evaluation recorded for this round" in text
    assert "π_small is a weaker model of another family" in text  # demo: Qwen2.5 π, SmolLM2 π_small
    assert not list((run_dir(sphere_home, "r2") / "report").glob("*.png"))
    same = resolve_config(overrides=["data.limit=2"])
    home_store.create_run("r3", same.to_dict(), same.config_hash())
    assert "π_small = π" in build_report("r3", sphere_home, home_store).read_text()


def test_zero_pairs_run(sphere_home, home_store):
    first, correction, diversity = main_stages()
    spec = RoundSpec(
        decisions={
            first: ["to_correction"] * 2 + ["to_diversity"],
            correction: ["unresolved"] * 2,
            diversity: ["no_error"],
        },
        pass1={"gsm8k": (0.25, 0.0)},
        labels=("base",),
    )
    fabricate_run(sphere_home, home_store, _config(), "r0", [spec])
    text = build_report("r0", sphere_home, home_store).read_text()
    assert "Run status: **completed**" in text
    assert "**No preference pairs** in this round" in text
    assert "DPO skipped: no pairs" in text
    assert "No pair candidate was dropped" in text
    assert "- gsm8k: base Pass@1 25.0% (n=4); the trained model was not evaluated." in text
    assert "No preference pairs in this round." in text  # examples and rewards


def test_failed_run_without_train_log(sphere_home, home_store):
    (fab,) = fabricate_run(
        sphere_home,
        home_store,
        _config(),
        "r4",
        [mixed_spec(train=False, pass1={})],
        status="failed",
    )
    home_store.set_run_status("r4", "failed", error="TrainingError: out of memory")
    text = build_report("r4", sphere_home, home_store).read_text()
    assert "The run was **failed**: TrainingError: out of memory" in text
    assert (
        f"DPO has not run for this round: `r4/model/train_log.json` is missing although "
        f"{len(fab.pairs)} pairs" in text
    )
    assert "No evaluation recorded for this round" in text
    assert "## Routing and preference pairs" in text and "| 11 |" in text


def test_routing_from_the_store_when_the_run_view_is_gone(sphere_home, home_store):
    fabricate_run(sphere_home, home_store, _config(), "r5", [mixed_spec()])
    view = RunView(sphere_home, "r5")
    (view.dir / "outputs.json").unlink()
    for split in ("train", "eval"):
        view.pairs_path(split).unlink()
    text = build_report("r5", sphere_home, home_store).read_text()
    titles = stage_titles()
    assert "_Routing read from the store (the run view is missing)._" in text
    assert f"| {titles[first_stage().name]} | 11 |" in text
    assert "preference pairs: **8**" in text  # the store's pair rows
    assert "The pair texts are not on disk" in text


def test_damaged_routing_artifact_is_stated(sphere_home, home_store):
    (fab,) = fabricate_run(sphere_home, home_store, _config(), "r6", [mixed_spec()])
    stage = first_stage().name
    store = ArtifactStore(sphere_home)
    shard = store.shard_path(routing_output(stage), fab.plan.stages[stage], 0)
    shard.write_bytes(b"not parquet")
    text = build_report("r6", sphere_home, home_store).read_text()
    assert "**Unreadable parts:** cannot read the routing of round 1" in text
    assert "Routing read from the store" in text  # falls back to the store's routing events
    assert "DPO training" in text and "| loss | 0.37 |" in text


def test_unreadable_run_view_is_stated_once(sphere_home, home_store):
    fabricate_run(sphere_home, home_store, _config(), "r7", [mixed_spec()])
    (RunView(sphere_home, "r7").dir / "outputs.json").write_text("{not json")
    text = build_report("r7", sphere_home, home_store).read_text()
    assert text.count("**Unreadable parts:**") == 1
    assert "cannot read the run view of round 1: " in text and "outputs.json: Expecting" in text
    assert "_Routing read from the store (the run view is missing)._" in text
    assert "| loss | 0.37 |" in text  # the model dir is still read
