"""Per-round section on the evaluation: base vs trained per benchmark with n, self-correction
and flips (from the store), the Pass@1 change in points, and an accuracy plot."""

from __future__ import annotations

from sphere_core.evaluation import plots
from sphere_core.evaluation.report.loading import RoundData
from sphere_core.evaluation.report.markdown import Figures, heading, md_table, pct
from sphere_core.evaluation.report.tables import evaluation_table, pass1


def _change_line(ev, bench: str) -> str | None:
    base, trained = pass1(ev, bench, "base"), pass1(ev, bench, "trained")
    if base and trained:
        delta = 100 * (trained[0] - base[0])
        n = min(base[1], trained[1])
        return (
            f"- {bench}: Pass@1 {pct(base[0])} → {pct(trained[0])} ({delta:+.1f} points; "
            f"n={n}, so one question is {100 / max(n, 1):.1f} points)."
        )
    if base:
        return (
            f"- {bench}: base Pass@1 {pct(base[0])} (n={base[1]}); the trained model was "
            "not evaluated."
        )
    if trained:
        return f"- {bench}: trained Pass@1 {pct(trained[0])} (n={trained[1]}); no base evaluation."
    return None


def evaluation(data: RoundData, figs: Figures, level: int) -> list[str]:
    """Base vs trained accuracy of this round per benchmark."""
    out = [heading(level, "Evaluation (base vs trained)"), ""]
    ev = data.evaluations
    if ev.empty:
        return out + [
            "_No evaluation recorded for this round: run `sphere evaluate --run <id>`._",
            "",
        ]
    out += [md_table(evaluation_table(ev)), ""]
    out += [
        line
        for bench in dict.fromkeys(ev["benchmark"])
        if (line := _change_line(ev, bench)) is not None
    ]
    out.append("")
    acc = ev[ev["metric"].isin(["pass@1", "self_correction_acc"])]
    if len(acc):
        out += figs.draw(
            "accuracy", "accuracy per benchmark", lambda p: plots.accuracy_plot(acc, p)
        )
    return out
