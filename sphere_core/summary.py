"""Run summary: decision counts per stage and pairs per stage, as a dict and a rich Table.

Owns presentation of a generate round's outcome (the paper's Table-5 view); reads routing
and pair frames, writes nothing. Stage names and titles, and the order of the decisions, come
from the stage registry; a decision the registry does not know is shown after the known ones.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def _titles() -> dict[str, str]:
    from sphere_core.stages import stage_titles

    return stage_titles()


def _in_order(decisions) -> list[str]:
    """Registry order (``Stage.decisions``), then unregistered decisions by name: none dropped."""
    from sphere_core.stages import decision_order

    return decision_order(decisions)


def token_usage(trees: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Generated tokens per stage and for the run (``all``): total, per question, per pair.

    Tokens are the tree table's ``num_tokens`` (every generated node, either search strategy);
    per question divides by the questions the stage searched (``all``: by the questions of the
    first stage, i.e. of the run), per pair by the pairs the stage yielded. None where there is
    nothing to divide by, or the trees predate the ``num_tokens`` column.
    """

    def usage(tree: pd.DataFrame, questions: int, n_pairs: int) -> dict[str, Any]:
        known = "num_tokens" in tree.columns and tree["num_tokens"].notna().any()
        total = int(tree["num_tokens"].fillna(0).sum()) if known else None
        return {
            "total": total,
            "questions": questions,
            "pairs": n_pairs,
            "per_question": round(total / questions, 1) if known and questions else None,
            "per_pair": round(total / n_pairs, 1) if known and n_pairs else None,
        }

    out: dict[str, dict[str, Any]] = {}
    for stage in _titles():
        sub = trees[trees["stage"] == stage] if len(trees) else trees
        n_pairs = int((pairs["stage"] == stage).sum()) if len(pairs) else 0
        out[stage] = usage(sub, int(sub["question_id"].nunique()) if len(sub) else 0, n_pairs)
    first = next(iter(out))
    out["all"] = usage(trees, out[first]["questions"], len(pairs))
    return out


def summarize(
    routing: pd.DataFrame,
    pairs: pd.DataFrame,
    *,
    run_id: str,
    stages_run: list[str] | None = None,
    trees: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Counts per stage and decision, pairs per stage / route / granularity, and (with
    ``trees``) the generated tokens per stage (``token_usage``)."""
    stages: dict[str, dict[str, int]] = {}
    for stage in _titles():
        sub = routing[routing["stage"] == stage] if len(routing) else routing
        counts = sub["decision"].value_counts().to_dict() if len(sub) else {}
        stages[stage] = {"questions": len(sub), **{d: int(counts[d]) for d in _in_order(counts)}}

    def counts(col: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in pairs[col].value_counts().items()} if len(pairs) else {}

    return {
        "run_id": run_id,
        "stages_run": stages_run or [s for s in stages if stages[s]["questions"]],
        "stages": stages,
        "pairs": {
            "total": len(pairs),
            "by_stage": counts("stage"),
            "by_route": counts("route"),
            "by_granularity": counts("granularity"),
        },
        **({"tokens": token_usage(trees, pairs)} if trees is not None else {}),
    }


def summary_table(
    routing: pd.DataFrame,
    pairs: pd.DataFrame,
    title: str = "SPHERE preference data",
    trees: pd.DataFrame | None = None,
):
    """A rich Table: questions per stage, decisions, and pairs produced per stage; with ``trees``
    also the tokens generated (total, per question, per pair)."""
    from rich.table import Table

    s = summarize(routing, pairs, run_id="", trees=trees)
    table = Table(title=title)
    columns = [("Stage", "left"), ("Questions", "right"), ("Decisions", "left"), ("Pairs", "right")]
    if trees is not None:
        columns += [("Tokens", "right"), ("Tokens/question", "right"), ("Tokens/pair", "right")]
    for col, justify in columns:
        table.add_column(col, justify=justify)
    by_stage = s["pairs"]["by_stage"]
    titles = _titles()

    def tokens(key: str) -> list[str]:
        if trees is None:
            return []
        t = s["tokens"][key]
        return ["-" if t[k] is None else f"{t[k]:,}" for k in ("total", "per_question", "per_pair")]

    for stage, label in titles.items():
        row = s["stages"][stage]
        decisions = ", ".join(f"{d} {row[d]}" for d in _in_order(set(row) - {"questions"})) or "-"
        table.add_row(
            label, str(row["questions"]), decisions, str(by_stage.get(stage, 0)), *tokens(stage)
        )
    first = next(iter(titles))
    table.add_row(
        "Total",
        str(s["stages"][first]["questions"]),
        "",
        str(s["pairs"]["total"]),
        *tokens("all"),
        style="bold",
    )
    return table
