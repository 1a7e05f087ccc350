"""Run summary: decision counts per stage and pairs per stage, as a dict and a rich Table.

Owns presentation of a generate round's outcome (the paper's Table-5 view); reads routing
and pair frames, writes nothing. Stage names and titles come from the stage registry.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sphere_core.schemas import DECISIONS


def _titles() -> dict[str, str]:
    from sphere_core.stages import stage_titles

    return stage_titles()


def summarize(routing: pd.DataFrame, pairs: pd.DataFrame, *, run_id: str,
              stages_run: list[str] | None = None) -> dict[str, Any]:
    """Counts per stage and decision, and pairs per stage / route / granularity."""
    stages: dict[str, dict[str, int]] = {}
    for stage in _titles():
        sub = routing[routing["stage"] == stage] if len(routing) else routing
        counts = sub["decision"].value_counts().to_dict() if len(sub) else {}
        stages[stage] = {"questions": len(sub), **{d: int(counts[d]) for d in DECISIONS if d in counts}}

    def counts(col: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in pairs[col].value_counts().items()} if len(pairs) else {}

    return {
        "run_id": run_id,
        "stages_run": stages_run or [s for s in stages if stages[s]["questions"]],
        "stages": stages,
        "pairs": {"total": len(pairs), "by_stage": counts("stage"), "by_route": counts("route"),
                  "by_granularity": counts("granularity")},
    }


def summary_table(routing: pd.DataFrame, pairs: pd.DataFrame, title: str = "SPHERE preference data"):
    """A rich Table: questions per stage, decisions, and pairs produced per stage."""
    from rich.table import Table

    s = summarize(routing, pairs, run_id="")
    table = Table(title=title)
    for col, justify in (("Stage", "left"), ("Questions", "right"), ("Decisions", "left"),
                         ("Pairs", "right")):
        table.add_column(col, justify=justify)
    by_stage = s["pairs"]["by_stage"]
    titles = _titles()
    for stage, label in titles.items():
        row = s["stages"][stage]
        decisions = ", ".join(f"{d} {row[d]}" for d in DECISIONS if d in row) or "-"
        table.add_row(label, str(row["questions"]), decisions, str(by_stage.get(stage, 0)))
    first = next(iter(titles))
    table.add_row("Total", str(s["stages"][first]["questions"]), "", str(s["pairs"]["total"]), style="bold")
    return table
