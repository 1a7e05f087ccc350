"""The report's PRM-calibration section on a fabricated run, figures computed by hand.

``mixed_spec``: Stage 1 routes 11 questions (4 pair, 1 pair_inverted, 4 to_correction, 2
to_diversity); each has a Sol_max and a Sol_min path of two steps, all tree rewards 0.5 and the
routed rewards 0.8 (max) / 0.3 (min). One Sol_min (question 4) ends without a final answer.
"""

from __future__ import annotations

import pytest

from sphere_core.calibration import run_calibration
from sphere_core.config import resolve_config
from tests.support.run_factory import fabricated_report, mixed_spec


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    home = tmp_path_factory.mktemp("calibration_home")
    _, text = fabricated_report(
        home, resolve_config(overrides=["models.small.path=embedded-small"]), "rc", [mixed_spec()]
    )
    return home, text


def _section(text: str) -> str:
    start = text.index("## PRM calibration")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_report_section_has_the_hand_computed_figures(fabricated):
    _, text = fabricated
    section = _section(text)
    assert "**4/5** (80 %)" in section
    # 22 finished paths: right = 4 pair max + 1 inverted min + 2 x 2 diversity = 9; all ties
    assert "22 finished paths (9 right) | 0.500" in section
    # routed: right 0.8 x 6, 0.3 x 3 vs wrong 0.8 x 5, 0.3 x 8 -> (6 x 10.5 + 3 x 4) / 117
    assert f"| {75 / 117:.3f} |" in section
    assert "0.500 / 0.500" in section
    assert "AUROC at depth 1 (22 paths) | 0.500" in section
    assert "near chance in this run" in section and "prefers wrong" not in section


def test_cli_numbers_equal_the_report_computation(fabricated):
    home, _ = fabricated
    cal = run_calibration(home, "rc")
    assert (cal.pairs, cal.pairs_inverted, cal.finished_paths, cal.right_paths) == (4, 1, 22, 9)
    assert cal.auroc == 0.5 and cal.near_chance
    assert cal.auroc_routed == pytest.approx(75 / 117)


def test_cli_json_and_table_and_unknown_run(fabricated, capsys, monkeypatch):
    import json

    from flows.cli import main

    monkeypatch.setenv("SPHERE_HOME", str(fabricated[0]))
    monkeypatch.delenv("SPHERE_DATABASE_URL", raising=False)
    assert main(["calibration", "--run", "rc", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["run_id"], row["pairs"], row["pairs_inverted"]) == ("rc", 4, 1)
    assert row["sol_max_right_share"] == 0.8 and row["near_chance"] is True
    assert row["auroc_by_depth"] == {"1": 0.5}
    assert main(["calibration", "--run", "rc"]) == 0
    assert "4/5" in capsys.readouterr().out
    assert main(["calibration", "--run", "nope"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]
