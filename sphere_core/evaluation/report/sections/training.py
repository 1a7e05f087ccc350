"""Per-round section on DPO: loss and implicit-reward numbers from ``model/train_log.json``,
the kept checkpoint, loss and margin plots."""

from __future__ import annotations

import pandas as pd

from sphere_core.evaluation import plots
from sphere_core.evaluation.report.loading import RoundData
from sphere_core.evaluation.report.markdown import Figures, heading, md_table, num
from sphere_core.evaluation.report.tables import DPO_KEYS, dpo_summary, last_logged

_RUN_FACTS = ("n_train", "n_eval", "global_step", "train_runtime", "device", "bf16")


def _not_trained(data: RoundData) -> list[str]:
    if data.pairs.empty:
        return ["DPO skipped: no pairs (this round produced no preference pairs to train on).", ""]
    return [
        (
            f"_DPO has not run for this round: `{data.dir.name}/model/train_log.json` is "
            f"missing although {len(data.pairs)} pairs exist (training not started, still "
            "running, or failed)._"
        ),
        "",
    ]


def _metric_table(history: list[dict], metrics: dict) -> pd.DataFrame:
    columns = {
        "train (last logged step)": lambda k: last_logged(history, k),
        "eval (last logged)": lambda k: last_logged(history, f"eval_{k}"),
        "eval (kept adapter)": lambda k: metrics.get(f"eval_{k}"),
    }
    rows = [{"metric": k, **{c: fn(k) for c, fn in columns.items()}} for k in DPO_KEYS]
    table = pd.DataFrame(rows)
    table = table[["metric"] + [c for c in columns if table[c].notna().any()]]
    return table[table.drop(columns="metric").notna().any(axis=1)]


def dpo(data: RoundData, figs: Figures, level: int) -> list[str]:
    """The DPO run of this round (or why there is none)."""
    out = [heading(level, "DPO training"), ""]
    train_log = data.train_log
    if not train_log:
        return out + _not_trained(data)
    history = list(train_log.get("log_history") or [])
    metrics = dict(train_log.get("metrics") or {})
    table = _metric_table(history, metrics)
    out += [
        md_table(table) if len(table) else "_The training log has no loss or reward entries._",
        "",
    ]
    facts = [f"{k}={metrics[k]}" for k in _RUN_FACTS if k in metrics]
    if facts:
        out += [
            "Run: "
            + ", ".join(facts)
            + (
                f"; mean train loss over the run {num(metrics['train_loss'])}"
                if "train_loss" in metrics
                else ""
            )
            + ".",
            "",
        ]
    summary = dpo_summary(train_log)
    if summary.get("accuracy") is not None:
        out += [
            (
                f"Implicit-reward accuracy at the end: **{num(summary['accuracy'])}** (the share "
                "of pairs whose chosen solution gets a higher DPO implicit reward β·log(π/π_ref) "
                "than the rejected one; 0.5 is chance)."
            ),
            "",
        ]
    best = train_log.get("best_checkpoint")
    out += [
        f"Kept checkpoint: `{best}` (lowest eval loss)."
        if best
        else "No eval split: the final adapter is kept (no lowest-eval-loss selection).",
        "",
    ]
    if any("loss" in h or "eval_loss" in h for h in history):
        out += figs.draw("loss", "DPO loss by step", lambda p: plots.loss_plot(history, p))
    if any(k.startswith(("rewards/", "eval_rewards/")) for h in history for k in h):
        out += figs.draw(
            "margins", "DPO reward margins by step", lambda p: plots.margin_plot(history, p)
        )
    return out
