"""The report's table maths: plain ``pandas`` in, ``pandas`` or dicts out, no markdown.

Table 5 (decisions and pairs per stage), pairs per route, chosen paths finished by a completion
rollout, DPO summary numbers, evaluation per benchmark and model, example pairs.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sphere_core.evaluation import plots
from sphere_core.evaluation.report.markdown import last_content
from sphere_core.stages import decision_order

EVAL_METRICS = ("pass@1", "self_correction_acc", "flips_r2w", "flips_w2r")
DPO_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


def decision_text(counts: pd.Series, total: int) -> str:
    """``pair 3 (60%), unresolved 2 (40%)``: registry order, then unknown decisions by name."""
    if not total:
        return "–"
    return ", ".join(
        f"{d} {int(counts[d])} ({100 * counts[d] / total:.0f}%)"
        for d in decision_order(counts.index)
    )


def table5(routing: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Per stage (registry order): questions, decisions with fractions, pairs produced."""
    labels = plots.stage_labels(list(routing["stage"].dropna().unique()) if len(routing) else [])
    rows = []
    for stage, label in labels.items():
        sub = routing[routing["stage"] == stage] if len(routing) else routing
        n_pairs = int((pairs["stage"] == stage).sum()) if len(pairs) else 0
        if not len(sub) and not n_pairs:
            continue
        counts = sub["decision"].value_counts()
        rows.append(
            {
                "stage": label,
                "questions": len(sub),
                "decisions": decision_text(counts, len(sub)),
                "pairs": n_pairs,
            }
        )
    return pd.DataFrame(rows, columns=["stage", "questions", "decisions", "pairs"])


def pairs_by_route(pairs: pd.DataFrame) -> pd.DataFrame:
    """Pairs per stage x route x granularity, split into train and eval."""
    cols = ["stage", "route", "granularity", "train", "eval", "total"]
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    labels = plots.stage_labels(pairs["stage"].dropna().unique())
    order = {s: i for i, s in enumerate(labels)}
    frame = pairs.assign(split=pairs.get("split", "train"))
    grouped = (
        frame.fillna({"route": "–", "granularity": "–"})
        .groupby(["stage", "route", "granularity", "split"])
        .size()
        .unstack("split", fill_value=0)
    )
    rows = []
    for (stage, route, gran), counts in sorted(
        grouped.iterrows(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1:])
    ):
        train, evaluation = int(counts.get("train", 0)), int(counts.get("eval", 0))
        rows.append(
            {
                "stage": labels.get(stage, stage),
                "route": route,
                "granularity": gran,
                "train": train,
                "eval": evaluation,
                "total": train + evaluation,
            }
        )
    return pd.DataFrame(rows, columns=cols)


def chosen_completed(pairs: pd.DataFrame, completions: pd.DataFrame | None) -> pd.Series:
    """Per pair: True when its chosen text ends with a completion-rollout step of its question."""
    if pairs.empty or completions is None or completions.empty:
        return pd.Series(False, index=pairs.index, dtype=bool)
    tails: dict[str, list[str]] = {}
    for qid, text in zip(completions["question_id"], completions["text"]):
        if isinstance(text, str) and text.strip():
            tails.setdefault(str(qid), []).append(text.strip())
    flags = []
    for qid, chosen in zip(pairs["question_id"], pairs["chosen"]):
        text = last_content(chosen).strip()
        flags.append(any(text.endswith(t) for t in tails.get(str(qid), [])))
    return pd.Series(flags, index=pairs.index, dtype=bool)


def last_logged(history: list[dict], key: str) -> float | None:
    """The last non-None value of ``key`` in a Trainer log history."""
    for entry in reversed(history):
        if key in entry and entry[key] is not None:
            return entry[key]
    return None


def dpo_summary(train_log: dict | None) -> dict[str, Any]:
    """Final numbers of one DPO run (None where not logged); eval numbers when there are any."""
    if not train_log:
        return {}
    history = list(train_log.get("log_history") or [])
    metrics = dict(train_log.get("metrics") or {})
    evals = [h["eval_loss"] for h in history if h.get("eval_loss") is not None]

    def final(key: str) -> Any:
        for value in (
            metrics.get(f"eval_{key}"),
            last_logged(history, f"eval_{key}"),
            last_logged(history, key),
        ):
            if value is not None:
                return value
        return None

    return {
        "steps": metrics.get("global_step", last_logged(history, "step")),
        "final_train_loss": last_logged(history, "loss"),
        "final_eval_loss": metrics.get("eval_loss", last_logged(history, "eval_loss")),
        "lowest_eval_loss": metrics.get("best_eval_loss", min(evals) if evals else None),
        "final_margin": final("rewards/margins"),
        "accuracy": final("rewards/accuracies"),
    }


def _share(value: Any) -> float | None:
    return None if value is None else round(100 * float(value), 1)


def _count(value: Any) -> int | None:
    return None if value is None else int(value)


def evaluation_table(evaluations: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark and model: n, Pass@1 (%), after self-correction (%), flips."""
    cols = [
        "benchmark",
        "model",
        "n",
        "Pass@1 (%)",
        "after self-correction (%)",
        "right→wrong",
        "wrong→right",
    ]
    if evaluations.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (bench, label), group in evaluations.groupby(["benchmark", "model_label"], sort=False):
        got = {
            m: v
            for m, v in zip(group["metric"], group["value"])
            if m in EVAL_METRICS and pd.notna(v)
        }
        rows.append(
            {
                "benchmark": bench,
                "model": label,
                "n": int(group["n"].max()),
                "Pass@1 (%)": _share(got.get("pass@1")),
                "after self-correction (%)": _share(got.get("self_correction_acc")),
                "right→wrong": _count(got.get("flips_r2w")),
                "wrong→right": _count(got.get("flips_w2r")),
            }
        )
    order = {"base": 0, "trained": 1}
    rows.sort(key=lambda r: (r["benchmark"], order.get(r["model"], 2), r["model"]))
    return pd.DataFrame(rows, columns=cols)


def pass1(evaluations: pd.DataFrame, bench: str, label: str) -> tuple[float, int] | None:
    """(Pass@1, n) of one model on one benchmark, or None when not evaluated."""
    if evaluations.empty:
        return None
    row = evaluations[
        (evaluations["benchmark"] == bench)
        & (evaluations["model_label"] == label)
        & (evaluations["metric"] == "pass@1")
    ]
    if not len(row) or pd.isna(row["value"].iloc[-1]):
        return None
    return float(row["value"].iloc[-1]), int(row["n"].iloc[-1])


def example_pairs(pairs: pd.DataFrame) -> list[pd.Series]:
    """One pair per stage and route (registry order; a trajectory pair where there is one)."""
    if pairs.empty:
        return []
    labels = plots.stage_labels(pairs["stage"].dropna().unique())
    picked = []
    for stage in labels:
        sub = pairs[pairs["stage"] == stage]
        for route in dict.fromkeys(sub["route"].fillna("–")):
            group = sub[sub["route"].fillna("–") == route]
            trajectory = group[group["granularity"] == "trajectory"]
            picked.append((trajectory if len(trajectory) else group).iloc[0])
    return picked


def accuracy_rows(evaluations: list[dict]) -> list[dict]:
    """Flat rows (round, benchmark, model, metric, value, n) for a Prefect table artifact."""
    keys = ("benchmark", "model_label", "metric", "value", "n")
    return [{"round": e.get("round", 1), **{k: e.get(k) for k in keys}} for e in evaluations]
