"""The run report: ``runs/<id>/report.md`` with PNG plots under ``runs/<id>/report/``.

Sections: the run's status and rounds (from the store); setup (policy, pi_small, PRM, DPO
settings; says when pi_small = pi or is a model of another family); then per round: routing
and pairs (the paper's Table 5: decisions per stage, pairs per stage x route x granularity,
dropped pair candidates, chosen paths finished by the completion rollout, a plot), search
rewards of chosen vs rejected, DPO (loss and implicit-reward margins by step from
``model/train_log.json``), evaluation (base vs trained per benchmark with n, self-correction
and flips, from the store) and one example pair per stage and route with its routing reason.
A run with more than one round gets a rounds section comparing them (routing fractions,
pairs per route, DPO final loss, Pass@1 per benchmark as a line plot, flips); its per-round
sections follow under "Round r" headings.

Round r's outputs are read through ``RunView(home, run_id, r)`` and the store rows with
``round == r``. A part that is missing or unreadable (no run view, no pairs, no training, no
evaluation yet, a damaged artifact) is stated where it would be; the report is still written.
Reads run files and the store; writes only ``report.md`` and ``report/*.png`` in the run dir.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from sphere_core.errors import SphereError
from sphere_core.evaluation import plots
from sphere_core.paths import run_dir
from sphere_core.schemas import DECISIONS, PAIR_COLUMNS, ROUTING_COLUMNS
from sphere_core.storage.run_outputs import VIEW_FILE, RunView

log = logging.getLogger(__name__)

REPORT_MD = "report.md"
REPORT_DIR = "report"
EVAL_METRICS = ("pass@1", "self_correction_acc", "flips_r2w", "flips_w2r")
DPO_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
PROMPT_CHARS, ANSWER_HEAD, ANSWER_TAIL = 800, 900, 500
_ROUND_DIR = re.compile(r"^round-(\d+)$")
_READ_ERRORS = (SphereError, OSError, ValueError, KeyError, TypeError)


# -- reading ------------------------------------------------------------------------------------
@dataclass
class RoundData:
    """What one round of a run left behind (empty frames for parts that do not exist)."""

    round: int
    dir: Path
    has_view: bool = False
    routing: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ROUTING_COLUMNS))
    routing_source: str = ""
    pairs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=[*PAIR_COLUMNS, "split"]))
    pairs_have_text: bool = True
    completions: pd.DataFrame | None = None  # tree rows with completion=True; None: not recorded
    summary: dict[str, Any] = field(default_factory=dict)
    train_log: dict[str, Any] | None = None
    evaluations: pd.DataFrame = field(default_factory=pd.DataFrame)
    problems: list[str] = field(default_factory=list)

    @property
    def has_data(self) -> bool:
        return bool(self.has_view or len(self.routing) or len(self.pairs) or self.train_log
                    or len(self.evaluations) or self.problems)


def _attempt(problems: list[str], what: str, fn: Callable[[], Any], default: Any) -> Any:
    """``fn()``, or ``default`` with a sentence in ``problems`` when it cannot be read."""
    try:
        return fn()
    except _READ_ERRORS as err:
        log.warning("report: cannot read %s: %s", what, err)
        problems.append(f"cannot read {what}: {err}")
        return default


def _store_rows(repo, run_id: str, problems: list[str]) -> dict[str, pd.DataFrame]:
    """Routing events, pairs and evaluations of every round (each with a ``round`` column)."""
    out: dict[str, pd.DataFrame] = {}
    for name, method in (("routes", "routes_for_run"), ("pairs", "pairs_for_run"),
                         ("evaluations", "evaluations_for_run")):
        reader = getattr(repo, method, None) if repo is not None else None
        frame = pd.DataFrame(_attempt(problems, f"the store's {name} of run {run_id}",
                                      lambda r=reader: r(run_id), [])) if reader else pd.DataFrame()
        if len(frame) and "round" not in frame.columns:
            frame["round"] = 1
        out[name] = frame
    return out


def _of_round(frame: pd.DataFrame, r: int) -> pd.DataFrame:
    if frame.empty or "round" not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame["round"].fillna(1).astype(int) == r].reset_index(drop=True)


def _completions(view: RunView) -> pd.DataFrame | None:
    """Completion-rollout steps of every stage (one stage's tree in memory at a time)."""
    frames = []
    for stage in view.stages():
        tree = view.tree(stage)
        if len(tree) and "completion" not in tree.columns:
            return None  # written before the completion column existed
        if len(tree):
            hit = tree["completion"].fillna(False).astype(bool)
            frames.append(tree.loc[hit, ["question_id", "stage", "path", "text"]])
    return (pd.concat(frames, ignore_index=True) if frames
            else pd.DataFrame(columns=["question_id", "stage", "path", "text"]))


def _read_pairs(data: RoundData, view: RunView) -> pd.DataFrame:
    parts = []
    for split in ("train", "eval"):
        path = view.pairs_path(split)
        if path.is_file():
            frame = _attempt(data.problems, str(path), lambda p=path: pd.read_parquet(p), pd.DataFrame())
            if len(frame):
                parts.append(frame.assign(split=split))
    return pd.concat(parts, ignore_index=True) if parts else data.pairs


def load_round(home: Path, run_id: str, r: int, store: dict[str, pd.DataFrame]) -> RoundData:
    """Round ``r``'s outputs from its run view, its model dir and the store rows of round ``r``."""
    view = RunView(home, run_id, r)
    data = RoundData(r, view.dir, has_view=view.exists)
    if data.has_view and _attempt(data.problems, f"the run view of round {r}",
                                  lambda: view.record, None) is None:
        data.has_view = False  # unreadable: said once; the store's rows stand in below
    if data.has_view:
        data.summary = view.summary()
        data.routing = _attempt(data.problems, f"the routing of round {r}", view.routing, data.routing)
        data.routing_source = "run view"
        data.completions = _attempt(data.problems, f"the search trees of round {r}",
                                    lambda: _completions(view), None)
    data.pairs = _read_pairs(data, view)
    routes, pairs = _of_round(store["routes"], r), _of_round(store["pairs"], r)
    if data.routing.empty and len(routes):
        data.routing, data.routing_source = routes, "store"
    if data.pairs.empty and len(pairs):
        data.pairs, data.pairs_have_text = pairs, False
    train_log = view.model_dir() / "train_log.json"
    if train_log.is_file():
        data.train_log = _attempt(data.problems, str(train_log), lambda: json.loads(train_log.read_text()), None)
    data.evaluations = _of_round(store["evaluations"], r)
    return data


def _rounds_on_disk(home: Path, run_id: str) -> set[int]:
    base = run_dir(home, run_id)
    found = {1} if (base / VIEW_FILE).is_file() or (base / "model" / "train_log.json").is_file() else set()
    if base.is_dir():
        for child in base.iterdir():
            match = _ROUND_DIR.match(child.name)
            if match and child.is_dir():
                found.add(int(match.group(1)))
    return found


# -- formatting ---------------------------------------------------------------------------------
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


def _pct(value: Any) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * float(value):.1f}%"


def _num(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and pd.isna(value)) else f"{float(value):.4g}"


def _heading(level: int, text: str) -> str:
    return "#" * level + " " + text


def _messages(value: Any) -> list[dict]:
    if value is None or isinstance(value, str):
        return [{"role": "assistant", "content": value or ""}]
    try:
        return [dict(m) for m in list(value)]
    except (TypeError, ValueError):
        return []


def _last_content(value: Any, role: str | None = None) -> str:
    for message in reversed(_messages(value)):
        if role is None or message.get("role") == role:
            return str(message.get("content") or "")
    return ""


def _clip(text: str, head: int, tail: int = 0) -> str:
    """``text`` cut in the middle when longer than ``head + tail`` characters (says how much)."""
    text = text.strip()
    if len(text) <= head + tail + 40:
        return text
    cut = len(text) - head - tail
    return text[:head].rstrip() + f"\n[... {cut} characters omitted ...]\n" + (text[-tail:].lstrip() if tail else "")


def _fenced(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


# -- figures ------------------------------------------------------------------------------------
@dataclass
class Figures:
    """Where PNGs go and which were written (the others in ``report/`` are stale)."""

    run: Path
    prefix: str = ""
    written: list[Path] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        return self.run / REPORT_DIR

    def draw(self, name: str, alt: str, fn: Callable[[Path], Path]) -> list[str]:
        """Markdown for the plot ``fn`` writes to ``report/<prefix><name>.png`` (a note if it fails)."""
        path = self.dir / f"{self.prefix}{name}.png"
        try:
            fn(path)
        except (ValueError, TypeError, KeyError, OSError) as err:
            log.warning("report: plot %s failed: %s", path, err)
            return [f"_The plot {path.name} could not be drawn: {err}_", ""]
        self.written.append(path)
        return [f"![{alt}]({path.relative_to(self.run).as_posix()})", ""]

    def remove_stale(self) -> None:
        keep = set(self.written)
        for png in self.dir.glob("*.png"):
            if png not in keep:
                png.unlink(missing_ok=True)


# -- header and setup --------------------------------------------------------------------------
def _header(run_id: str, record: dict | None, planned: int, reached: int) -> list[str]:
    lines = [f"# SPHERE run report: `{run_id}`", ""]
    if record is None:
        lines += [f"Run status: **unknown** (no run record in the store); rounds found on disk: {reached}.",
                  f"Report generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.", ""]
        return lines
    status = str(record.get("status") or "unknown")
    lines += [(f"Run status: **{status}** · rounds reached: **{reached} of {planned}** · "
              f"kind: {record.get('kind', '?')} · report generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC."), ""]
    if status in ("running", "pending"):
        lines += [(f"> The store still says **{status}**: either the run is in progress or it stopped without "
                  "updating its record. The sections below show the parts that exist now."), ""]
    elif status in ("failed", "cancelled"):
        lines += [f"> The run was **{status}**" + (f": {record['error']}" if record.get("error") else "")
                  + ". The sections below show the parts it finished"
                  + (" (`sphere resume` continues a cancelled run)." if status == "cancelled" else "."), ""]
    return lines


def _model_family(path: str, home: Path) -> tuple[str, str] | None:
    """(how it was found, family) of a model path, or None when it cannot be told offline.

    Embedded models are named by their title (``Qwen2.5``, ``SmolLM2``); local Hugging Face
    dirs by ``model_type`` in their config.json. Families are only compared within one kind.
    """
    from sphere_core.backends.embedded import EMBEDDED_MODELS

    if path in EMBEDDED_MODELS:
        return "title", EMBEDDED_MODELS[path].title.split("-")[0].lower()
    config = Path(path).expanduser() / "config.json"
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return ("model_type", str(model_type)) if model_type else None


def _describe_model(path: str | None) -> str:
    from sphere_core.backends.embedded import EMBEDDED_MODELS

    if path is None:
        return "?"
    model = EMBEDDED_MODELS.get(path)
    return f"`{path}` ({model.title})" if model else f"`{path}`"


def _setup_section(config: dict | None, home: Path) -> list[str]:
    out = ["## Setup", ""]
    if not config:
        return out + ["_No run record in the store: the configuration is unknown._", ""]
    models = config.get("models") or {}
    policy = (models.get("policy") or {}).get("path", "?")
    small_spec = models.get("small")
    small = (small_spec or {}).get("path") if small_spec else None
    prm = config.get("prm") or {}
    tr = config.get("training") or {}
    prm_model = (prm.get("model") or {}).get("path") if prm.get("model") else None
    out += [
        f"- Policy π: {_describe_model(policy)}",
        f"- π_small (the diversity stage's model): {_describe_model(small or policy)}",
        f"- PRM: `{prm.get('kind', '?')}`"
        + (f" on {_describe_model(prm_model)}" if prm_model else " (on the policy model)"),
        (f"- DPO: β={tr.get('beta')}, lr={tr.get('learning_rate')}, warmup={tr.get('warmup_ratio')}, "
         f"epochs={tr.get('num_epochs')}, max_steps={tr.get('max_steps')}, "
         f"LoRA r={tr.get('lora_r')}/α={tr.get('lora_alpha')}/dropout={tr.get('lora_dropout')}"),
    ]
    evo = config.get("evolution") or {}
    if int(evo.get("rounds") or 1) > 1:
        out.append(f"- Self-evolution: {evo.get('rounds')} rounds; questions per round: "
                   f"{evo.get('question_schedule', 'same')} schedule; π_small "
                   + ("follows the trained policy" if evo.get("evolve_small") else "stays as configured"))
    if small is None or small == policy:
        out += ["", ("> **Note:** π_small = π in this run (models.small is not set or equals the policy "
                f"{_describe_model(policy)}), so the diversity stage's negatives come from sampling more "
                "candidates with the same model, not from a smaller model as in the paper.")]
    else:
        fam_p, fam_s = _model_family(policy, home), _model_family(small, home)
        if fam_p and fam_s and fam_p[0] == fam_s[0] and fam_p[1] != fam_s[1]:
            out += ["", (f"> **Note:** π_small is a weaker model of another family, not a smaller sibling as "
                    f"in the paper (π: {fam_p[1]}, π_small: {fam_s[1]}). Its wrong answers are still "
                    "verified wrong, but they are another family's mistakes rather than a smaller π's.")]
    return out + [""]


# -- routing and pairs (Table 5) -----------------------------------------------------------------
def _decision_text(counts: pd.Series, total: int) -> str:
    order = [d for d in DECISIONS if d in counts.index] + sorted(d for d in counts.index if d not in DECISIONS)
    return ", ".join(f"{d} {int(counts[d])} ({100 * counts[d] / total:.0f}%)" for d in order) if total else "–"


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
        rows.append({"stage": label, "questions": len(sub), "decisions": _decision_text(counts, len(sub)),
                     "pairs": n_pairs})
    return pd.DataFrame(rows, columns=["stage", "questions", "decisions", "pairs"])


def pairs_by_route(pairs: pd.DataFrame) -> pd.DataFrame:
    """Pairs per stage x route x granularity, split into train and eval."""
    cols = ["stage", "route", "granularity", "train", "eval", "total"]
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    labels = plots.stage_labels(pairs["stage"].dropna().unique())
    order = {s: i for i, s in enumerate(labels)}
    frame = pairs.assign(split=pairs.get("split", "train"))
    grouped = (frame.fillna({"route": "–", "granularity": "–"})
               .groupby(["stage", "route", "granularity", "split"]).size().unstack("split", fill_value=0))
    rows = []
    for (stage, route, gran), counts in sorted(grouped.iterrows(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1:])):
        train, evaluation = int(counts.get("train", 0)), int(counts.get("eval", 0))
        rows.append({"stage": labels.get(stage, stage), "route": route, "granularity": gran,
                     "train": train, "eval": evaluation, "total": train + evaluation})
    return pd.DataFrame(rows, columns=cols)


def chosen_completed(pairs: pd.DataFrame, completions: pd.DataFrame) -> pd.Series:
    """Per pair: True when its chosen text ends with a completion-rollout step of its question."""
    if pairs.empty or completions is None or completions.empty:
        return pd.Series(False, index=pairs.index, dtype=bool)
    tails: dict[str, list[str]] = {}
    for qid, text in zip(completions["question_id"], completions["text"]):
        if isinstance(text, str) and text.strip():
            tails.setdefault(str(qid), []).append(text.strip())
    flags = []
    for qid, chosen in zip(pairs["question_id"], pairs["chosen"]):
        text = _last_content(chosen).strip()
        flags.append(any(text.endswith(t) for t in tails.get(str(qid), [])))
    return pd.Series(flags, index=pairs.index, dtype=bool)


def _completion_lines(data: RoundData) -> list[str]:
    out = [("**Completion rollouts.** A path that reached `search.max_depth` (or was cut) without a final "
            "answer is finished by one unbranched rollout. A pair's chosen path counts as finished by a "
            "rollout when it ends with a rollout step of its question from any stage (a stage may pair a "
            "path an earlier stage found)."), ""]
    if data.completions is None:
        return out + [("_Not recorded for this round (no run view, or its trees predate the `completion` "
                      "column)._"), ""]
    if not data.pairs_have_text and len(data.pairs):
        return out + [("_The pair texts are not on disk (only the store's pair rows), so chosen paths cannot "
                      "be matched to rollouts._"), ""]
    flags = chosen_completed(data.pairs, data.completions)
    stages = list(data.completions["stage"].dropna().unique()) + (
        list(data.pairs["stage"].dropna().unique()) if len(data.pairs) else [])
    rows = []
    for stage, label in plots.stage_labels(stages).items():
        rollouts = int((data.completions["stage"] == stage).sum())
        in_stage = (data.pairs["stage"] == stage) if len(data.pairs) else pd.Series(dtype=bool)
        n_pairs = int(in_stage.sum())
        if not rollouts and not n_pairs:
            continue
        rows.append({"stage": label, "completion rollouts (tree rows)": rollouts, "pairs": n_pairs,
                     "chosen paths finished by a rollout": int(flags[in_stage].sum()) if n_pairs else 0})
    if not rows:
        return out + ["No stage ran a completion rollout in this round.", ""]
    return out + [_md_table(pd.DataFrame(rows)), ""]


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
    table = (frame.fillna({"stage": "?", "reason": "?"}).groupby(["stage", "reason"]).size()
             .reset_index(name="candidates"))
    table["stage"] = table["stage"].map(lambda s: labels.get(s, s))
    return [f"**Dropped pair candidates: {len(frame)}** (they broke a pair invariant and were not trained on):",
            "", _md_table(table), ""]


def _routing_section(data: RoundData, figs: Figures, level: int) -> list[str]:
    out = [_heading(level, "Routing and preference pairs (Table 5 view)"), ""]
    if data.routing.empty and data.pairs.empty:
        why = ("the run view has no routing rows" if data.has_view
               else "the generate stages have not run (no run view and no routing events in the store)")
        return out + [f"_No routing records for this round: {why}._", ""]
    if data.routing_source == "store":
        out += ["_Routing read from the store (the run view is missing)._", ""]
    table = table5(data.routing, data.pairs)
    first = next(iter(plots.stage_labels()), None)
    n_questions = int((data.routing["stage"] == first).sum()) if len(data.routing) else 0
    out += [_md_table(table), "",
            f"Questions searched: **{n_questions}**; preference pairs: **{len(data.pairs)}**"
            + (f" ({int((data.pairs['split'] == 'train').sum())} train, {int((data.pairs['split'] == 'eval').sum())} eval)."
               if "split" in data.pairs and len(data.pairs) else "."), ""]
    if len(data.pairs):
        out += ["Pairs per stage and route:", "", _md_table(pairs_by_route(data.pairs)), ""]
    else:
        dropped = len(data.summary.get("dropped_pairs") or [])
        out += [("**No preference pairs** in this round: "
                 + (f"all {dropped} pair candidate(s) were dropped (below)." if dropped else
                    "no routing decision produced a pair (no question had both a verified-right and a "
                    "verified-wrong finished solution).")), ""]
    out += _dropped_lines(data)
    out += _completion_lines(data)
    if len(data.routing):
        decisions = pd.crosstab(data.routing["stage"], data.routing["decision"])
        by_stage = data.pairs["stage"].value_counts().to_dict() if len(data.pairs) else {}
        out += figs.draw("routing", "routing per stage",
                         lambda p: plots.routing_plot(decisions, by_stage, p))
    return out


def _reward_section(data: RoundData, figs: Figures, level: int) -> list[str]:
    out = [_heading(level, "Search rewards of chosen vs rejected"), ""]
    pairs = data.pairs
    if pairs.empty:
        return out + ["_No preference pairs in this round._", ""]
    labels = plots.stage_labels(pairs["stage"].dropna().unique())
    rows = []
    for stage in (s for s in labels if s in set(pairs["stage"])):
        sub = pairs[pairs["stage"] == stage]
        rows.append({"stage": labels[stage], "pairs": len(sub), "reward_chosen": sub["reward_chosen"].mean(),
                     "reward_rejected": sub["reward_rejected"].mean()})
    stats = pd.DataFrame(rows)
    stats = stats.rename(columns={"reward_chosen": "mean reward chosen", "reward_rejected": "mean reward rejected"})
    out += [_md_table(stats), ""]
    return out + figs.draw("rewards", "search rewards of chosen vs rejected",
                           lambda p: plots.reward_plot(pairs, p))


# -- DPO ----------------------------------------------------------------------------------------
def _last(history: list[dict], key: str) -> float | None:
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
        for value in (metrics.get(f"eval_{key}"), _last(history, f"eval_{key}"), _last(history, key)):
            if value is not None:
                return value
        return None

    return {
        "steps": metrics.get("global_step", _last(history, "step")),
        "final_train_loss": _last(history, "loss"),
        "final_eval_loss": metrics.get("eval_loss", _last(history, "eval_loss")),
        "lowest_eval_loss": metrics.get("best_eval_loss", min(evals) if evals else None),
        "final_margin": final("rewards/margins"),
        "accuracy": final("rewards/accuracies"),
    }


def _dpo_section(data: RoundData, figs: Figures, level: int) -> list[str]:
    out = [_heading(level, "DPO training"), ""]
    train_log = data.train_log
    if not train_log:
        if data.pairs.empty:
            return out + ["DPO skipped: no pairs (this round produced no preference pairs to train on).", ""]
        return out + [(f"_DPO has not run for this round: `{data.dir.name}/model/train_log.json` is missing "
                      f"although {len(data.pairs)} pairs exist (training not started, still running, or failed)._"), ""]
    history = list(train_log.get("log_history") or [])
    metrics = dict(train_log.get("metrics") or {})
    columns = {"train (last logged step)": lambda k: _last(history, k),
               "eval (last logged)": lambda k: _last(history, f"eval_{k}"),
               "eval (kept adapter)": lambda k: metrics.get(f"eval_{k}")}
    rows = [{"metric": k, **{c: fn(k) for c, fn in columns.items()}} for k in DPO_KEYS]
    table = pd.DataFrame(rows)
    table = table[["metric"] + [c for c in columns if table[c].notna().any()]]
    table = table[table.drop(columns="metric").notna().any(axis=1)]
    facts = [f"{k}={metrics[k]}" for k in ("n_train", "n_eval", "global_step", "train_runtime", "device", "bf16")
             if k in metrics]
    out += [_md_table(table) if len(table) else "_The training log has no loss or reward entries._", ""]
    if facts:
        out += ["Run: " + ", ".join(facts) + (f"; mean train loss over the run {_num(metrics['train_loss'])}"
                                              if "train_loss" in metrics else "") + ".", ""]
    summary = dpo_summary(train_log)
    if summary.get("accuracy") is not None:
        out += [(f"Implicit-reward accuracy at the end: **{_num(summary['accuracy'])}** (the share of pairs whose "
                "chosen solution gets a higher DPO implicit reward β·log(π/π_ref) than the rejected one; "
                "0.5 is chance)."), ""]
    best = train_log.get("best_checkpoint")
    out += [f"Kept checkpoint: `{best}` (lowest eval loss)." if best
            else "No eval split: the final adapter is kept (no lowest-eval-loss selection).", ""]
    if any("loss" in h or "eval_loss" in h for h in history):
        out += figs.draw("loss", "DPO loss by step", lambda p: plots.loss_plot(history, p))
    if any(k.startswith(("rewards/", "eval_rewards/")) for h in history for k in h):
        out += figs.draw("margins", "DPO reward margins by step", lambda p: plots.margin_plot(history, p))
    return out


# -- evaluation ---------------------------------------------------------------------------------
def _share(value: Any) -> float | None:
    return None if value is None else round(100 * float(value), 1)


def _count(value: Any) -> int | None:
    return None if value is None else int(value)


def evaluation_table(evaluations: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark and model: n, Pass@1 (%), after self-correction (%), flips."""
    cols = ["benchmark", "model", "n", "Pass@1 (%)", "after self-correction (%)", "right→wrong", "wrong→right"]
    if evaluations.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (bench, label), group in evaluations.groupby(["benchmark", "model_label"], sort=False):
        got = {m: v for m, v in zip(group["metric"], group["value"]) if m in EVAL_METRICS and pd.notna(v)}
        rows.append({"benchmark": bench, "model": label, "n": int(group["n"].max()),
                     "Pass@1 (%)": _share(got.get("pass@1")),
                     "after self-correction (%)": _share(got.get("self_correction_acc")),
                     "right→wrong": _count(got.get("flips_r2w")), "wrong→right": _count(got.get("flips_w2r"))})
    order = {"base": 0, "trained": 1}
    rows.sort(key=lambda r: (r["benchmark"], order.get(r["model"], 2), r["model"]))
    return pd.DataFrame(rows, columns=cols)


def _pass1(evaluations: pd.DataFrame, bench: str, label: str) -> tuple[float, int] | None:
    if evaluations.empty:
        return None
    row = evaluations[(evaluations["benchmark"] == bench) & (evaluations["model_label"] == label)
                      & (evaluations["metric"] == "pass@1")]
    if not len(row) or pd.isna(row["value"].iloc[-1]):
        return None
    return float(row["value"].iloc[-1]), int(row["n"].iloc[-1])


def _evaluation_section(data: RoundData, figs: Figures, level: int) -> list[str]:
    out = [_heading(level, "Evaluation (base vs trained)"), ""]
    ev = data.evaluations
    if ev.empty:
        return out + ["_No evaluation recorded for this round: run `sphere evaluate --run <id>`._", ""]
    out += [_md_table(evaluation_table(ev)), ""]
    for bench in dict.fromkeys(ev["benchmark"]):
        base, trained = _pass1(ev, bench, "base"), _pass1(ev, bench, "trained")
        if base and trained:
            delta = 100 * (trained[0] - base[0])
            n = min(base[1], trained[1])
            out.append(f"- {bench}: Pass@1 {_pct(base[0])} → {_pct(trained[0])} ({delta:+.1f} points; n={n}, "
                       f"so one question is {100 / max(n, 1):.1f} points).")
        elif base:
            out.append(f"- {bench}: base Pass@1 {_pct(base[0])} (n={base[1]}); the trained model was not evaluated.")
        elif trained:
            out.append(f"- {bench}: trained Pass@1 {_pct(trained[0])} (n={trained[1]}); no base evaluation.")
    out.append("")
    acc = ev[ev["metric"].isin(["pass@1", "self_correction_acc"])]
    if len(acc):
        out += figs.draw("accuracy", "accuracy per benchmark", lambda p: plots.accuracy_plot(acc, p))
    return out


# -- example pairs ------------------------------------------------------------------------------
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


def _reason(routing: pd.DataFrame, question_id: Any, stage: Any) -> str | None:
    if routing.empty:
        return None
    hit = routing[(routing["question_id"] == question_id) & (routing["stage"] == stage)]
    return str(hit["reason"].iloc[0]) if len(hit) and hit["reason"].iloc[0] else None


def _prompt_lines(prompt: Any) -> list[str]:
    """The prompt's last user message, preceded by the problem (first user message) when the
    prompt has more than one user turn (the correction stage's prompt ends with its instruction)."""
    users = [m for m in _messages(prompt) if m.get("role") == "user"]
    if not users:
        return ["Prompt: _no user message_", ""]
    out = []
    if len(users) > 1:
        out += ["Problem (first user message):", "", _fenced(_clip(str(users[0].get("content") or ""), PROMPT_CHARS)),
                ""]
    return out + ["Prompt (last user message):", "",
                  _fenced(_clip(str(users[-1].get("content") or ""), PROMPT_CHARS)), ""]


def _examples_section(data: RoundData, level: int) -> list[str]:
    out = [_heading(level, "Example pairs (one per stage and route)"), ""]
    if data.pairs.empty:
        return out + ["_No preference pairs in this round._", ""]
    if not data.pairs_have_text:
        return out + ["_The pair texts are not on disk (only the store's pair rows): no examples._", ""]
    labels = plots.stage_labels(data.pairs["stage"].dropna().unique())
    for pair in example_pairs(data.pairs):
        reason = _reason(data.routing, pair["question_id"], pair["stage"])
        out += [(f"**{labels.get(pair['stage'], pair['stage'])} · {pair['route']}** ({pair['granularity']}, "
                f"{pair.get('split', 'train')} split): question `{pair['question_id']}`, gold "
                f"`{_fmt(pair['gold_answer'])}`; chosen answer `{_fmt(pair['answer_chosen'])}` "
                f"(search reward {_num(pair['reward_chosen'])}), rejected answer `{_fmt(pair['answer_rejected'])}` "
                f"(search reward {_num(pair['reward_rejected'])})."), "",
                f"Why: {reason}" if reason else "Why: _no routing reason recorded for this question._", "",
                "<details><summary>Prompt (last user message), chosen and rejected</summary>", "",
                *_prompt_lines(pair["prompt"]),
                "Chosen:", "", _fenced(_clip(_last_content(pair["chosen"]), ANSWER_HEAD, ANSWER_TAIL)), "",
                "Rejected:", "", _fenced(_clip(_last_content(pair["rejected"]), ANSWER_HEAD, ANSWER_TAIL)), "",
                "</details>", ""]
    return out


# -- rounds -------------------------------------------------------------------------------------
def _rounds_section(rounds: list[RoundData], planned: int, figs: Figures) -> list[str]:
    total = max(planned, max((d.round for d in rounds), default=1))
    reached = [d for d in rounds if d.has_data]
    out = ["## Self-evolution rounds", "",
           f"Rounds with outputs: **{len(reached)} of {total}**"
           + (f" ({', '.join(str(d.round) for d in reached)})" if reached else "")
           + ". Round r > 1 searches with the model DPO trained in round r-1 and trains the next one from it.", ""]
    missing = [r for r in range(1, total + 1) if r not in {d.round for d in reached}]
    if missing:
        out += [f"_No outputs for round(s) {', '.join(map(str, missing))}: not reached (yet)._", ""]

    out += ["### Routing per round (Table 5 view)", ""]
    rows = [{"round": d.round, **row} for d in rounds for row in table5(d.routing, d.pairs).to_dict("records")]
    out += [_md_table(pd.DataFrame(rows)) if rows else "_No routing in any round._", ""]

    out += ["### Pairs per route per round", ""]
    rows = [{"round": d.round, **row} for d in rounds for row in pairs_by_route(d.pairs).to_dict("records")]
    empty = [str(d.round) for d in reached if d.pairs.empty]
    out += [_md_table(pd.DataFrame(rows)) if rows else "_No pairs in any round._", ""]
    if empty and rows:
        out += [f"No pairs in round(s) {', '.join(empty)}.", ""]

    out += ["### DPO per round", ""]
    rows = []
    for d in reached:
        s = dpo_summary(d.train_log)
        rows.append({"round": d.round, "pairs": len(d.pairs),
                     "DPO": "trained" if d.train_log else ("skipped: no pairs" if d.pairs.empty else "not run"),
                     "steps": s.get("steps"), "final train loss": s.get("final_train_loss"),
                     "final eval loss": s.get("final_eval_loss"), "lowest eval loss": s.get("lowest_eval_loss"),
                     "final margin": s.get("final_margin"), "implicit-reward accuracy": s.get("accuracy")})
    out += [_md_table(pd.DataFrame(rows)) if rows else "_No round reached DPO._", ""]

    out += ["### Pass@1 per round", ""]
    out += _pass1_rounds(reached, total, figs)

    out += ["### Self-correction flips per round", ""]
    rows = [{"round": d.round, **row} for d in reached for row in evaluation_table(d.evaluations).to_dict("records")]
    flips = pd.DataFrame(rows)
    if len(flips):
        flips = flips[["round", "benchmark", "model", "n", "after self-correction (%)", "right→wrong", "wrong→right"]]
    out += [_md_table(flips) if len(flips) else "_No evaluation in any round._", ""]
    return out


def _pass1_rounds(reached: list[RoundData], total: int, figs: Figures) -> list[str]:
    benches = list(dict.fromkeys(b for d in reached if len(d.evaluations) for b in d.evaluations["benchmark"]))
    if not benches:
        return ["_No evaluation in any round._", ""]
    first = next((d for d in reached if d.round == 1), None)
    points: dict[str, list[tuple[int, float, int]]] = {b: [] for b in benches}
    rows = []
    for bench in benches:
        row = {"benchmark": bench}
        base = _pass1(first.evaluations, bench, "base") if first is not None else None
        row["base π₁ (round 1)"] = f"{_pct(base[0])} (n={base[1]})" if base else "–"
        if base:
            points[bench].append((0, 100 * base[0], base[1]))
        for r in range(1, total + 1):
            d = next((x for x in reached if x.round == r), None)
            trained = _pass1(d.evaluations, bench, "trained") if d is not None else None
            row[f"round {r} trained"] = f"{_pct(trained[0])} (n={trained[1]})" if trained else "–"
            if trained:
                points[bench].append((r, 100 * trained[0], trained[1]))
        rows.append(row)
    out = [_md_table(pd.DataFrame(rows)), ""]
    if any(points.values()):
        out += figs.draw("rounds", "Pass@1 per round", lambda p: plots.rounds_plot(points, total, p))
    return out


# -- the report ---------------------------------------------------------------------------------
def _round_sections(data: RoundData, figs: Figures, level: int) -> list[str]:
    out = []
    if data.problems:
        out += ["> **Unreadable parts:** " + "; ".join(data.problems), ""]
    for section in (_routing_section, _reward_section, _dpo_section, _evaluation_section):
        out += section(data, figs, level)
    return out + _examples_section(data, level)


def build_report(run_id: str, home: Path, repo=None) -> Path:
    """Write ``runs/<run_id>/report.md`` (+ PNGs) from whatever parts of the run exist."""
    home = Path(home)
    run = run_dir(home, run_id)
    problems: list[str] = []
    record = _attempt(problems, f"the store record of run {run_id}", lambda: repo.get_run(run_id), None) \
        if repo is not None else None
    config = (record or {}).get("config") or None
    store = _store_rows(repo if record else None, run_id, problems)
    found = _rounds_on_disk(home, run_id)
    for frame in store.values():
        if len(frame):
            found |= {int(r) for r in frame["round"].fillna(1)}
    planned = int((record or {}).get("rounds") or ((config or {}).get("evolution") or {}).get("rounds") or 1)
    last = max([int((record or {}).get("round") or 1), *found, 1])
    rounds = [load_round(home, run_id, r, store) for r in range(1, last + 1)]
    reached = max([d.round for d in rounds if d.has_data], default=0)
    if record is not None and record.get("round"):
        reached = max(reached, int(record["round"]))
    multi = planned > 1 or last > 1

    figs = Figures(run)
    lines = _header(run_id, record, max(planned, last), reached)
    if problems:
        lines += ["> **Unreadable parts:** " + "; ".join(problems), ""]
    lines += _setup_section(config, home)
    if not multi:
        lines += _round_sections(rounds[0], figs, level=2)
    else:
        lines += _rounds_section(rounds, planned, figs)
        for data in rounds:
            figs.prefix = f"round-{data.round}-"
            lines += [f"## Round {data.round}", ""]
            if not data.has_data:
                lines += [f"_Round {data.round} left no outputs (not reached, or stopped before generating)._", ""]
                continue
            lines += _round_sections(data, figs, level=3)
    run.mkdir(parents=True, exist_ok=True)
    figs.remove_stale()
    path = run / REPORT_MD
    tmp = path.with_name(f".{REPORT_MD}.tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    tmp.replace(path)
    return path


def accuracy_rows(evaluations: list[dict]) -> list[dict]:
    """Flat rows (round, benchmark, model, metric, value, n) for a Prefect table artifact."""
    return [{"round": e.get("round", 1), **{k: e.get(k) for k in ("benchmark", "model_label", "metric", "value", "n")}}
            for e in evaluations]
