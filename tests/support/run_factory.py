"""Fabricated run outputs for report tests: what a finished pipeline round leaves behind.

Owns building one round's data the way the pipeline shapes it, without models: questions,
search trees and routing rows per stage (each stage's real ``item``/``route`` makes the
routing row and its reason, from graded paths chosen to give the decision asked for), pairs
from the real ``sphere_core.pairs.build_pairs`` (so invariant violations are really dropped),
a TRL-shaped ``model/train_log.json`` and evaluation rows. Artifacts are written through
``ArtifactStore`` (``write_shard`` + ``write_manifest``), the run view through
``run_view.publish_view``, and store rows through the repository (round-aware API). Does not own
what the report says about them (the tests do).

Stage names come from the stage registry: the first stage takes every question, every other
stage takes the questions its upstream stage routed to it (``Stage.consumes``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sphere_core.config import SphereConfig
from sphere_core.pairs import build_pairs
from sphere_core.results import GenerateResult
from sphere_core.routing import GradedPath
from sphere_core.schemas import (
    QUESTION_COLUMNS,
    REJECT_COLUMNS,
    ROUTING_COLUMNS,
    SCHEMA_VERSION,
    TREE_COLUMNS,
)
from sphere_core.stages import all_stages
from sphere_core.storage.artifacts import ArtifactStore
from sphere_core.storage.keys import artifact_key
from sphere_core.storage.run_outputs import (
    PAIRS,
    QUESTIONS,
    REJECTS,
    RunOutputs,
    RunPlan,
    empty_frame,
    routing_output,
    tree_output,
)
from sphere_core.storage.run_view import RunView, publish_view, round_dir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DELIMITER = "\n\n"
COMBOS = (
    (True, False),
    (False, True),
    (False, False),
    (True, True),
)  # (Sol_max right, Sol_min right)


def first_stage():
    """The stage that takes every question."""
    return next(s for s in all_stages() if s.consumes is None)


def stage_taking(decision: str):
    """The stage that takes the questions the first stage routes with ``decision``."""
    return next(
        s for s in all_stages() if s.consumes is not None and s.consumes.decision == decision
    )


def main_stages() -> tuple[str, str, str]:
    """(first stage, the stage taking its to_correction questions, the one taking to_diversity)."""
    return first_stage().name, stage_taking("to_correction").name, stage_taking("to_diversity").name


@dataclass
class RoundSpec:
    """What one fabricated round did.

    ``decisions``: stage name -> the decision for each question the stage sees, in order (the
    first stage sees every question; the others the questions routed to them, in order).
    ``rollout_chosen``: first-stage question indices whose Sol_max tail is a completion rollout;
    ``rollout_other``: indices whose Sol_min tail is one. ``unfinished_rejected``: indices whose
    Sol_min has no final answer (its pair candidate is dropped by the pair invariants).
    ``pass1``: benchmark -> (base, trained) Pass@1; ``self_correction``: benchmark -> (base,
    trained) accuracy after turn 2, with ``flips`` = (right->wrong, wrong->right) for both;
    ``labels``: the models evaluated (the pipeline evaluates only the base without training).
    """

    decisions: dict[str, list[str]]
    rollout_chosen: tuple[int, ...] = ()
    rollout_other: tuple[int, ...] = ()
    unfinished_rejected: tuple[int, ...] = ()
    train: bool = True
    steps: int = 8
    pass1: dict[str, tuple[float, float]] = field(default_factory=dict)
    self_correction: dict[str, tuple[float, float]] = field(default_factory=dict)
    flips: tuple[int, int] = (0, 1)
    n_eval: int = 4
    labels: tuple[str, ...] = ("base", "trained")


def mixed_spec(**changes: Any) -> RoundSpec:
    """A round with every route: 11 questions, 4 pair (one with an unfinished Sol_min: its pair
    candidate is dropped), 1 pair_inverted, 4 to the correction stage (2 pair, 1 pair_inverted,
    1 unresolved), 2 to the diversity stage (1 pair, 1 no_error). Sol_max of questions 0, 1, 9
    and Sol_min of question 2 end in a completion rollout: 2 chosen paths of the first stage,
    1 of the diversity stage (it pairs the first stage's Sol_max) and one rejected path.
    Pass@1 base/trained: gsm8k 25/50 %, math500 0/25 %; gsm8k self-correction 50/75 %, flips
    (0, 1); n = 4. ``changes`` replace fields."""
    first, correction, diversity = main_stages()
    spec = RoundSpec(
        decisions={
            first: ["pair"] * 3
            + ["pair_inverted", "pair"]
            + ["to_correction"] * 4
            + ["to_diversity"] * 2,
            correction: ["pair", "pair", "pair_inverted", "unresolved"],
            diversity: ["pair", "no_error"],
        },
        rollout_chosen=(0, 1, 9),
        rollout_other=(2,),
        unfinished_rejected=(4,),
        pass1={"gsm8k": (0.25, 0.5), "math500": (0.0, 0.25)},
        self_correction={"gsm8k": (0.5, 0.75)},
        flips=(0, 1),
        n_eval=4,
    )
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


@dataclass
class FabricatedRound:
    """What was written for one round (the tests' expectations come from the spec and this)."""

    round: int
    questions: pd.DataFrame
    routing: pd.DataFrame
    tree: pd.DataFrame
    train: pd.DataFrame
    eval: pd.DataFrame
    dropped: list[dict[str, Any]]
    train_log: dict[str, Any] | None
    plan: RunPlan

    @property
    def pairs(self) -> pd.DataFrame:
        return pd.concat(
            [self.train.assign(split="train"), self.eval.assign(split="eval")], ignore_index=True
        )


def _question(i: int, r: int) -> dict[str, Any]:
    return {
        "question_id": f"q{r}-{i:02d}",
        "problem": f"Question {i}: what is {i} + 10?",
        "answer": str(10 + i),
        "source": "fabricated",
        "source_row": i,
        "source_id": None,
    }


def _path(
    stage: str, q: dict, correct: bool, side: str, finished: bool = True
) -> tuple[GradedPath, list[str]]:
    """A graded path and its steps: a first step and a final-answer step (or an unfinished one)."""
    gold = q["answer"]
    answer = gold if correct else str(90 + int(q["source_row"]) + (0 if side == "max" else 5))
    first = f"Step 1 ({stage}, Sol_{side}): {q['problem'].split(': ', 1)[1]} Add the numbers."
    last = (
        f"So the sum is {answer}. Final Answer: The final answer is ${answer}$. I hope it is "
        "correct."
        if finished
        else f"So the sum is probably {answer}, but let me keep going"
    )
    return GradedPath(
        DELIMITER.join([first, last]),
        answer if finished else None,
        correct,
        0.8 if side == "max" else 0.3,
    ), [first, last]


def _tree_rows(
    run_id: str, stage: str, qid: str, steps: dict[str, list[str]], rollouts: set[str]
) -> list[dict]:
    rows = []
    for side, texts in steps.items():
        for depth, text in enumerate(texts):
            last = depth == len(texts) - 1
            rows.append(
                {
                    "run_id": run_id,
                    "question_id": qid,
                    "stage": stage,
                    "path": side,
                    "depth": depth,
                    "node_id": f"{qid}-{stage}-{side}-{depth}",
                    "parent_id": f"{qid}-{stage}-{side}-{depth - 1}" if depth else None,
                    "candidate_index": 0,
                    "text": text,
                    "policy_mean_logprob": -0.5,
                    "prm_score": 0.5,
                    "orm_score": float("nan"),
                    "reward": 0.5,
                    "selected": True,
                    "terminal": last,
                    "finish_reason": "stop",
                    "extracted_answer": None,
                    "completion": last and side in rollouts,
                }
            )
    return rows


def _route(
    stage,
    cfg: SphereConfig,
    run_id: str,
    q: dict,
    upstream: dict | None,
    decision: str,
    unfinished_min: bool,
) -> tuple[dict, dict[str, list[str]]]:
    """The stage's own routing row for ``q`` with ``decision`` (graded paths chosen to give it)."""
    item = stage.item(cfg, q, upstream)
    for max_ok, min_ok in COMBOS:
        if unfinished_min and min_ok:
            continue
        best, best_steps = _path(stage.name, q, max_ok, "max")
        worst, worst_steps = _path(stage.name, q, min_ok, "min", finished=not unfinished_min)
        row = stage.route(run_id, item, best, worst)
        if row["decision"] == decision:
            return row, {"max": best_steps, "min": worst_steps}
    raise ValueError(f"{stage.name} cannot route question {q['question_id']} to {decision!r}")


def _stage_frames(cfg: SphereConfig, run_id: str, spec: RoundSpec, questions: pd.DataFrame):
    by_stage_routing: dict[str, pd.DataFrame] = {}
    by_stage_tree: dict[str, pd.DataFrame] = {}
    rows_by_stage: dict[str, dict[str, dict]] = {}
    index = {q: i for i, q in enumerate(questions["question_id"])}
    for stage in all_stages():
        if stage.name not in spec.decisions:
            continue
        if stage.consumes is None:
            taken = questions.to_dict("records")
        else:
            upstream_rows = rows_by_stage.get(stage.consumes.stage, {})
            taken = [
                q
                for q in questions.to_dict("records")
                if upstream_rows.get(q["question_id"], {}).get("decision")
                == stage.consumes.decision
            ]
        decisions = spec.decisions[stage.name]
        if len(decisions) != len(taken):
            raise ValueError(
                f"{stage.name} sees {len(taken)} questions but the spec gives {len(decisions)} "
                "decisions"
            )
        routing, tree = [], []
        for q, decision in zip(taken, decisions):
            i = index[q["question_id"]]
            upstream = (
                rows_by_stage[stage.consumes.stage][q["question_id"]] if stage.consumes else None
            )
            first = stage.consumes is None
            row, steps = _route(
                stage, cfg, run_id, q, upstream, decision, first and i in spec.unfinished_rejected
            )
            rollouts = ({"max"} if first and i in spec.rollout_chosen else set()) | (
                {"min"} if first and i in spec.rollout_other else set()
            )
            routing.append(row)
            tree.extend(_tree_rows(run_id, stage.name, q["question_id"], steps, rollouts))
        rows_by_stage[stage.name] = {r["question_id"]: r for r in routing}
        by_stage_routing[stage.name] = pd.DataFrame(routing, columns=ROUTING_COLUMNS)
        by_stage_tree[stage.name] = pd.DataFrame(tree, columns=TREE_COLUMNS)
    return by_stage_routing, by_stage_tree


def train_log(n_train: int, n_eval: int, steps: int, round: int, model_dir: Path) -> dict[str, Any]:
    """A TRL DPOTrainer-shaped log: per-step train entries, eval every 2 steps, a final summary.

    Step s of round r: loss 0.69 - 0.04 s / r, margins 0.05 s r, chosen 0.03 s, rejected
    chosen - margins, accuracy min(1, 0.5 + 0.1 s). Eval entries: loss + 0.01, margins x 0.9,
    accuracy min(1, 0.3 + 0.05 s). The kept checkpoint is the lowest eval loss (the last).
    """
    history: list[dict[str, Any]] = []
    for s in range(1, steps + 1):
        margin, chosen = round * 0.05 * s, 0.03 * s
        entry = {
            "loss": 0.69 - 0.04 * s / round,
            "grad_norm": 1.0,
            "learning_rate": 5e-5,
            "rewards/chosen": chosen,
            "rewards/rejected": chosen - margin,
            "rewards/accuracies": min(1.0, 0.5 + 0.1 * s),
            "rewards/margins": margin,
            "logps/chosen": -40.0,
            "logps/rejected": -45.0,
            "epoch": s / steps,
            "step": s,
        }
        history.append(entry)
        if n_eval and s % 2 == 0:
            history.append(
                {
                    "eval_loss": entry["loss"] + 0.01,
                    "eval_rewards/chosen": chosen,
                    "eval_rewards/rejected": chosen - 0.9 * margin,
                    "eval_rewards/margins": 0.9 * margin,
                    "eval_rewards/accuracies": min(1.0, 0.3 + 0.05 * s),
                    "eval_runtime": 0.5,
                    "epoch": s / steps,
                    "step": s,
                }
            )
    history.append({"train_runtime": 12.5, "train_loss": 0.55, "epoch": 1.0, "step": steps})
    evals = [h for h in history if "eval_loss" in h]
    metrics: dict[str, Any] = {
        "train_runtime": 12.5,
        "train_loss": 0.55,
        "n_train": n_train,
        "n_eval": n_eval,
        "device": "cpu",
        "bf16": False,
        "global_step": steps,
    }
    best = None
    if evals:
        low = min(evals, key=lambda h: h["eval_loss"])
        metrics.update(
            {
                "eval_loss": low["eval_loss"],
                "eval_rewards/margins": low["eval_rewards/margins"],
                "eval_rewards/accuracies": low["eval_rewards/accuracies"],
                "best_eval_loss": low["eval_loss"],
            }
        )
        best = str(model_dir / "checkpoints" / f"checkpoint-{low['step']}")
    return {"log_history": history, "metrics": metrics, "best_checkpoint": best}


def _evaluations(repo, run_id: str, r: int, spec: RoundSpec) -> None:
    for bench, values in spec.pass1.items():
        sc = spec.self_correction.get(bench)
        for j, label in enumerate(("base", "trained")):
            if label not in spec.labels:
                continue
            repo.record_evaluation(run_id, label, bench, "pass@1", values[j], spec.n_eval, round=r)
            if sc is not None:
                repo.record_evaluation(
                    run_id, label, bench, "self_correction_acc", sc[j], spec.n_eval, round=r
                )
                repo.record_evaluation(
                    run_id, label, bench, "flips_r2w", spec.flips[0], spec.n_eval, round=r
                )
                repo.record_evaluation(
                    run_id, label, bench, "flips_w2r", spec.flips[1], spec.n_eval, round=r
                )


def fabricate_round(
    home: Path, repo, cfg: SphereConfig, run_id: str, r: int, spec: RoundSpec
) -> FabricatedRound:
    """Write round ``r`` of ``run_id``: artifacts, run view, train log and store rows."""
    store = ArtifactStore(home)
    questions = pd.DataFrame(
        [_question(i, r) for i in range(len(spec.decisions[first_stage().name]))],
        columns=QUESTION_COLUMNS,
    )
    seed = {"fabricated_run": run_id, "round": r}
    qkey = artifact_key("ingest", seed, [])
    store.write_shard(QUESTIONS, qkey, 0, questions)
    store.write_manifest(QUESTIONS, qkey, {"stats": {}}, expected_shards=1)
    store.write_shard(REJECTS, qkey, 0, empty_frame(REJECT_COLUMNS))
    store.write_manifest(REJECTS, qkey, {"schema_version": SCHEMA_VERSION}, expected_shards=1)

    routing, trees = _stage_frames(cfg, run_id, spec, questions)
    keys = {}
    for stage in routing:
        keys[stage] = artifact_key(stage, seed, [qkey])
        for name, frame in (
            (tree_output(stage), trees[stage]),
            (routing_output(stage), routing[stage]),
        ):
            store.write_shard(name, keys[stage], 0, frame)
            store.write_manifest(
                name, keys[stage], {"schema_version": SCHEMA_VERSION}, expected_shards=1
            )
    all_routing = pd.concat(routing.values(), ignore_index=True)
    all_trees = pd.concat(trees.values(), ignore_index=True)
    train, evaluation, dropped = build_pairs(cfg, questions, all_routing, all_trees, run_id=run_id)
    pairs_key = artifact_key("pairs", seed, [qkey, *keys.values()])
    for split, frame in (("train", train), ("eval", evaluation)):
        store.write_shard(PAIRS[split], pairs_key, 0, frame)
        store.write_manifest(
            PAIRS[split],
            pairs_key,
            {"schema_version": SCHEMA_VERSION, "dropped": dropped},
            expected_shards=1,
        )
    plan = RunPlan(qkey, 1, keys, pairs_key, r)
    counts = all_routing.groupby(["stage", "decision"]).size()
    summary = GenerateResult(
        run_id=run_id,
        round=r,
        run_dir=str(round_dir(home, run_id, r)),
        questions=len(questions),
        rejected=0,
        routing_counts=[
            {"stage": s, "decision": d, "questions": int(n)} for (s, d), n in counts.items()
        ],
        pairs_train=len(train),
        pairs_eval=len(evaluation),
        dropped_pairs=dropped,
        artifact_keys={"questions": qkey, **keys, "pairs": pairs_key},
    ).to_dict()
    publish_view(RunOutputs(home), run_id, plan, {"summary": summary})
    view = RunView(home, run_id, r)

    log = None
    if spec.train and len(train):
        model = view.model_dir()
        model.mkdir(parents=True, exist_ok=True)
        log = train_log(len(train), len(evaluation), spec.steps, r, model)
        (model / "train_log.json").write_text(json.dumps(log, indent=2))

    repo.set_run_round(run_id, r)
    repo.upsert_questions(questions)
    for stage, key in keys.items():
        repo.record_routing_events(view.routing(stage), artifact_key=key, round=r)
    pairs = pd.concat(
        [view.pairs("train").assign(split="train"), view.pairs("eval").assign(split="eval")],
        ignore_index=True,
    )
    repo.record_pairs(run_id, r, pairs, artifact_key=pairs_key)
    if log is not None:
        repo.record_checkpoint(
            run_id,
            view.model_dir() / "adapter",
            "adapter",
            {"train_loss": log["metrics"]["train_loss"]},
            round=r,
        )
    _evaluations(repo, run_id, r, spec)
    return FabricatedRound(
        r, questions, all_routing, all_trees, train, evaluation, dropped, log, plan
    )


def fabricate_run(
    home: Path,
    repo,
    cfg: SphereConfig,
    run_id: str,
    specs: list[RoundSpec],
    status: str = "completed",
) -> list[FabricatedRound]:
    """A run with ``len(specs)`` rounds planned (``cfg.evolution.rounds``) and every spec
    written."""
    repo.create_run(
        run_id, cfg.to_dict(), cfg.config_hash(), kind="pipeline", rounds=cfg.evolution.rounds
    )
    repo.set_run_status(run_id, "running")
    rounds = [
        fabricate_round(home, repo, cfg, run_id, r, spec) for r, spec in enumerate(specs, start=1)
    ]
    repo.set_run_status(run_id, status)
    return rounds


def fabricated_report(home: Path, cfg: SphereConfig, run_id: str, rounds: list[RoundSpec]):
    """A fabricated run in a fresh ``home`` with its report built: (rounds, report text)."""
    from sphere_core.evaluation.report import build_report
    from sphere_core.paths import default_database_url
    from sphere_core.storage.repo import open_repository

    with open_repository(default_database_url(home), home) as store:
        fabricated = fabricate_run(home, store, cfg, run_id, rounds)
        text = build_report(run_id, home, store).read_text()
    return fabricated, text
