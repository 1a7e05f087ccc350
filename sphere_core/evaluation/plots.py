"""The report's PNG plots (matplotlib ``Figure`` objects on the Agg canvas; no pyplot state).

Each function takes plain data, writes one PNG and returns its path. Owns looks only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

STAGE_NAMES = {"stage1": "Stage 1\nself-generation", "stage2": "Stage 2\nself-correction",
               "stage3": "Stage 3\ndiversity"}
DECISION_COLORS = {
    "pair": "#2ca02c", "pair_inverted": "#98df8a", "to_correction": "#ff7f0e",
    "to_diversity": "#1f77b4", "unresolved": "#d62728", "no_error": "#9467bd",
    "error": "#7f7f7f", "skipped": "#c7c7c7",
}
DPI = 120


def _figure(width: float = 7.0, height: float = 4.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def routing_plot(decisions: pd.DataFrame, pairs_per_stage: dict[str, int], path: Path) -> Path:
    """Left: stacked decisions per stage (questions). Right: preference pairs per stage."""
    fig = _figure(9.5, 4.2)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[3, 2])
    stages = [s for s in STAGE_NAMES if s in decisions.index] or list(STAGE_NAMES)
    labels = [STAGE_NAMES[s] for s in stages]
    bottom = [0] * len(stages)
    for decision in decisions.columns:
        values = [int(decisions.at[s, decision]) if s in decisions.index else 0 for s in stages]
        if not any(values):
            continue
        bars = ax1.bar(labels, values, bottom=bottom, label=decision,
                       color=DECISION_COLORS.get(decision, None), edgecolor="white")
        ax1.bar_label(bars, labels=[str(v) if v else "" for v in values], label_type="center", fontsize=8)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax1.set_title("Routing decisions per stage")
    ax1.set_ylabel("questions")
    ax1.legend(fontsize=8, loc="upper right", frameon=False)
    ax1.set_ylim(0, max(bottom + [1]) * 1.25)
    counts = [int(pairs_per_stage.get(s, 0)) for s in STAGE_NAMES]
    bars = ax2.bar([STAGE_NAMES[s] for s in STAGE_NAMES], counts, color="#2ca02c")
    ax2.bar_label(bars, fontsize=8)
    ax2.set_title(f"Preference pairs per stage (total {sum(counts)})")
    ax2.set_ylim(0, max(counts + [1]) * 1.2)
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def accuracy_plot(summary: pd.DataFrame, path: Path) -> Path:
    """Grouped bars: per benchmark, each model label's Pass@1 and self-correction accuracy (%)."""
    metrics = [m for m in ("pass@1", "self_correction_acc") if m in set(summary["metric"])]
    fig = _figure(max(6.0, 2.2 * len(metrics) + 1.6 * summary["benchmark"].nunique()), 4.2)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    labels = list(dict.fromkeys(summary["model_label"]))
    benchmarks = list(dict.fromkeys(summary["benchmark"]))
    width = 0.8 / max(1, len(labels))
    palette = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"]
    for ax, metric in zip(axes, metrics):
        sub = summary[summary["metric"] == metric]
        for j, label in enumerate(labels):
            vals, ns = [], []
            for b in benchmarks:
                row = sub[(sub["model_label"] == label) & (sub["benchmark"] == b)]
                vals.append(100 * float(row["value"].iloc[-1]) if len(row) else 0.0)
                ns.append(int(row["n"].iloc[-1]) if len(row) else 0)
            xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(benchmarks))]
            bars = ax.bar(xs, vals, width, label=label, color=palette[j % len(palette)])
            ax.bar_label(bars, labels=[f"{v:.1f}" for v in vals], fontsize=7, padding=1)
        ax.set_xticks(range(len(benchmarks)), benchmarks, fontsize=8)
        ax.set_ylim(0, 110)
        ax.set_ylabel("accuracy (%)")
        ax.set_title("Pass@1" if metric == "pass@1" else "After self-correction (turn 2)")
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(fontsize=8, frameon=False, loc="upper left")
    return _save(fig, path)


def loss_plot(log_history: Sequence[dict], path: Path) -> Path:
    """DPO loss per optimizer step: training loss and eval loss (with the best eval marked)."""
    fig = _figure(7.0, 4.0)
    ax = fig.subplots()
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    if train:
        ax.plot(*zip(*train), marker="o", markersize=3, label="train loss", color="#1f77b4")
    if evals:
        ax.plot(*zip(*evals), marker="s", markersize=5, label="eval loss", color="#ff7f0e")
        best = min(evals, key=lambda se: se[1])
        ax.annotate(f"best {best[1]:.3f}", best, textcoords="offset points", xytext=(6, 8), fontsize=8)
    ax.axhline(0.6931, color="#7f7f7f", linestyle=":", linewidth=1, label="log 2 (untrained)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("DPO loss")
    ax.set_title("DPO training loss")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def reward_plot(pairs: pd.DataFrame, path: Path) -> Path:
    """Histograms of the search reward of chosen vs rejected solutions, one panel per stage."""
    stages = [s for s in STAGE_NAMES if s in set(pairs["stage"])] or ["all"]
    fig = _figure(3.4 * len(stages) + 0.6, 3.8)
    axes = fig.subplots(1, len(stages), squeeze=False, sharey=True)[0]
    values = pd.concat([pairs["reward_chosen"], pairs["reward_rejected"]]).dropna()
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    bins = [lo + (hi - lo) * i / 20 for i in range(21)]
    for ax, stage in zip(axes, stages):
        sub = pairs if stage == "all" else pairs[pairs["stage"] == stage]
        ax.hist(sub["reward_chosen"].dropna(), bins=bins, alpha=0.6, label="chosen", color="#2ca02c")
        ax.hist(sub["reward_rejected"].dropna(), bins=bins, alpha=0.6, label="rejected", color="#d62728")
        ax.set_title(f"{STAGE_NAMES.get(stage, stage).replace(chr(10), ' ')} (n={len(sub)})", fontsize=9)
        ax.set_xlabel("reward (Eq. 3)")
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("pairs")
    axes[0].legend(fontsize=8, frameon=False)
    fig.suptitle("Rewards of chosen vs rejected solutions", fontsize=10)
    return _save(fig, path)
