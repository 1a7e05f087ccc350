"""The report's PNG plots (matplotlib ``Figure`` objects on the Agg canvas; no pyplot state).

Each function takes plain data, writes one PNG and returns its path. Stage labels come from
the stage registry (:func:`stage_labels`), decision colours from it too
(:func:`decision_colors`). Owns looks only: what is plotted is decided by the report's sections
(``sphere_core/evaluation/report/sections/``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
DPI = 120


def stage_labels(present: Iterable[str] = ()) -> dict[str, str]:
    """Stage name -> title for every registered stage (run order), then any other ``present``
    name as itself (a stage a newer or older version wrote)."""
    from sphere_core.stages import stage_titles

    labels = dict(stage_titles())
    for name in present:
        labels.setdefault(str(name), str(name))
    return labels


def decision_colors(present: Iterable[str] = ()) -> dict[str, str | None]:
    """Decision -> colour: the registry's decisions in order (``Stage.decisions``), then any
    other ``present`` decision (None: matplotlib's next colour)."""
    from sphere_core.stages import all_decisions, decision_order

    registered = all_decisions()
    names = decision_order([*registered, *present])
    return {d: registered[d].color if d in registered else None for d in names}


def _two_line(title: str) -> str:
    """``Stage 1 (self-generation)`` -> ``Stage 1\\n(self-generation)`` for narrow tick labels."""
    return title.replace(" (", "\n(", 1)


def _figure(width: float = 7.0, height: float = 4.2):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _tidy(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)


def _step_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.margins(x=0.08)


def routing_plot(decisions: pd.DataFrame, pairs_per_stage: Mapping[str, int], path: Path) -> Path:
    """Left: stacked decisions per stage (questions). Right: preference pairs per stage.

    ``decisions``: stage x decision counts (``pd.crosstab``).
    """
    labels = stage_labels(list(decisions.index) + list(pairs_per_stage))
    stages = [s for s in labels if s in decisions.index or pairs_per_stage.get(s)]
    ticks = [_two_line(labels[s]) for s in stages]
    fig = _figure(9.5, 4.2)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[3, 2])
    bottom = [0] * len(stages)
    colors = decision_colors(decisions.columns)
    for decision in (d for d in colors if d in decisions.columns):
        values = [int(decisions.at[s, decision]) if s in decisions.index else 0 for s in stages]
        if not any(values):
            continue
        bars = ax1.bar(
            ticks, values, bottom=bottom, label=decision, color=colors[decision], edgecolor="white"
        )
        ax1.bar_label(
            bars, labels=[str(v) if v else "" for v in values], label_type="center", fontsize=8
        )
        bottom = [b + v for b, v in zip(bottom, values)]
    ax1.set_title("Routing decisions per stage")
    ax1.set_ylabel("questions")
    ax1.legend(fontsize=8, loc="upper right", frameon=False)
    ax1.set_ylim(0, max(bottom + [1]) * 1.25)
    counts = [int(pairs_per_stage.get(s, 0)) for s in stages]
    bars = ax2.bar(ticks, counts, color="#2ca02c")
    ax2.bar_label(bars, fontsize=8)
    ax2.set_title(f"Preference pairs per stage (total {sum(counts)})")
    ax2.set_ylim(0, max(counts + [1]) * 1.2)
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelsize=8)
        _tidy(ax)
    return _save(fig, path)


def accuracy_plot(summary: pd.DataFrame, path: Path) -> Path:
    """Grouped bars: per benchmark, each model label's Pass@1 and self-correction accuracy (%).

    ``summary``: rows with benchmark, model_label, metric, value (a share) and n.
    """
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
            vals = []
            for b in benchmarks:
                row = sub[(sub["model_label"] == label) & (sub["benchmark"] == b)]
                known = len(row) and pd.notna(row["value"].iloc[-1])
                vals.append(100 * float(row["value"].iloc[-1]) if known else 0.0)
            xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(benchmarks))]
            bars = ax.bar(xs, vals, width, label=label, color=palette[j % len(palette)])
            ax.bar_label(bars, labels=[f"{v:.1f}" for v in vals], fontsize=7, padding=1)
        ns = {
            b: int(sub[sub["benchmark"] == b]["n"].max()) if (sub["benchmark"] == b).any() else 0
            for b in benchmarks
        }
        ax.set_xticks(range(len(benchmarks)), [f"{b}\n(n={ns[b]})" for b in benchmarks], fontsize=8)
        ax.set_ylim(0, 110)
        ax.set_ylabel("accuracy (%)")
        ax.set_title("Pass@1" if metric == "pass@1" else "After self-correction (turn 2)")
        _tidy(ax)
    axes[0].legend(fontsize=8, frameon=False, loc="upper left")
    return _save(fig, path)


def _series(log_history: Sequence[dict], key: str) -> list[tuple[float, float]]:
    return [
        (h["step"], h[key]) for h in log_history if key in h and "step" in h and h[key] is not None
    ]


def loss_plot(log_history: Sequence[dict], path: Path) -> Path:
    """DPO loss per optimizer step: training loss and eval loss (with the lowest eval marked)."""
    fig = _figure(7.0, 4.0)
    ax = fig.subplots()
    train, evals = _series(log_history, "loss"), _series(log_history, "eval_loss")
    if train:
        ax.plot(*zip(*train), marker="o", markersize=3, label="train loss", color="#1f77b4")
    if evals:
        ax.plot(*zip(*evals), marker="s", markersize=5, label="eval loss", color="#ff7f0e")
        best = min(evals, key=lambda se: se[1])
        ax.annotate(
            f"lowest {best[1]:.3f}",
            best,
            textcoords="offset points",
            xytext=(0, 8),
            fontsize=8,
            ha="center",
        )
    ax.axhline(0.6931, color="#7f7f7f", linestyle=":", linewidth=1, label="log 2 (untrained)")
    _step_axis(ax)
    ax.set_ylabel("DPO loss")
    ax.set_title("DPO loss")
    ax.legend(fontsize=8, frameon=False)
    _tidy(ax)
    return _save(fig, path)


def margin_plot(log_history: Sequence[dict], path: Path) -> Path:
    """DPO implicit rewards per step. Left: ``rewards/margins`` (train, eval). Right:
    ``rewards/chosen`` vs ``rewards/rejected`` (train solid, eval dashed)."""
    fig = _figure(10.0, 4.0)
    ax1, ax2 = fig.subplots(1, 2)
    for prefix, style, marker in (("", "-", "o"), ("eval_", "--", "s")):
        split = "eval" if prefix else "train"
        margins = _series(log_history, f"{prefix}rewards/margins")
        if margins:
            ax1.plot(
                *zip(*margins),
                linestyle=style,
                marker=marker,
                markersize=3,
                label=f"{split} margin",
                color="#9467bd",
            )
        for side, color in (("chosen", "#2ca02c"), ("rejected", "#d62728")):
            points = _series(log_history, f"{prefix}rewards/{side}")
            if points:
                ax2.plot(
                    *zip(*points),
                    linestyle=style,
                    marker=marker,
                    markersize=3,
                    label=f"{split} {side}",
                    color=color,
                )
    evals = _series(log_history, "eval_rewards/accuracies")
    accuracy, split = (
        (evals, "eval") if evals else (_series(log_history, "rewards/accuracies"), "train")
    )
    title = "Reward margin (chosen - rejected)"
    if accuracy:
        title += f"; final {split} accuracy {accuracy[-1][1]:.2f}"
    ax1.set_title(title, fontsize=10)
    ax2.set_title("Implicit reward of chosen vs rejected", fontsize=10)
    for ax in (ax1, ax2):
        ax.axhline(0.0, color="#7f7f7f", linestyle=":", linewidth=1)
        _step_axis(ax)
        ax.set_ylabel("β·log(π/π_ref)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, frameon=False)
        _tidy(ax)
    return _save(fig, path)


def reward_plot(pairs: pd.DataFrame, path: Path) -> Path:
    """Histograms of the search reward of chosen vs rejected solutions, one panel per stage."""
    labels = stage_labels(pairs["stage"].dropna().unique())
    stages = [s for s in labels if s in set(pairs["stage"])] or ["all"]
    fig = _figure(3.4 * len(stages) + 0.6, 3.8)
    axes = fig.subplots(1, len(stages), squeeze=False, sharey=True)[0]
    values = pd.concat([pairs["reward_chosen"], pairs["reward_rejected"]]).dropna()
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    bins = [lo + (hi - lo) * i / 20 for i in range(21)]
    for ax, stage in zip(axes, stages):
        sub = pairs if stage == "all" else pairs[pairs["stage"] == stage]
        for side, color in (("chosen", "#2ca02c"), ("rejected", "#d62728")):
            ax.hist(sub[f"reward_{side}"].dropna(), bins=bins, alpha=0.6, label=side, color=color)
        ax.set_title(f"{labels.get(stage, stage)} (n={len(sub)})", fontsize=9)
        ax.set_xlabel("search reward (Eq. 3)")
        _tidy(ax)
    axes[0].set_ylabel("pairs")
    axes[0].legend(fontsize=8, frameon=False)
    fig.suptitle("Search rewards of chosen vs rejected solutions", fontsize=10)
    return _save(fig, path)


def rounds_plot(
    points: Mapping[str, Sequence[tuple[int, float, int]]], rounds: int, path: Path
) -> Path:
    """Pass@1 (%) per benchmark across self-evolution rounds, one line per benchmark.

    ``points``: benchmark -> [(x, pass@1 %, n)], x = 0 for the base policy of round 1 and
    x = r for the model trained in round r.
    """
    fig = _figure(max(6.0, 1.4 * rounds + 3.5), 4.2)
    ax = fig.subplots()
    for i, (bench, series) in enumerate(points.items()):
        series = sorted(series)
        if not series:
            continue
        xs, ys, ns = zip(*series)
        ax.plot(xs, ys, marker="o", label=f"{bench} (n={max(ns)})", color=PALETTE[i % len(PALETTE)])
        for x, y in zip(xs, ys):
            ax.annotate(
                f"{y:.1f}",
                (x, y),
                textcoords="offset points",
                xytext=(0, 6),
                fontsize=7,
                ha="center",
            )
    ticks = ["base\n(π₁)"] + [f"round {r}\n(trained)" for r in range(1, rounds + 1)]
    ax.set_xticks(range(rounds + 1), ticks, fontsize=8)
    ax.set_xlim(-0.3, rounds + 0.3)
    ax.set_ylim(0, 105)
    ax.set_ylabel("Pass@1 (%)")
    ax.set_title("Pass@1 per self-evolution round")
    ax.legend(fontsize=8, frameon=False)
    _tidy(ax)
    return _save(fig, path)
