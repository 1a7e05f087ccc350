"""The report's statistics section on a fabricated run: base vs trained per benchmark from the
per-item records under the round's ``eval/`` dir, with hand-computed numbers; old records
without extracted answers give "n/a"; a round without records says so."""

from __future__ import annotations

import pandas as pd

from sphere_core.config import resolve_config
from sphere_core.evaluation.report import build_report
from tests.support.eval_items import write_items
from tests.support.run_factory import fabricate_run, fabricated_report, mixed_spec

T, F = True, False
HEADING = "## Statistics (base vs trained, paired)"


def _section(text: str) -> str:
    start = text.index(HEADING)
    end = text.find("\n## ", start + len(HEADING))
    return text[start : end if end >= 0 else None]


def _cells(section: str, bench: str) -> list[str]:
    (line,) = [ln for ln in section.splitlines() if ln.startswith(f"| {bench} |")]
    return [c.strip() for c in line.strip("|").split("|")]


def test_statistics_section_from_the_round_items(sphere_home, home_store):
    cfg = resolve_config(overrides=["pairs.eval_fraction=0.25"])
    fabricate_run(sphere_home, home_store, cfg, "st1", [mixed_spec()])
    # gsm8k: base 3/10, trained 7/10 (q3 right->wrong, q4..q8 wrong->right); trained q10 no answer
    write_items(sphere_home, "st1", "base", "gsm8k", [T, T, T, F, F, F, F, F, F, F])
    write_items(
        sphere_home, "st1", "trained", "gsm8k", [T, T, F, T, T, T, T, T, F, F], no_answer=(9,)
    )
    # math500: old records without extracted_1; only m1, m2 answered by both
    for label, correct, ids in (
        ("base", [F, F, T], ["m1", "m2", "m3"]),
        ("trained", [T, T], ["m1", "m2"]),
    ):
        path = write_items(sphere_home, "st1", label, "math500", correct, ids=ids)
        pd.read_parquet(path).drop(columns="extracted_1").to_parquet(path, index=False)
    section = _section(build_report("st1", sphere_home, home_store).read_text())

    gsm = _cells(section, "gsm8k")
    assert gsm == ["gsm8k", "10", "30.0%", "70.0%", gsm[4], "0.219", "1", "5", "0.0%", "10.0%"]
    diff, ci = gsm[4].split(" ", 1)
    low, high = (float(x) for x in ci.strip("[]").split(", "))
    assert diff == "+40.0" and low <= 40.0 <= high  # percentage points
    math = _cells(section, "math500")
    assert math == [
        "math500",
        "2",
        "0.0%",
        "100.0%",
        "+100.0 [+100.0, +100.0]",
        "0.5",
        "0",
        "2",
        "n/a",
        "n/a",
    ]  # p = 2 * 1/4
    assert "10000 resamples, seed 0" in section and "exact two-sided" in section


def test_statistics_section_says_when_there_are_no_records(sphere_home):
    cfg = resolve_config(overrides=["pairs.eval_fraction=0.25"])
    _, text = fabricated_report(sphere_home, cfg, "st2", [mixed_spec()])
    section = _section(text)
    assert "No paired statistics" in section and "| gsm8k |" not in section
