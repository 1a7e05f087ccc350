"""The report's self-evolution rounds section, from fabricated runs of two planned rounds."""

from __future__ import annotations

import pytest

from sphere_core.config import resolve_config
from sphere_core.evaluation.report import build_report
from sphere_core.paths import run_dir
from sphere_core.stages import stage_titles
from tests.support.run_factory import (
    PNG_MAGIC,
    RoundSpec,
    fabricate_run,
    fabricated_report,
    first_stage,
    main_stages,
    mixed_spec,
)


def _round_two() -> RoundSpec:
    """Round 2 (pi_2 is better): 6 questions, 3 pair + 1 pair_inverted, 1 to each later stage."""
    first, correction, diversity = main_stages()
    return RoundSpec(
        decisions={
            first: ["pair"] * 3 + ["pair_inverted", "to_correction", "to_diversity"],
            correction: ["pair"],
            diversity: ["no_error"],
        },
        pass1={"gsm8k": (0.5, 0.75), "math500": (0.25, 0.25)},
        self_correction={"gsm8k": (0.75, 1.0)},
        flips=(1, 2),
        n_eval=4,
    )


@pytest.fixture(scope="module")
def evo_home(tmp_path_factory):
    """A completed run of two rounds and its report, shared by the tests that read it."""
    home = tmp_path_factory.mktemp("rounds_home")
    cfg = resolve_config(overrides=["pairs.eval_fraction=0.25", "evolution.rounds=2"])
    rounds, text = fabricated_report(home, cfg, "evo", [mixed_spec(), _round_two()])
    return home, rounds, text


@pytest.fixture
def two_rounds(evo_home):
    return evo_home[1:]


def test_rounds_section_lists_both_rounds(two_rounds):
    rounds, text = two_rounds
    titles = stage_titles()
    first = first_stage().name
    assert "Run status: **completed**" in text and "rounds reached: **2 of 2**" in text
    assert "## Self-evolution rounds" in text
    assert "Rounds with outputs: **2 of 2** (1, 2)" in text
    rounds_part = text.split("## Self-evolution rounds")[1].split("## Round 1")[0]
    # routing fractions per round
    assert f"| 1 | {titles[first]} | 11 | pair 4 (36%), pair_inverted 1 (9%)" in rounds_part
    assert (
        f"| 2 | {titles[first]} | 6 | pair 3 (50%), pair_inverted 1 (17%), to_correction 1 (17%), "
        f"to_diversity 1 (17%) | 4 |"
    ) in rounds_part
    # pairs per route per round
    for fab in rounds:
        for (stage, route), group in fab.pairs.groupby(["stage", "route"]):
            train, evaluation = (
                int((group["split"] == "train").sum()),
                int((group["split"] == "eval").sum()),
            )
            assert (
                f"| {fab.round} | {titles[stage]} | {route} | trajectory | {train} | {evaluation} "
                "| "
                f"{len(group)} |"
            ) in rounds_part
    # DPO final loss per round: 0.69 - 0.04 * 8 / r
    assert (
        f"| 1 | {len(rounds[0].pairs)} | trained | 8 | 0.37 | 0.38 | 0.38 | 0.36 | 0.7 |"
        in rounds_part
    )
    assert (
        f"| 2 | {len(rounds[1].pairs)} | trained | 8 | 0.53 | 0.54 | 0.54 | 0.72 | 0.7 |"
        in rounds_part
    )
    # Pass@1 per benchmark per round: base of round 1, then trained per round, with n
    assert "| benchmark | base π₁ (round 1) | round 1 trained | round 2 trained |" in rounds_part
    assert "| gsm8k | 25.0% (n=4) | 50.0% (n=4) | 75.0% (n=4) |" in rounds_part
    assert "| math500 | 0.0% (n=4) | 25.0% (n=4) | 25.0% (n=4) |" in rounds_part
    # self-correction flips per round
    assert "| 1 | gsm8k | trained | 4 | 75 | 0 | 1 |" in rounds_part
    assert "| 2 | gsm8k | trained | 4 | 100 | 1 | 2 |" in rounds_part


def test_per_round_details_and_pngs(evo_home):
    home, _, text = evo_home
    assert "## Round 1" in text and "## Round 2" in text
    round_two = text.split("## Round 2")[1]
    assert "### Routing and preference pairs (Table 5 view)" in round_two
    assert "| gsm8k | trained | 4 | 75 | 100 | 1 | 2 |" in round_two
    folder = run_dir(home, "evo") / "report"
    png = folder / "rounds.png"
    assert png.is_file() and png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 5000
    assert "](report/rounds.png)" in text
    for r in (1, 2):
        for name in ("routing", "loss", "margins", "accuracy"):
            path = folder / f"round-{r}-{name}.png"
            assert path.read_bytes().startswith(PNG_MAGIC), path
            assert f"](report/{path.name})" in text
    assert not (folder / "routing.png").exists()


def test_a_run_stopped_after_round_one(sphere_home, home_store):
    cfg = resolve_config(overrides=["pairs.eval_fraction=0.25", "evolution.rounds=2"])
    fabricate_run(sphere_home, home_store, cfg, "half", [mixed_spec()], status="cancelled")
    text = build_report("half", sphere_home, home_store).read_text()
    assert "Run status: **cancelled**" in text and "rounds reached: **1 of 2**" in text
    assert "`sphere resume` continues a cancelled run" in text
    assert "Rounds with outputs: **1 of 2** (1)" in text
    assert "_No outputs for round(s) 2: not reached (yet)._" in text
    assert "| gsm8k | 25.0% (n=4) | 50.0% (n=4) | – |" in text
    assert (run_dir(sphere_home, "half") / "report" / "rounds.png").is_file()
