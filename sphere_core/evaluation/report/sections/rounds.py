"""The run-level section of a run with more than one round: routing, pairs, DPO, Pass@1 (with a
line plot) and self-correction flips per round."""

from __future__ import annotations

import pandas as pd

from sphere_core.evaluation import plots
from sphere_core.evaluation.report.loading import RoundData, RunParts
from sphere_core.evaluation.report.markdown import Figures, md_table, pct
from sphere_core.evaluation.report.tables import (
    dpo_summary,
    evaluation_table,
    pairs_by_route,
    pass1,
    table5,
)


def _per_round(frames: list[tuple[int, pd.DataFrame]]) -> pd.DataFrame:
    """One frame with a leading ``round`` column from (round, frame) parts."""
    return pd.DataFrame(
        [{"round": r, **row} for r, frame in frames for row in frame.to_dict("records")]
    )


def _dpo_rows(reached: list[RoundData]) -> pd.DataFrame:
    rows = []
    for d in reached:
        s = dpo_summary(d.train_log)
        rows.append(
            {
                "round": d.round,
                "pairs": len(d.pairs),
                "DPO": "trained"
                if d.train_log
                else ("skipped: no pairs" if d.pairs.empty else "not run"),
                "steps": s.get("steps"),
                "final train loss": s.get("final_train_loss"),
                "final eval loss": s.get("final_eval_loss"),
                "lowest eval loss": s.get("lowest_eval_loss"),
                "final margin": s.get("final_margin"),
                "implicit-reward accuracy": s.get("accuracy"),
            }
        )
    return pd.DataFrame(rows)


def _pass1_rounds(reached: list[RoundData], total: int, figs: Figures) -> list[str]:
    benches = list(
        dict.fromkeys(b for d in reached if len(d.evaluations) for b in d.evaluations["benchmark"])
    )
    if not benches:
        return ["_No evaluation in any round._", ""]
    first = next((d for d in reached if d.round == 1), None)
    by_round = {d.round: d for d in reached}
    points: dict[str, list[tuple[int, float, int]]] = {b: [] for b in benches}
    rows = []
    for bench in benches:
        row = {"benchmark": bench}
        base = pass1(first.evaluations, bench, "base") if first is not None else None
        row["base π₁ (round 1)"] = f"{pct(base[0])} (n={base[1]})" if base else "–"
        if base:
            points[bench].append((0, 100 * base[0], base[1]))
        for r in range(1, total + 1):
            d = by_round.get(r)
            trained = pass1(d.evaluations, bench, "trained") if d is not None else None
            row[f"round {r} trained"] = f"{pct(trained[0])} (n={trained[1]})" if trained else "–"
            if trained:
                points[bench].append((r, 100 * trained[0], trained[1]))
        rows.append(row)
    out = [md_table(pd.DataFrame(rows)), ""]
    if any(points.values()):
        out += figs.draw(
            "rounds", "Pass@1 per round", lambda p: plots.rounds_plot(points, total, p)
        )
    return out


def _flips(reached: list[RoundData]) -> pd.DataFrame:
    flips = _per_round([(d.round, evaluation_table(d.evaluations)) for d in reached])
    if len(flips):
        flips = flips[
            [
                "round",
                "benchmark",
                "model",
                "n",
                "after self-correction (%)",
                "right→wrong",
                "wrong→right",
            ]
        ]
    return flips


def rounds(run: RunParts, figs: Figures) -> list[str]:
    """How the rounds compare (shown before the per-round sections of a multi-round run)."""
    total = max(run.planned, max((d.round for d in run.rounds), default=1))
    reached = [d for d in run.rounds if d.has_data]
    out = [
        "## Self-evolution rounds",
        "",
        f"Rounds with outputs: **{len(reached)} of {total}**"
        + (f" ({', '.join(str(d.round) for d in reached)})" if reached else "")
        + (
            ". Round r > 1 searches with the model DPO trained in round r-1 and trains the "
            "next one from it."
        ),
        "",
    ]
    missing = [r for r in range(1, total + 1) if r not in {d.round for d in reached}]
    if missing:
        out += [f"_No outputs for round(s) {', '.join(map(str, missing))}: not reached (yet)._", ""]
    table = _per_round([(d.round, table5(d.routing, d.pairs)) for d in run.rounds])
    out += [
        "### Routing per round (Table 5 view)",
        "",
        md_table(table) if len(table) else "_No routing in any round._",
        "",
    ]
    table = _per_round([(d.round, pairs_by_route(d.pairs)) for d in run.rounds])
    empty = [str(d.round) for d in reached if d.pairs.empty]
    out += [
        "### Pairs per route per round",
        "",
        md_table(table) if len(table) else "_No pairs in any round._",
        "",
    ]
    if empty and len(table):
        out += [f"No pairs in round(s) {', '.join(empty)}.", ""]
    table = _dpo_rows(reached)
    out += [
        "### DPO per round",
        "",
        md_table(table) if len(table) else "_No round reached DPO._",
        "",
    ]
    out += ["### Pass@1 per round", ""] + _pass1_rounds(reached, total, figs)
    flips = _flips(reached)
    out += [
        "### Self-correction flips per round",
        "",
        md_table(flips) if len(flips) else "_No evaluation in any round._",
        "",
    ]
    return out
