"""The run report: ``runs/<id>/report.md`` with PNG plots under ``runs/<id>/report/``.

Sections: the run's status and rounds (from the store); setup (policy, pi_small, PRM, DPO
settings; says when pi_small = pi or is a model of another family); then per round: routing
and pairs (the paper's Table 5: decisions per stage, pairs per stage x route x granularity,
dropped pair candidates, chosen paths finished by the completion rollout, a plot), search
rewards of chosen vs rejected, DPO (loss and implicit-reward margins by step from
``model/train_log.json``), evaluation (base vs trained per benchmark with n, self-correction
and flips, from the store) and one example pair per stage and route with its routing reason.
A run with more than one round gets a rounds section comparing them (routing fractions,
pairs per route, DPO final loss, Pass@1 per benchmark as a line plot, flips); its per-round
sections follow under "Round r" headings.

Modules: ``loading`` reads the run's parts (:class:`RunParts`, :class:`RoundData`; I/O and
damaged-artifact errors become "unreadable parts", bugs propagate), ``markdown`` holds the
markdown helpers and :class:`Figures`, ``tables`` the table maths, ``sections`` one module per
group of sections and the ordered tuples ``RUN_SECTIONS``, ``ROUNDS_SECTIONS`` and
``ROUND_SECTIONS``. **To add a section:** write ``def my_section(data: RoundData, figs:
Figures, level: int) -> list[str]`` in a module under ``sections/`` (or a run-level one taking
``(run: RunParts, figs: Figures)``) and add it to the tuple in ``sections/__init__.py`` where
it should appear.

Round r's outputs are read through ``run_view.RunView(home, run_id, r)`` and the store rows with
``round == r``. A part that is missing or unreadable (no run view, no pairs, no training, no
evaluation yet, a damaged artifact) is stated where it would be; the report is still written.
Reads run files and the store; writes only ``report.md`` and ``report/*.png`` in the run dir.
"""

from __future__ import annotations

from pathlib import Path

from sphere_core.evaluation.report.loading import RoundData, RunParts, RunStore, load_run
from sphere_core.evaluation.report.markdown import REPORT_DIR, Figures
from sphere_core.evaluation.report.sections import (
    ROUND_SECTIONS,
    ROUNDS_SECTIONS,
    RUN_SECTIONS,
)
from sphere_core.evaluation.report.tables import (
    accuracy_rows,
    chosen_completed,
    dpo_summary,
    evaluation_table,
    example_pairs,
    pairs_by_route,
    table5,
)

REPORT_MD = "report.md"

__all__ = [
    "REPORT_DIR",
    "REPORT_MD",
    "RoundData",
    "RunParts",
    "accuracy_rows",
    "build_report",
    "chosen_completed",
    "dpo_summary",
    "evaluation_table",
    "example_pairs",
    "pairs_by_route",
    "render",
    "table5",
]


def _round_lines(data: RoundData, figs: Figures, level: int) -> list[str]:
    out = ["> **Unreadable parts:** " + "; ".join(data.problems), ""] if data.problems else []
    for section in ROUND_SECTIONS:
        out += section(data, figs, level)
    return out


def render(run: RunParts, figs: Figures) -> list[str]:
    """The report's markdown lines: run sections, then the round(s)."""
    lines: list[str] = []
    for section in RUN_SECTIONS:
        lines += section(run, figs)
    if not run.multi:
        return lines + _round_lines(run.rounds[0], figs, level=2)
    for section in ROUNDS_SECTIONS:
        lines += section(run, figs)
    for data in run.rounds:
        figs.prefix = f"round-{data.round}-"
        lines += [f"## Round {data.round}", ""]
        if not data.has_data:
            lines += [
                (
                    f"_Round {data.round} left no outputs (not reached, or stopped before "
                    "generating)._"
                ),
                "",
            ]
            continue
        lines += _round_lines(data, figs, level=3)
    return lines


def build_report(run_id: str, home: Path, repo: RunStore | None = None) -> Path:
    """Write ``runs/<run_id>/report.md`` (+ PNGs) from whatever parts of the run exist."""
    from sphere_core.paths import run_dir

    home = Path(home)
    run = run_dir(home, run_id)
    figs = Figures(run)
    lines = render(load_run(home, run_id, repo), figs)
    run.mkdir(parents=True, exist_ok=True)
    figs.remove_stale()
    path = run / REPORT_MD
    tmp = path.with_name(f".{REPORT_MD}.tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    tmp.replace(path)
    return path
