"""Per-round sections on the generated data: routing and preference pairs (the paper's
Table 5, dropped pair candidates, chosen paths finished by a completion rollout, a plot) and
the search rewards of chosen vs rejected."""

from __future__ import annotations

import pandas as pd

from sphere_core.evaluation import plots
from sphere_core.evaluation.report.loading import RoundData
from sphere_core.evaluation.report.markdown import Figures, heading, md_table
from sphere_core.evaluation.report.tables import chosen_completed, pairs_by_route, table5


def _completion_lines(data: RoundData) -> list[str]:
    out = [
        (
            "**Completion rollouts.** A path that reached `search.max_depth` (or was cut) "
            "without a final answer is finished by one unbranched rollout. A pair's chosen path "
            "counts as finished by a rollout when it ends with a rollout step of its question "
            "from any stage (a stage may pair a path an earlier stage found)."
        ),
        "",
    ]
    if data.completions is None:
        return out + [
            (
                "_Not recorded for this round (no run view, or its trees predate the "
                "`completion` column)._"
            ),
            "",
        ]
    if not data.pairs_have_text and len(data.pairs):
        return out + [
            (
                "_The pair texts are not on disk (only the store's pair rows), so chosen "
                "paths cannot be matched to rollouts._"
            ),
            "",
        ]
    flags = chosen_completed(data.pairs, data.completions)
    stages = list(data.completions["stage"].dropna().unique()) + (
        list(data.pairs["stage"].dropna().unique()) if len(data.pairs) else []
    )
    rows = []
    for stage, label in plots.stage_labels(stages).items():
        rollouts = int((data.completions["stage"] == stage).sum())
        in_stage = (data.pairs["stage"] == stage) if len(data.pairs) else pd.Series(dtype=bool)
        n_pairs = int(in_stage.sum())
        if not rollouts and not n_pairs:
            continue
        rows.append(
            {
                "stage": label,
                "completion rollouts (tree rows)": rollouts,
                "pairs": n_pairs,
                "chosen paths finished by a rollout": int(flags[in_stage].sum()) if n_pairs else 0,
            }
        )
    if not rows:
        return out + ["No stage ran a completion rollout in this round.", ""]
    return out + [md_table(pd.DataFrame(rows)), ""]


def _dropped_lines(data: RoundData) -> list[str]:
    if not data.has_view:
        return []
    dropped = data.summary.get("dropped_pairs")
    if dropped is None:
        return ["_The run view does not list dropped pair candidates._", ""]
    if not dropped:
        return ["No pair candidate was dropped (every candidate met the pair invariants).", ""]
    frame = pd.DataFrame(dropped).reindex(columns=["question_id", "stage", "reason"])
    labels = plots.stage_labels(frame["stage"].dropna().unique())
    table = (
        frame.fillna({"stage": "?", "reason": "?"})
        .groupby(["stage", "reason"])
        .size()
        .reset_index(name="candidates")
    )
    table["stage"] = table["stage"].map(lambda s: labels.get(s, s))
    return [
        (
            f"**Dropped pair candidates: {len(frame)}** (they broke a pair invariant and were "
            "not trained on):"
        ),
        "",
        md_table(table),
        "",
    ]


def _pair_count_lines(data: RoundData) -> list[str]:
    first = next(iter(plots.stage_labels()), None)
    n_questions = int((data.routing["stage"] == first).sum()) if len(data.routing) else 0
    pairs = data.pairs
    split = (
        f" ({int((pairs['split'] == 'train').sum())} train, "
        f"{int((pairs['split'] == 'eval').sum())} eval)."
        if "split" in pairs and len(pairs)
        else "."
    )
    out = [f"Questions searched: **{n_questions}**; preference pairs: **{len(pairs)}**" + split, ""]
    if len(pairs):
        return out + ["Pairs per stage and route:", "", md_table(pairs_by_route(pairs)), ""]
    dropped = len(data.summary.get("dropped_pairs") or [])
    return out + [
        (
            "**No preference pairs** in this round: "
            + (
                f"all {dropped} pair candidate(s) were dropped (below)."
                if dropped
                else "no routing decision produced a pair (no question had both a "
                "verified-right and a verified-wrong finished solution)."
            )
        ),
        "",
    ]


def _token_lines(data: RoundData) -> list[str]:
    """Tokens generated: per question, per pair, total (either search strategy)."""
    if data.tokens is None:
        return []
    t = data.tokens["all"]

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:,.0f}"

    stages = [
        f"{label} {num(data.tokens[s]['per_question'])}"
        for s, label in plots.stage_labels().items()
        if data.tokens.get(s, {}).get("questions")
    ]
    return [
        (
            f"Tokens generated: per question {num(t['per_question'])}, per pair "
            f"{num(t['per_pair'])}, total {num(t['total'])}"
            + (f" (per question searched: {'; '.join(stages)})." if stages else ".")
        ),
        "",
    ]


def _legend_lines(routing: pd.DataFrame) -> list[str]:
    """What each stage does (``Stage.summary``) and what its decisions mean (``Decision.title``),
    for the stages in this round's routing; decisions the registry does not know are named."""
    from sphere_core.stages import all_decisions, all_stages, decision_order

    present = set(routing["stage"].dropna()) if len(routing) else set()
    known = all_decisions()
    out = []
    for stage in (s for s in all_stages() if s.name in present):
        seen = routing.loc[routing["stage"] == stage.name, "decision"].dropna()
        names = decision_order([d.name for d in stage.decisions] + list(seen))
        meaning = "; ".join(
            f"`{d}`: {known[d].title}" if d in known else f"`{d}`: not registered" for d in names
        )
        out.append(f"- **{stage.title}**: {stage.summary} Decisions: {meaning}.")
    if not out:
        return []
    return [
        "<details><summary>What the stages and their decisions mean</summary>",
        "",
        *out,
        "",
        "</details>",
        "",
    ]


def routing(data: RoundData, figs: Figures, level: int) -> list[str]:
    """Table 5: decisions and pairs per stage, pairs per route, dropped and completed paths."""
    out = [heading(level, "Routing and preference pairs (Table 5 view)"), ""]
    if data.routing.empty and data.pairs.empty:
        why = (
            "the run view has no routing rows"
            if data.has_view
            else "the generate stages have not run (no run view and no routing events in the store)"
        )
        return out + [f"_No routing records for this round: {why}._", ""]
    if data.routing_source == "store":
        out += ["_Routing read from the store (the run view is missing)._", ""]
    out += [md_table(table5(data.routing, data.pairs)), ""]
    out += _legend_lines(data.routing)
    out += _pair_count_lines(data)
    out += _token_lines(data)
    out += _dropped_lines(data)
    out += _completion_lines(data)
    if len(data.routing):
        decisions = pd.crosstab(data.routing["stage"], data.routing["decision"])
        by_stage = data.pairs["stage"].value_counts().to_dict() if len(data.pairs) else {}
        out += figs.draw(
            "routing", "routing per stage", lambda p: plots.routing_plot(decisions, by_stage, p)
        )
    return out


def rewards(data: RoundData, figs: Figures, level: int) -> list[str]:
    """Mean search reward of the chosen and the rejected side per stage, with a plot."""
    out = [heading(level, "Search rewards of chosen vs rejected"), ""]
    pairs = data.pairs
    if pairs.empty:
        return out + ["_No preference pairs in this round._", ""]
    labels = plots.stage_labels(pairs["stage"].dropna().unique())
    rows = []
    for stage in (s for s in labels if s in set(pairs["stage"])):
        sub = pairs[pairs["stage"] == stage]
        rows.append(
            {
                "stage": labels[stage],
                "pairs": len(sub),
                "mean reward chosen": sub["reward_chosen"].mean(),
                "mean reward rejected": sub["reward_rejected"].mean(),
            }
        )
    out += [md_table(pd.DataFrame(rows)), ""]
    return out + figs.draw(
        "rewards", "search rewards of chosen vs rejected", lambda p: plots.reward_plot(pairs, p)
    )
