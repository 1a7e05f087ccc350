"""Choose the demo's GSM8K-train questions by measuring how often the policy solves them.

The demo (``sphere run --preset demo``) needs questions that the policy solves *some* of the
time at the search temperature: then the max and the min search path disagree often (Stage-1
contrastive pairs) and some questions have both paths right (Stage-3 diversity pairs). Short
solutions keep the search inside the demo's time budget. This script measures exactly that:

1. Pre-filter GSM8K-train (``sphere_core/data/builtin/gsm8k_train.jsonl``) cheaply: short
   problems (``--max-problem-chars``) whose gold solution has at most ``--max-solution-lines``
   calculation lines. Draw ``--candidates`` of them at random (``--seed``).
2. Sample ``--samples`` full answers per candidate from the policy with the paper's prompt
   (``sphere_core.prompts.solve_messages``) at T=0.8, one batched ``generate_steps`` call per
   chunk of ``--chunk`` questions in draw order (``stop=None``, ``--max-tokens`` tokens).
3. Grade each answer with the library grader, fallback ``none``: only a real final answer
   ("Final Answer: ..." or ``\\boxed{}``) counts. Record per question: solve rate, tokens,
   steps (blank-line separated, as the search cuts them), the step holding the final answer,
   the longest step in tokens, whether a final answer was given.
4. Candidates whose rate lands at or above ``--low`` get ``--confirm-samples`` more samples
   (another seed) so the rates the selection uses rest on more draws.
5. Select ``--select`` questions: ``--high-count`` with a rate above ``--high`` (both search
   paths right -> Stage 3) and the rest with a rate in [``--low``, ``--high``], each group
   shortest first (mean tokens of the answers). The first ``--first`` rows (the demo's
   ``data.limit``) take the shortest ``--first-high`` high-rate questions and the shortest
   band questions; the remaining picks follow.

Writes every measurement (answers included) to ``--measurements`` (JSONL, one row per
question and phase, appended as chunks finish; ``--resume`` reuses rows measured with the same
settings) and the selected questions in the builtin format to ``--out``. ``--reselect`` redoes
only step 5 from an existing measurements file. Progress, a per-question table and a search
profile of the first rows' answers (steps to the final answer, tokens per step, tokens left
after each depth) go to stderr; the last stdout line is a JSON summary.

    nice -n 10 python scripts/select_demo_questions.py --candidates 36 --samples 4 \\
        --confirm-samples 4 --chunk 6 --max-tokens 256 --dtype bfloat16 --seed 0 \\
        --out sphere_core/data/builtin/gsm8k_demo.jsonl

(the command behind the current demo file; docs/demo.md has its results).

This module owns the selection procedure only; models, prompts and grading are the library's.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "sphere_core" / "data" / "builtin" / "gsm8k_train.jsonl"
FIELDS = ("id", "problem", "answer", "answer_raw", "solution", "source")
DELIMITER = "\n\n"  # the search's step delimiter (search.step_delimiter)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------
def load_train(path: Path) -> list[dict]:
    from sphere_core.errors import InputDataError

    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputDataError(f"{path}:{n}: not JSON ({err})") from err
            missing = [f for f in FIELDS if f not in row]
            if missing:
                raise InputDataError(f"{path}:{n}: row {row.get('id')!r} lacks {missing}")
            rows.append(row)
    return rows


def solution_lines(solution: str) -> int:
    return sum(1 for line in solution.splitlines() if line.strip())


def prefilter(rows: list[dict], max_chars: int, max_lines: int) -> list[dict]:
    return [
        r
        for r in rows
        if len(r["problem"]) <= max_chars and solution_lines(r["solution"]) <= max_lines
    ]


# -- measuring -------------------------------------------------------------------------
def split_steps(text: str) -> list[str]:
    return [s.strip() for s in text.split(DELIMITER) if s.strip()]


def sample_stats(
    text: str, num_tokens: int, finish: str, answer: str | None, correct: bool, count_tokens
) -> dict:
    """One sampled answer as the search would see it: steps, the step with the final answer."""
    from sphere_core.search.tree import has_final_answer

    steps = split_steps(text)
    final_step = next((i + 1 for i, s in enumerate(steps) if has_final_answer(s)), None)
    upto = steps[:final_step] if final_step else steps
    step_tokens = [count_tokens(s) for s in upto]
    return {
        "text": text,
        "tokens": num_tokens,
        "finish": finish,
        "answer": answer,
        "correct": correct,
        "steps": len(steps),
        "final_step": final_step,
        "tokens_to_final": sum(step_tokens) if final_step else None,
        "max_step_tokens": max(step_tokens) if step_tokens else 0,
    }


def summarize(qid: str, samples: list[dict]) -> dict:
    k = len(samples)
    finals = [s["final_step"] for s in samples if s["final_step"]]
    return {
        "id": qid,
        "samples": k,
        "correct": sum(s["correct"] for s in samples),
        "solve_rate": sum(s["correct"] for s in samples) / k,
        "final_rate": sum(s["answer"] is not None for s in samples) / k,
        "mean_tokens": statistics.fmean(s["tokens"] for s in samples),
        "mean_steps": statistics.fmean(s["steps"] for s in samples),
        "mean_final_step": statistics.fmean(finals) if finals else None,
        "max_final_step": max(finals) if finals else None,
        "max_step_tokens": max(s["max_step_tokens"] for s in samples),
    }


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, -(-len(ordered) * q // 100) - 1))]


def search_profile(samples: list[dict], count_tokens, depths=(2, 3, 4, 5)) -> dict:
    """What the search would meet on these answers: steps to the final answer, tokens per step,
    and for each max_depth D the share finished within D steps and the tokens left after step D
    (what the completion rollout must generate)."""
    finals = [s for s in samples if s["final_step"]]
    per_answer = []
    for s in finals:
        steps = split_steps(s["text"])[: s["final_step"]]
        per_answer.append([count_tokens(x) for x in steps])
    step_tokens = [t for answer in per_answer for t in answer]

    def pct(values: list[float]) -> dict:
        return {f"p{q}": percentile(values, q) for q in (50, 90, 95)} | {
            "max": max(values, default=None)
        }

    out = {
        "answers": len(samples),
        "with_final_answer": len(finals),
        "answer_tokens": pct([s["tokens"] for s in samples]),
        "steps_to_final": pct([s["final_step"] for s in finals]),
        "tokens_to_final": pct([sum(a) + len(a) - 1 for a in per_answer]),
        "step_tokens": pct(step_tokens),
    }
    for d in depths:
        rest = [sum(a[d:]) + len(a[d:]) for a in per_answer]  # + one token per blank line
        out[f"depth{d}"] = {
            "finished_within": round(
                sum(len(a) <= d for a in per_answer) / max(1, len(per_answer)), 3
            ),
            "tokens_after": pct(rest),
        }
    return out


def measure(
    generator,
    grader,
    questions: list[dict],
    k: int,
    args,
    seed: int,
    phase: str,
    settings: dict,
    sink,
    done: dict,
) -> dict:
    """Sample k answers for each question, chunk by chunk; returns {id: sample list}.

    Chunk c holds ``questions[c*chunk:(c+1)*chunk]`` and is sampled with seed ``seed*1000+c``;
    a chunk whose questions are all in ``done`` is skipped, so a resumed or extended run
    (more ``--candidates``, same seed) samples exactly what one fresh run would.
    """
    from sphere_core.prompts import solve_messages

    out: dict[str, list[dict]] = {}
    total_tokens, t_start = 0, time.perf_counter()
    for c, lo in enumerate(range(0, len(questions), args.chunk)):
        chunk = questions[lo : lo + args.chunk]
        if all(q["id"] in done for q in chunk):
            continue
        prompts = [generator.apply_chat_template(solve_messages(q["problem"])) for q in chunk]
        t0 = time.perf_counter()
        outs = generator.generate_steps(
            prompts, k, args.temperature, None, args.max_tokens, seed=seed * 1000 + c
        )
        dt = time.perf_counter() - t0
        texts = [step.text for row in outs for step in row]
        graded = grader.grade_texts(texts, [q["answer"] for q in chunk for _ in range(k)])
        tokens = sum(step.num_tokens for row in outs for step in row)
        total_tokens += tokens
        for i, (q, row) in enumerate(zip(chunk, outs)):
            samples = [
                sample_stats(
                    step.text,
                    step.num_tokens,
                    step.finish_reason,
                    *graded[i * k + j],
                    generator.count_tokens,
                )
                for j, step in enumerate(row)
            ]
            out[q["id"]] = samples
            record = {
                "phase": phase,
                "settings": settings,
                "chunk": c,
                "chunk_s": round(dt, 1),
                "chunk_tokens": tokens,
                **summarize(q["id"], samples),
                "sample_list": samples,
            }
            sink.write(json.dumps(record) + "\n")
            sink.flush()
        finished = lo + len(chunk)
        rates = " ".join(f"{sum(s['correct'] for s in out[q['id']])}/{k}" for q in chunk)
        log(
            f"[{phase}] {finished}/{len(questions)} questions: chunk {dt:.0f} s, {tokens} tokens "
            f"({tokens / dt:.1f} tok/s), total {time.perf_counter() - t_start:.0f} s; solved "
            f"{rates}"
        )
    return {"per_question": out, "tokens": total_tokens, "seconds": time.perf_counter() - t_start}


def load_measurements(path: Path, settings: dict | None) -> dict[str, dict[str, list[dict]]]:
    """{phase: {id: samples}} from an existing measurements file (rows with other settings
    skipped)."""
    from sphere_core.errors import InputDataError

    found: dict[str, dict[str, list[dict]]] = {}
    if not path.is_file():
        return found
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputDataError(f"{path}:{n}: not JSON ({err})") from err
            missing = [k for k in ("settings", "phase", "id", "sample_list") if k not in rec]
            if missing:
                raise InputDataError(f"{path}:{n}: not a measurement row (lacks {missing})")
            if settings is not None and rec["settings"] != settings:
                continue
            found.setdefault(rec["phase"], {})[rec["id"]] = rec["sample_list"]
    return found


# -- selecting -------------------------------------------------------------------------
def select(stats: list[dict], args) -> list[dict]:
    band = sorted(
        (s for s in stats if args.low <= s["solve_rate"] <= args.high),
        key=lambda s: (s["mean_tokens"], s["id"]),
    )
    high = sorted(
        (s for s in stats if s["solve_rate"] > args.high), key=lambda s: (s["mean_tokens"], s["id"])
    )
    n_high = min(args.high_count, len(high))
    first_high = min(args.first_high, n_high, args.first)
    first_band = min(args.first - first_high, len(band))
    first = band[:first_band] + high[:first_high]
    first.sort(key=lambda s: (s["mean_tokens"], s["id"]))
    rest_band = band[
        first_band : first_band + max(0, args.select - len(first) - (n_high - first_high))
    ]
    rest = sorted(rest_band + high[first_high:n_high], key=lambda s: (s["mean_tokens"], s["id"]))
    return (first + rest)[: args.select]


def table(rows: list[dict], by_id: dict[str, dict]) -> str:
    lines = [
        (
            "| # | id | answer | solved | rate | final given | mean tokens | steps to final "
            "(mean / max) | longest step (tokens) | problem |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, s in enumerate(rows, 1):
        q = by_id[s["id"]]
        mf = (
            "-"
            if s["mean_final_step"] is None
            else f"{s['mean_final_step']:.1f} / {s['max_final_step']}"
        )
        problem = q["problem"].replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {n} | {s['id']} | {q['answer']} | {s['correct']}/{s['samples']} | "
            f"{s['solve_rate']:.2f} | {s['final_rate']:.2f} | {s['mean_tokens']:.0f} | {mf} | "
            f"{s['max_step_tokens']} | {problem} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    p.add_argument("--data", type=Path, default=TRAIN, help="GSM8K-train JSONL (builtin format)")
    p.add_argument(
        "--candidates", type=int, default=36, help="questions drawn after the pre-filter"
    )
    p.add_argument("--samples", type=int, default=4, help="answers sampled per candidate")
    p.add_argument(
        "--confirm-samples",
        type=int,
        default=4,
        help="extra answers for candidates whose rate is >= --low (0: none)",
    )
    p.add_argument("--seed", type=int, default=0, help="candidate draw and sampling seed")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the selected questions here (builtin format); omitted: print only",
    )
    p.add_argument(
        "--measurements",
        type=Path,
        default=Path("demo_selection_measurements.jsonl"),
        help="per-question measurements JSONL (appended)",
    )
    p.add_argument(
        "--resume", action="store_true", help="reuse measurements with the same settings"
    )
    p.add_argument(
        "--reselect",
        action="store_true",
        help="no sampling: select from --measurements (rows of any settings)",
    )
    p.add_argument("--max-tokens", type=int, default=256, help="token budget per sampled answer")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--model", default="embedded", help="policy model path (default: embedded)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    p.add_argument("--chunk", type=int, default=6, help="questions per batched generate call")
    p.add_argument("--home", default=None, help="SPHERE_HOME (models are converted under it)")
    p.add_argument("--max-problem-chars", type=int, default=160)
    p.add_argument("--max-solution-lines", type=int, default=3)
    p.add_argument("--select", type=int, default=12, help="questions to write")
    p.add_argument(
        "--first", type=int, default=8, help="the demo's data.limit: the best rows come first"
    )
    p.add_argument("--low", type=float, default=0.25)
    p.add_argument("--high", type=float, default=0.75)
    p.add_argument("--high-count", type=int, default=4, help="questions with a rate above --high")
    p.add_argument(
        "--first-high", type=int, default=3, help="of those, how many go in the first rows"
    )
    args = p.parse_args()

    sys.path.insert(0, str(REPO))
    from sphere_core.errors import SphereError

    try:
        summary = run(args)
    except SphereError as err:
        log(f"error: {err}")
        raise SystemExit(2) from err
    print(json.dumps(summary))


def run(args) -> dict:
    from sphere_core.errors import ConfigError

    t_start = time.perf_counter()
    train = load_train(args.data)
    by_id = {r["id"]: r for r in train}
    pool = prefilter(train, args.max_problem_chars, args.max_solution_lines)
    if args.candidates > len(pool):
        raise ConfigError(
            f"--candidates {args.candidates} exceeds the {len(pool)} questions of "
            f"{args.data} that pass the pre-filter"
        )
    # draw order (not sorted): the first n of a larger draw are the draw of n, chunk for chunk
    candidates = random.Random(args.seed).sample(pool, args.candidates)
    settings = {
        "model": args.model,
        "dtype": args.dtype,
        "device": args.device,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
        "chunk": args.chunk,
    }
    phases: dict[str, dict[str, list[dict]]] = {}
    measured = {"tokens": 0, "seconds": 0.0}
    if args.reselect:
        phases = load_measurements(args.measurements, None)
        if not phases:
            raise ConfigError(f"--reselect: no measurements in {args.measurements}")
        unknown = sorted({i for ph in phases.values() for i in ph} - by_id.keys())
        if unknown:
            raise ConfigError(
                f"--reselect: {args.measurements} has questions not in {args.data}: {unknown[:5]}"
            )
        candidates = [by_id[i] for i in sorted({i for ph in phases.values() for i in ph})]
    else:
        phases = load_measurements(args.measurements, settings) if args.resume else {}
        from sphere_core.backends.hf import HFGenerator
        from sphere_core.config import GradingConfig, ModelSpec
        from sphere_core.grading import get_grader
        from sphere_core.paths import sphere_home

        home = sphere_home(args.home)
        t0 = time.perf_counter()
        generator = HFGenerator.from_spec(
            ModelSpec(
                path=args.model,
                device=args.device,
                dtype=args.dtype,
                batch_size=args.chunk * max(args.samples, args.confirm_samples or 1),
            ),
            home,
        )
        log(
            f"loaded {args.model} on {generator.device} as {generator.dtype} in "
            f"{time.perf_counter() - t0:.0f} s; {len(pool)} questions pass the pre-filter, "
            f"measuring {len(candidates)}"
        )
        grader = get_grader(GradingConfig(fallback="none"))
        args.measurements.parent.mkdir(parents=True, exist_ok=True)
        with open(args.measurements, "a", encoding="utf-8") as sink:
            plan = [("screen", args.samples, args.seed, lambda: candidates)]
            if args.confirm_samples:

                def confirm_set():
                    screen = phases.get("screen", {})
                    return [
                        q
                        for q in candidates
                        if q["id"] in screen
                        and sum(s["correct"] for s in screen[q["id"]]) / len(screen[q["id"]])
                        >= args.low
                    ]

                plan.append(("confirm", args.confirm_samples, args.seed + 1, confirm_set))
            for phase, k, seed, todo in plan:
                done = phases.setdefault(phase, {})
                questions = todo()
                if any(q["id"] not in done for q in questions):
                    res = measure(
                        generator, grader, questions, k, args, seed, phase, settings, sink, done
                    )
                    done.update(res["per_question"])
                    measured["tokens"] += res["tokens"]
                    measured["seconds"] += res["seconds"]
    stats = []
    for q in candidates:
        samples = [s for ph in phases.values() for s in ph.get(q["id"], [])]
        if samples:
            stats.append(summarize(q["id"], samples))
    chosen = select(stats, args)
    log(table(chosen, by_id))
    if args.reselect:
        from transformers import AutoTokenizer

        from sphere_core.backends.embedded import resolve_model_path
        from sphere_core.paths import sphere_home

        tokenizer = AutoTokenizer.from_pretrained(
            str(resolve_model_path(args.model, sphere_home(args.home)))
        )

        def count_tokens(text: str) -> int:
            return len(tokenizer.encode(text, add_special_tokens=False))
    else:
        count_tokens = generator.count_tokens
    first_ids = {s["id"] for s in chosen[: args.first]}
    profile = search_profile(
        [
            x
            for ph in phases.values()
            for i, samples in ph.items()
            if i in first_ids
            for x in samples
        ],
        count_tokens,
    )
    log(f"search profile of the first {len(first_ids)} selected questions: {json.dumps(profile)}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.writelines(
                json.dumps({f: by_id[s["id"]][f] for f in FIELDS}, ensure_ascii=False) + "\n"
                for s in chosen
            )
    all_samples = [s for ph in phases.values() for samples in ph.values() for s in samples]
    rates = [s["solve_rate"] for s in stats]
    return {
        "pool": len(pool),
        "candidates": len(candidates),
        "measured_questions": len(stats),
        "samples": len(all_samples),
        "overall_solve_rate": round(
            sum(s["correct"] for s in all_samples) / max(1, len(all_samples)), 4
        ),
        "questions_by_rate": {f"{r:.2f}": rates.count(r) for r in sorted(set(rates))},
        "generated_tokens": measured["tokens"],
        "generate_s": round(measured["seconds"], 1),
        "tokens_per_s": round(measured["tokens"] / measured["seconds"], 1)
        if measured["seconds"]
        else None,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "selected": [s["id"] for s in chosen],
        "selected_rates": [round(s["solve_rate"], 3) for s in chosen],
        "selected_mean_tokens": [round(s["mean_tokens"], 1) for s in chosen],
        "profile_first": profile,
        "out": str(args.out) if args.out else None,
        "measurements": str(args.measurements),
    }


if __name__ == "__main__":
    main()
