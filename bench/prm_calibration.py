"""Calibration of the search reward: which PRM and which Eq. 3 terms make Sol_max the right path.

Over the first N questions of ``builtin:gsm8k_tune`` (GSM8K-train, disjoint from the demo, the
study set and every benchmark), each *variant* runs Stage 1 the way the pipeline does
(``stages.runner.run_stage`` with the demo preset's search settings: E=3, depth 3, completion
rollout) with its own PRM kind and reward terms steering the search, and is measured with
``sphere_core.calibration``:

* ``sol_max_right_share``: pair / (pair + pair_inverted) among its contrastive questions
  (steered: the search ran with this variant's reward);
* ``auroc``: AUROC of the path reward for final-answer correctness over every finished path of
  its tree, with ``auroc_routed`` over the two routed paths only;
* ``rescored``: the AUROC of the *same* finished paths re-scored with the PRM term only
  (``prm``), the advantage term only (``adv``) and both (``eq3``) from the stored PRM scores and
  log-probs (not steered: same paths, other reward);
* ``s_per_question``: Stage-1 wall seconds / N (model loading excluded).

A variant is ``KIND:TERMS``: KIND a CPU PRM (``judge``, ``mc-rollout``, ``outcome``, ``random``),
TERMS ``eq3`` (Eq. 3: PRM + advantage), ``prm`` or ``adv``. Each variant's tree and routing are
written under ``--out`` so the figures can be recomputed. Progress goes to stderr; ONE JSON
object is printed LAST on stdout.

    python bench/prm_calibration.py --quick
    python bench/prm_calibration.py --questions 24 --variants judge:eq3,judge:prm,outcome:prm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_VARIANTS = (
    "judge:eq3",
    "judge:prm",
    "judge:adv",
    "outcome:prm",
    "outcome:eq3",
    "random:prm",
    "mc-rollout:prm",
)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def variant_overrides(variant: str, args) -> list[str]:
    from sphere_core.calibration import TERMS

    kind, _, terms = variant.partition(":")
    if terms not in TERMS:
        raise SystemExit(f"variant {variant!r}: terms must be one of {', '.join(TERMS)}")
    use_prm, use_adv = TERMS[terms]
    out = [f"prm.kind={kind}", f"reward.use_prm={use_prm}", f"reward.use_advantage={use_adv}"]
    if kind == "mc-rollout":
        out += [f"prm.mc_rollouts={args.mc_rollouts}", f"prm.mc_max_tokens={args.mc_max_tokens}"]
    return out


def run_variant(variant: str, args, home: Path, out: Path) -> dict:
    import pandas as pd

    from sphere_core.calibration import TERMS, calibrate
    from sphere_core.config import resolve_config
    from sphere_core.data.ingest import ingest_file
    from sphere_core.search.pruned import SearchStats
    from sphere_core.stages.runner import run_stage

    n = (
        args.questions
        if not variant.startswith("mc-rollout")
        else min(args.questions, args.mc_questions)
    )
    cfg = resolve_config(
        preset="demo",
        overrides=[
            "data.path=builtin:gsm8k_tune",
            f"data.limit={n}",
            *variant_overrides(variant, args),
        ],
    )
    questions = ingest_file(cfg.data.path, cfg.data).questions.head(n)
    golds = {str(q): str(a) for q, a in zip(questions["question_id"], questions["answer"])}
    trees, routings, wall, stats = [], [], 0.0, SearchStats()
    run_id = f"calib-{variant.replace(':', '-')}"
    for start in range(0, n, args.chunk):
        chunk = questions.iloc[start : start + args.chunk]
        t0 = time.perf_counter()
        res = run_stage("stage1", cfg, chunk, None, run_id=run_id, home=home, stats=stats)
        wall += time.perf_counter() - t0
        trees.append(res.tree)
        routings.append(res.routing)
        pd.concat(trees, ignore_index=True).to_parquet(out / f"{run_id}-tree.parquet")
        pd.concat(routings, ignore_index=True).to_parquet(out / f"{run_id}-routing.parquet")
        done = start + len(chunk)
        counts = pd.concat(routings)["decision"].value_counts().to_dict()
        _log(f"{variant}: {done}/{n} questions, {wall / done:.1f} s/question, {counts}")
    tree, routing = pd.concat(trees, ignore_index=True), pd.concat(routings, ignore_index=True)
    cal = calibrate(tree, routing, golds, cfg.grading)
    rescored = {t: calibrate(tree, routing, golds, cfg.grading, terms=t).auroc for t in TERMS}
    return {
        "variant": variant,
        "questions": n,
        "s_per_question": round(wall / n, 2),
        **cal.as_dict(),
        "rescored_auroc": rescored,
        "diagnosis": diagnose(tree, golds, cfg.grading),
        "search_stats": stats.as_dict(),
    }


def diagnose(tree, golds, grading) -> dict:
    """Where a wrong preference can come from, on the finished paths of one tree.

    ``tail_prm_auroc``: AUROC of the PRM score of the path's LAST step alone (what the judge says
    about the answer step); ``completion_*``: the same split by whether the tail is a completion
    rollout; ``adv_dominates``: share of scored steps (depth > 0) whose advantage term is larger
    in magnitude than their PRM score; ``length_auroc``: AUROC of the path's tail length in
    characters (does a longer path look more right?).
    """
    import math

    from sphere_core.calibration import auroc, finished_paths, grade_paths
    from sphere_core.search.reward import policy_prob

    tree = tree[tree["stage"] == "stage1"]
    paths = finished_paths(tree)
    right = grade_paths(paths, golds, grading)
    rows = {str(r.node_id): r for r in tree.itertuples()}
    tails = [rows[n] for n in paths["node_id"]]
    tail_prm = [float(t.prm_score) for t in tails]
    comp = [bool(t.completion) for t in tails]
    adv, prm = [], []
    for r in rows.values():
        parent = rows.get(str(r.parent_id)) if r.parent_id is not None else None
        if parent is None:
            continue
        gain = policy_prob(r.policy_mean_logprob) - policy_prob(parent.policy_mean_logprob)
        adv.append(gain / max(float(parent.prm_score), 1e-3))
        prm.append(float(r.prm_score))

    def sub(flag: bool):
        idx = [i for i, c in enumerate(comp) if c == flag]
        return {
            "paths": len(idx),
            "right": sum(right[i] for i in idx),
            "tail_prm_auroc": auroc([tail_prm[i] for i in idx], [right[i] for i in idx]),
            "mean_tail_prm": sum(tail_prm[i] for i in idx) / len(idx) if idx else None,
        }

    mean = lambda xs: sum(xs) / len(xs) if xs else math.nan
    answer_steps = _answer_steps(tree, rows)
    return {
        **answer_steps,
        "tail_prm_auroc": auroc(tail_prm, right),
        "completion_tails": sub(True),
        "searched_tails": sub(False),
        "length_auroc": auroc([len(str(t.text)) for t in tails], right),
        "steps_auroc": auroc([int(s) for s in paths["steps"]], right),
        "adv_dominates": round(sum(abs(a) > p for a, p in zip(adv, prm)) / len(adv), 3)
        if adv
        else None,
        "mean_abs_adv": round(mean([abs(a) for a in adv]), 4),
        "mean_prm": round(mean(prm), 4),
    }


def _answer_steps(tree, rows) -> dict:
    """Do steps that state a final answer (searched, not completions) get more reward?

    Over depth > 0 searched candidates: mean policy probability pi, advantage term, PRM score
    and reward of answer steps vs the others, and the depth of the chosen tail per side.
    """
    from sphere_core.search.reward import policy_prob

    groups: dict[str, dict[str, list[float]]] = {"answer": {}, "other": {}}
    for r in rows.values():
        parent = rows.get(str(r.parent_id)) if r.parent_id is not None else None
        if parent is None or bool(r.completion):
            continue
        key = "answer" if isinstance(r.extracted_answer, str) else "other"
        pi = policy_prob(r.policy_mean_logprob)
        adv = (pi - policy_prob(parent.policy_mean_logprob)) / max(float(parent.prm_score), 1e-3)
        for name, v in (
            ("pi", pi),
            ("adv", adv),
            ("prm", float(r.prm_score)),
            ("reward", float(r.reward)),
        ):
            groups[key].setdefault(name, []).append(v)
    out = {
        f"{k}_steps": {
            "n": len(g.get("pi", [])),
            **{n: round(sum(v) / len(v), 4) for n, v in g.items()},
        }
        for k, g in groups.items()
    }
    for side in ("max", "min"):
        chosen = tree[(tree["path"] == side) & tree["selected"].astype(bool)]
        tails = chosen.groupby("question_id")["depth"].max()
        out[f"{side}_tail_depth"] = round(float(tails.mean()), 3) if len(tails) else None
        done = chosen[~chosen["completion"].astype(bool) & chosen["terminal"].astype(bool)]
        out[f"{side}_answered_in_search"] = int(done["question_id"].nunique())
    return out


def judge_probe(n: int, home: Path) -> dict:
    """The judge on hand-made answer steps for tuning questions ``tune[100:100+n]``.

    Per question, the answer step "Final Answer: The final answer is $x$." with x the gold
    answer (right) or gold + 7 (wrong), with or without the format's closing "I hope it is
    correct.", after the gold derivation (one step; GSM8K's ``<<...>>`` calculator notes
    removed) or alone. The judge is called through ``judge_messages`` without its own
    sign-off removal (``judge_step`` is bypassed), to measure the sentence's effect.
    Returns the mean P(Yes)-share per condition and per-question scores.
    """
    import re
    from unittest import mock

    from sphere_core.backends import prm_judge
    from sphere_core.backends.cache import get_prm
    from sphere_core.config import resolve_config
    from sphere_core.data.ingest import resolve_data_path

    prm = get_prm(resolve_config(preset="demo"), home)
    lines = resolve_data_path("builtin:gsm8k_tune").read_text().splitlines()[100 : 100 + n]
    qs, steps, keys = [], [], []
    for row in map(json.loads, lines):
        derivation = " ".join(
            re.sub(r"<<[^>]*>>", "", s).strip() for s in row["solution"].split("\n") if s.strip()
        )
        gold = int(float(row["answer"]))
        for right, answer in (("right", gold), ("wrong", gold + 7)):
            for suffix in ("", " I hope it is correct."):
                last = f"Final Answer: The final answer is ${answer}$.{suffix}"
                for shown, chain in (
                    ("with_derivation", [derivation, last]),
                    ("answer_only", [last]),
                ):
                    qs.append(row["problem"])
                    steps.append(chain)
                    keys.append(f"{right}|sign_off={bool(suffix)}|{shown}")
    with mock.patch.object(prm_judge, "judge_step", lambda text: text.strip()):
        scores = prm.score_last(qs, steps)
    out: dict[str, list[float]] = {}
    for k, v in zip(keys, scores):
        out.setdefault(k, []).append(round(v, 4))
    return {
        "questions": n,
        "mean": {k: round(sum(v) / len(v), 4) for k, v in out.items()},
        "scores": out,
    }


def markdown_table(results: list[dict]) -> str:
    """The docs table of a finished run: one row per variant."""
    f = lambda v: "–" if v is None else f"{v:.3f}"
    lines = [
        (
            "| variant | n | Sol_max right | AUROC (steered) | AUROC re-scored prm / adv / eq3 "
            "| mean reward right / wrong | s/question |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        share = f"{r['pairs']}/{r['pairs'] + r['pairs_inverted']}" + (
            f" ({100 * r['sol_max_right_share']:.0f} %)"
            if r["sol_max_right_share"] is not None
            else ""
        )
        re_ = " / ".join(f(r["rescored_auroc"][t]) for t in ("prm", "adv", "eq3"))
        lines.append(
            f"| `{r['variant']}` | {r['questions']} | {share} | {f(r['auroc'])} | {re_} "
            f"| {f(r['mean_reward_right'])} / {f(r['mean_reward_wrong'])} "
            f"| {r['s_per_question']} |"
        )
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 questions, judge:eq3 and outcome:prm")
    ap.add_argument("--questions", type=int, default=24)
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    ap.add_argument("--mc-questions", type=int, default=8, help="cap for mc-rollout variants")
    ap.add_argument("--mc-rollouts", type=int, default=2)
    ap.add_argument("--mc-max-tokens", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=8, help="questions per lock-step batch")
    ap.add_argument("--home", default=None, help="SPHERE_HOME (models are cached there)")
    ap.add_argument("--out", default=None, help="where trees and routing are written")
    ap.add_argument(
        "--judge-probe",
        type=int,
        default=0,
        metavar="N",
        help="only probe the judge on hand-made answer steps of N tuning questions",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.questions, args.variants = 2, "judge:eq3,outcome:prm"
    from sphere_core.paths import sphere_home

    home = Path(args.home) if args.home else sphere_home()
    if args.judge_probe:
        print(
            json.dumps(
                {
                    "bench": "prm_calibration.judge_probe",
                    "commit": _commit(),
                    "date": time.strftime("%Y-%m-%d"),
                    **judge_probe(args.judge_probe, home),
                }
            )
        )
        return 0
    out = Path(args.out) if args.out else home / "bench" / "prm_calibration"
    out.mkdir(parents=True, exist_ok=True)
    results = []
    load, commit = os.getloadavg()[0], _commit()  # the code measured is the code at the start
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    partial = out / f"partial-{variants[0].replace(':', '-')}.json"  # one file per invocation
    for variant in variants:
        _log(f"variant {variant}")
        results.append(run_variant(variant, args, home, out))
        partial.write_text(json.dumps(results, indent=1))
        partial.with_suffix(".md").write_text(markdown_table(results))
    print(
        json.dumps(
            {
                "bench": "prm_calibration",
                "commit": commit,
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "data": "builtin:gsm8k_tune",
                "load_avg_start": round(load, 2),
                "load_avg_end": round(os.getloadavg()[0], 2),
                "variants": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
