"""The run report: ``runs/<id>/report.md`` with PNG plots under ``runs/<id>/report/``.

Sections: setup (models; says when pi_small = pi), routing per stage and pairs per stage
(the paper's Table 5), reward distributions of chosen vs rejected, DPO training (loss
curves from ``model/train_log.json``), and evaluation (base vs trained per benchmark: Pass@1,
self-correction, flips, from the store). A part that is missing (no pairs, no training, no
evaluation yet) is stated in its section; the report is still written.

Reads run files and the store; writes only under the run dir.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from sphere_core.evaluation import plots
from sphere_core.paths import run_dir

log = logging.getLogger(__name__)

REPORT_MD = "report.md"
REPORT_DIR = "report"
EVAL_METRICS = ("pass@1", "self_correction_acc", "flips_r2w", "flips_w2r")


def _read_parquets(paths: list[Path]) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in paths if p.is_file()]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_routing(run: Path, repo, run_id: str) -> pd.DataFrame:
    routing = _read_parquets(sorted((run / "routing").glob("stage*.parquet")))
    if routing.empty and repo is not None:
        routing = pd.DataFrame(repo.routes_for_run(run_id))
    return routing


def load_pairs(run: Path) -> pd.DataFrame:
    parts = []
    for split in ("train", "eval"):
        df = _read_parquets([run / "pairs" / f"{split}.parquet"])
        if len(df):
            parts.append(df.assign(split=split))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def load_train_log(run: Path) -> dict[str, Any] | None:
    path = run / "model" / "train_log.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as err:
        log.warning("unreadable %s: %s", path, err)
        return None


def _md_table(df: pd.DataFrame) -> str:
    """A GitHub markdown table (no tabulate dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _setup_section(config: dict | None) -> list[str]:
    out = ["## Setup", ""]
    if not config:
        return out + ["_No run record in the store: the configuration is unknown._", ""]
    models = config.get("models", {})
    policy = (models.get("policy") or {}).get("path", "?")
    small = (models.get("small") or {}).get("path") if models.get("small") else None
    prm = config.get("prm", {})
    tr = config.get("training", {})
    out += [
        f"- Policy π: `{policy}`",
        f"- π_small (Stage 3): `{small or policy}`",
        f"- PRM: `{prm.get('kind', '?')}`"
        + (f" on `{(prm.get('model') or {}).get('path')}`" if prm.get("model") else " (on the policy model)"),
        (f"- DPO: β={tr.get('beta')}, lr={tr.get('learning_rate')}, warmup={tr.get('warmup_ratio')}, "
        f"epochs={tr.get('num_epochs')}, max_steps={tr.get('max_steps')}, "
        f"LoRA r={tr.get('lora_r')}/α={tr.get('lora_alpha')}/dropout={tr.get('lora_dropout')}"),
    ]
    if small is None or small == policy:
        out += ["", "> **Note:** π_small = π in this run "
                + ("(the embedded SmolLM2-135M default: no smaller SmolLM2 is available offline)"
                   if policy == "embedded" else "(models.small is not set or equals the policy)")
                + ", so Stage 3 diversity comes from sampling 2E candidates with the same model."]
    return out + [""]


def _routing_section(routing: pd.DataFrame, pairs: pd.DataFrame, fig_dir: Path, run: Path) -> list[str]:
    from sphere_core.summary import summarize

    out = ["## Routing and preference pairs (Table 5 view)", ""]
    if routing.empty:
        return out + ["_No routing records yet: the generate stages have not run for this run._", ""]
    summary = summarize(routing, pairs if len(pairs) else pd.DataFrame(columns=["stage", "route", "granularity"]),
                        run_id=run.name)
    decisions = pd.crosstab(routing["stage"], routing["decision"])
    rows = []
    for stage, label in plots.STAGE_NAMES.items():
        info = summary["stages"][stage]
        if not info["questions"]:
            continue
        detail = ", ".join(f"{k}: {v}" for k, v in info.items() if k != "questions")
        rows.append({"stage": label.replace("\n", " "), "questions": info["questions"],
                     "decisions": detail, "pairs": summary["pairs"]["by_stage"].get(stage, 0)})
    out += [_md_table(pd.DataFrame(rows)), "",
            (f"Total preference pairs: **{summary['pairs']['total']}** "
            f"(by route: {summary['pairs']['by_route'] or '{}'}; "
            f"by granularity: {summary['pairs']['by_granularity'] or '{}'})."), ""]
    png = plots.routing_plot(decisions, summary["pairs"]["by_stage"], fig_dir / "routing.png")
    out += [f"![routing per stage]({png.relative_to(run)})", ""]
    return out


def _reward_section(pairs: pd.DataFrame, fig_dir: Path, run: Path) -> list[str]:
    out = ["## Rewards of chosen vs rejected", ""]
    if pairs.empty:
        return out + ["_No preference pairs yet (pairs/train.parquet is missing or empty)._", ""]
    stats = (pairs.groupby("stage")[["reward_chosen", "reward_rejected"]].mean().reset_index()
             .rename(columns={"reward_chosen": "mean reward chosen", "reward_rejected": "mean reward rejected"}))
    stats.insert(1, "pairs", pairs.groupby("stage").size().values)
    png = plots.reward_plot(pairs, fig_dir / "rewards.png")
    return out + [_md_table(stats), "", f"![reward distributions]({png.relative_to(run)})", ""]


def _training_section(train_log: dict | None, fig_dir: Path, run: Path) -> list[str]:
    out = ["## DPO training", ""]
    if not train_log:
        return out + ["_No training yet (model/train_log.json is missing): run `sphere train`._", ""]
    metrics = train_log.get("metrics", {})
    history = train_log.get("log_history", [])
    keys = ["n_train", "n_eval", "global_step", "train_loss", "best_eval_loss", "eval_loss",
            "eval_rewards/accuracies", "eval_rewards/margins", "train_runtime", "device", "bf16"]
    rows = [{"metric": k, "value": metrics[k]} for k in keys if k in metrics]
    out += [_md_table(pd.DataFrame(rows)) if rows else "_No metrics recorded._", ""]
    best = train_log.get("best_checkpoint")
    out += [f"Kept checkpoint: `{best}` (lowest eval loss)." if best
            else "No eval split: the final adapter is kept (no lowest-eval-loss selection).", ""]
    if any("loss" in h or "eval_loss" in h for h in history):
        png = plots.loss_plot(history, fig_dir / "loss.png")
        out += [f"![DPO loss]({png.relative_to(run)})", ""]
    return out


def _evaluation_section(evaluations: list[dict], fig_dir: Path, run: Path) -> tuple[list[str], pd.DataFrame]:
    out = ["## Evaluation (base vs trained)", ""]
    df = pd.DataFrame(evaluations)
    if df.empty:
        return out + ["_No evaluation recorded yet: run `sphere evaluate --run <id>`._", ""], df
    wide = df.pivot_table(index=["benchmark", "model_label"], columns="metric", values="value", aggfunc="last")
    n = df.groupby(["benchmark", "model_label"])["n"].max()
    table = wide.reindex(columns=[m for m in EVAL_METRICS if m in wide.columns]).assign(n=n).reset_index()
    for col in ("pass@1", "self_correction_acc"):
        if col in table:
            table[col] = (100 * table[col]).round(1)
    table = table.rename(columns={"pass@1": "Pass@1 (%)", "self_correction_acc": "after self-correction (%)",
                                  "flips_r2w": "right→wrong", "flips_w2r": "wrong→right"})
    out += [_md_table(table), ""]
    acc = df[df["metric"].isin(["pass@1", "self_correction_acc"])]
    if len(acc):
        png = plots.accuracy_plot(acc, fig_dir / "accuracy.png")
        out += [f"![accuracy]({png.relative_to(run)})", ""]
    return out, table


def build_report(run_id: str, home: Path, repo=None) -> Path:
    """Write ``runs/<run_id>/report.md`` (+ PNGs) from whatever parts of the run exist."""
    run = run_dir(Path(home), run_id)
    fig_dir = run / REPORT_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    record = repo.get_run(run_id) if repo is not None else None
    routing = load_routing(run, repo, run_id)
    pairs = load_pairs(run)
    evaluations = repo.evaluations_for_run(run_id) if (repo is not None and record) else []
    lines = [f"# SPHERE run report: `{run_id}`", "",
             f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC}"
             + (f"; run status: **{record['status']}**" if record else "") + ".", ""]
    lines += _setup_section(record.get("config") if record else None)
    lines += _routing_section(routing, pairs, fig_dir, run)
    lines += _reward_section(pairs, fig_dir, run)
    lines += _training_section(load_train_log(run), fig_dir, run)
    eval_lines, _ = _evaluation_section(evaluations, fig_dir, run)
    lines += eval_lines
    path = run / REPORT_MD
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path


def accuracy_rows(evaluations: list[dict]) -> list[dict]:
    """Flat rows (benchmark, model, metric, value, n) for a Prefect table artifact."""
    return [{k: e.get(k) for k in ("benchmark", "model_label", "metric", "value", "n")} for e in evaluations]
