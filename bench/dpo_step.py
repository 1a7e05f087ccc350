"""Seconds per DPO step on the embedded policy: the previous trainer set-up vs ``train_dpo``.

before  TRL DPOTrainer + PEFT LoRA as the pipeline ran it previously: float32, the reference
        forward recomputed every step (adapter disabled), ``per_device_batch_size`` pairs per
        forward, padded together.
after   ``sphere_core.training.dpo.train_dpo`` itself: reference log-probs precomputed once,
        one-pair micro-batches with gradient accumulation on CPU, bf16 autocast with bf16
        frozen projections when ``training.bf16`` resolves to true (``--bf16``; default
        ``true`` on a CPU with native bf16, else ``auto``).

Pairs are random but realistic: GSM8K-train problems in SPHERE's solve prompt, chosen and
rejected completions made of GSM8K solution lines, 150-400 tokens per prompt+completion.
Both set-ups train the same LoRA (r=8) on the same pairs with the same seed; a step is one
optimizer step over ``batch`` pairs; the first step (warm-up) is not timed. Each (set-up,
batch) runs in its own process, so peak memory is its own. The one-off reference precompute
of ``after`` is reported apart (``precompute_s``), as is the agreement of the two loss curves.

Prints human-readable lines, then ONE JSON line LAST with ``s_per_step_before``,
``s_per_step_after``, ``speedup`` (wall seconds, at the first ``--batch``), the same in
process CPU seconds (``cpu_*``: on a shared machine wall time swings with other load, CPU time
much less; divide by ``threads`` for the wall time of an idle machine), ``per_batch`` (every
batch), ``dtype``, ``device``, ``threads``, ``loadavg`` (before/after), peak RSS.
Usage: nice -n 10 python bench/dpo_step.py [--batch 1 2] [--steps 4] [--pairs 8] [--home DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def native_bf16_cpu() -> bool:
    import torch

    cpu = torch.cpu
    return bool(
        getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    )


def n_tokens(tokenizer, messages, add_generation_prompt: bool = False) -> int:
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=False
    )
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def make_pairs(tokenizer, n: int, seed: int, lo: int = 150, hi: int = 400):
    """n conversational pairs whose prompt+completion lengths are uniform in [lo, hi] tokens."""
    import pandas as pd

    from sphere_core.prompts import solve_messages

    rng = random.Random(seed)
    rows = [
        json.loads(line) for line in (ROOT / "sphere_core/data/builtin/gsm8k_train.jsonl").open()
    ][:400]
    lines = [s for r in rows for s in r["solution"].split("\n") if s.strip()]

    def completion(n_tokens: int) -> str:
        out: list[str] = []
        while len(tokenizer(" ".join(out))["input_ids"]) < n_tokens:
            out.append(rng.choice(lines))
        return "\n".join(out)

    pairs = []
    for i in range(n):
        prompt = solve_messages(rows[i]["problem"])
        p_len = n_tokens(tokenizer, prompt, add_generation_prompt=True)
        side = {k: completion(max(8, rng.randint(lo, hi) - p_len)) for k in ("chosen", "rejected")}
        pairs.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": side["chosen"]}],
                "rejected": [
                    {"role": "assistant", "content": side["rejected"] + "\nThe answer is 7."}
                ],
            }
        )
    return pd.DataFrame(pairs)


def bench_cfg(model: str, batch: int, steps: int, bf16: str):
    from sphere_core.config import resolve_config

    return resolve_config(
        overrides=[
            f"models.policy.path={model}",
            "models.policy.device=cpu",
            f"training.max_steps={steps}",
            f"training.per_device_batch_size={batch}",
            "training.max_length=512",
            "training.lora_r=8",
            "training.lora_alpha=16",
            "training.lora_dropout=0.0",
            "training.learning_rate=5e-5",
            "training.warmup_ratio=0.0",
            "training.beta=0.1",
            "training.logging_steps=1",
            f"training.bf16='{bf16}'",
        ]
    )


class StepTimer:
    """TrainerCallback stamping wall and CPU time at train begin and at each optimizer step's
    end."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        timer = self

        class _CB(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                timer.stamps = [(time.perf_counter(), time.process_time())]

            def on_step_end(self, args, state, control, **kw):
                timer.stamps.append((time.perf_counter(), time.process_time()))

        self.stamps: list[tuple[float, float]] = []
        self.callback = _CB()

    def durations(self) -> tuple[list[float], list[float]]:
        """(wall, cpu) seconds of each step, from one step's end to the next."""
        pairs = list(itertools.pairwise(self.stamps))
        return [b[0] - a[0] for a, b in pairs], [b[1] - a[1] for a, b in pairs]


def run_before(cfg, home: Path, train: Path, out: Path) -> dict:
    """The previous set-up: fp32, reference forward every step, batches of B pairs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from sphere_core.backends.embedded import resolve_model_path
    from sphere_core.training.dpo import _lora_config, load_pairs

    t = cfg.training
    path = resolve_model_path(cfg.models.policy.path, home)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    args = DPOConfig(
        output_dir=str(out / "checkpoints"),
        beta=t.beta,
        learning_rate=t.learning_rate,
        warmup_steps=0.0,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=1,
        max_length=t.max_length,
        logging_steps=1,
        seed=t.seed,
        bf16=False,
        fp16=False,
        use_cpu=True,
        activation_checkpointing=False,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
    )
    timer = StepTimer()
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=load_pairs(train),
        processing_class=tokenizer,
        peft_config=_lora_config(cfg),
        callbacks=[timer.callback],
    )
    trainer.train()
    wall, cpu = timer.durations()
    return {"wall": wall, "cpu": cpu, "history": trainer.state.log_history, "precompute_s": 0.0}


def run_after(cfg, home: Path, train: Path, out: Path) -> dict:
    """``train_dpo`` as the pipeline calls it (step times from its progress events)."""
    import logging

    from sphere_core.progress import LOGGER_NAME, fields_of
    from sphere_core.training.dpo import train_dpo

    stamps: list[tuple[float, float]] = []

    class Collect(logging.Handler):
        def emit(self, record):
            if fields_of(record).get("kind") == "step":
                stamps.append((time.perf_counter(), time.process_time()))
            elif "reference log-probs ready" in record.getMessage():
                stamps[:] = [(time.perf_counter(), time.process_time())]  # training starts now

    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(Collect())
    logger.setLevel(logging.INFO)
    result = train_dpo(cfg, train, None, out, home)
    pairs = list(itertools.pairwise(stamps))
    return {
        "wall": [b[0] - a[0] for a, b in pairs],
        "cpu": [b[1] - a[1] for a, b in pairs],
        "history": result.log_history,
        "precompute_s": result.metrics["ref_precompute_s"],
        "bf16": result.metrics["bf16"],
        "threads": result.metrics["threads"],
    }


def child(ns) -> None:
    import torch

    cfg = bench_cfg(ns.model, ns.one_batch, ns.steps, ns.bf16)
    out = Path(ns.work) / f"{ns.variant}-b{ns.one_batch}"
    fn = run_before if ns.variant == "before" else run_after
    res = fn(cfg, Path(ns.home), Path(ns.work) / "train.parquet", out)
    res["maxrss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    res["threads"] = res.get("threads", torch.get_num_threads())
    res["history"] = [h for h in res["history"] if "loss" in h]
    print("RESULT " + json.dumps(res, default=float), flush=True)


def _mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2], help="pairs per optimizer step")
    ap.add_argument(
        "--steps", type=int, default=4, help="optimizer steps per run (the first is not timed)"
    )
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--bf16", choices=["auto", "true", "false"], default=None)
    ap.add_argument("--home", default=None, help="SPHERE_HOME (models are converted once under it)")
    ap.add_argument(
        "--variants", nargs="+", default=["before", "after"], choices=["before", "after"]
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--one-batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.bf16 is None:
        ns.bf16 = "true" if native_bf16_cpu() else "auto"
    from sphere_core.paths import sphere_home

    ns.home = str(Path(ns.home) if ns.home else sphere_home())
    if ns.child:
        return child(ns)

    from transformers import AutoTokenizer

    from sphere_core.backends.embedded import resolve_model_path

    Path(ns.home).mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(ns.model, Path(ns.home)))
    work = Path(tempfile.mkdtemp(prefix="dpo_step_"))
    pairs = make_pairs(tokenizer, ns.pairs, seed=0)
    pairs.to_parquet(work / "train.parquet")
    lens = [
        n_tokens(tokenizer, list(r["prompt"]) + list(r[k]))
        for r in pairs.to_dict("records")
        for k in ("chosen", "rejected")
    ]
    print(
        f"{ns.pairs} pairs, prompt+completion {min(lens)}-{max(lens)} tokens "
        f"(mean {_mean(lens):.0f}); model {ns.model}; after: training.bf16={ns.bf16}",
        flush=True,
    )
    load0 = os.getloadavg()
    results: dict[tuple[str, int], dict] = {}
    for batch in ns.batch:
        for variant in ns.variants:  # interleaved, so both see the same machine load
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--variant",
                variant,
                "--one-batch",
                str(batch),
                "--steps",
                str(ns.steps),
                "--model",
                ns.model,
                "--bf16",
                ns.bf16,
                "--home",
                ns.home,
                "--work",
                str(work),
            ]
            t0 = time.perf_counter()
            proc = subprocess.run(
                cmd,
                check=False,
                capture_output=True,
                text=True,
                env={**os.environ, "TQDM_DISABLE": "1"},
            )
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                sys.stderr.write(proc.stderr[-4000:])
                raise SystemExit(f"{variant} batch {batch} failed (exit {proc.returncode})")
            res = json.loads(line[len("RESULT ") :])
            res["s_per_step"] = _mean(res["wall"][1:])
            res["cpu_s_per_step"] = _mean(res["cpu"][1:])
            res["run_s"] = time.perf_counter() - t0
            results[(variant, batch)] = res
            losses = ", ".join(f"{h['loss']:.4f}" for h in res["history"])
            print(
                f"batch {batch} {variant:6s}: {res['s_per_step']:.1f} s/step, "
                f"{res['cpu_s_per_step']:.1f} CPU-s/step "
                f"(steps {', '.join(f'{w:.1f}' for w in res['wall'])}), "
                f"precompute {res['precompute_s']:.1f}s, peak RSS {res['maxrss_gb']:.2f} GiB, "
                f"losses [{losses}]",
                flush=True,
            )
    load1 = os.getloadavg()

    per_batch = {}
    for batch in ns.batch:
        before, after = results.get(("before", batch)), results.get(("after", batch))
        row: dict = {}
        for name, res in (("before", before), ("after", after)):
            if res:
                row[f"s_per_step_{name}"] = round(res["s_per_step"], 2)
                row[f"cpu_s_per_step_{name}"] = round(res["cpu_s_per_step"], 2)
                row[f"peak_rss_gb_{name}"] = round(res["maxrss_gb"], 2)
        if before and after:
            row["speedup"] = round(before["s_per_step"] / after["s_per_step"], 2)
            row["cpu_speedup"] = round(before["cpu_s_per_step"] / after["cpu_s_per_step"], 2)
            row["precompute_s"] = after["precompute_s"]
            hb, ha = before["history"], after["history"]
            row["max_abs_loss_diff"] = round(
                max(abs(a["loss"] - b["loss"]) for a, b in zip(hb, ha)), 4
            )
            row["max_abs_margin_diff"] = round(
                max(abs(a["rewards/margins"] - b["rewards/margins"]) for a, b in zip(hb, ha)), 4
            )
            row["losses_before"] = [round(h["loss"], 4) for h in hb]
            row["losses_after"] = [round(h["loss"], 4) for h in ha]
        per_batch[str(batch)] = row
    first = per_batch[str(ns.batch[0])]
    after_any = next((r for (v, _), r in results.items() if v == "after"), {})
    print(
        json.dumps(
            {
                "s_per_step_before": first.get("s_per_step_before"),
                "s_per_step_after": first.get("s_per_step_after"),
                "speedup": first.get("speedup"),
                "cpu_s_per_step_before": first.get("cpu_s_per_step_before"),
                "cpu_s_per_step_after": first.get("cpu_s_per_step_after"),
                "cpu_speedup": first.get("cpu_speedup"),
                "batch": ns.batch[0],
                "per_batch": per_batch,
                "dtype": "bf16-autocast" if after_any.get("bf16") else "float32",
                "device": "cpu",
                "threads": after_any.get("threads"),
                "cpu": platform.processor() or platform.machine(),
                "native_bf16": native_bf16_cpu(),
                "model": ns.model,
                "steps_timed": ns.steps - 1,
                "pairs": ns.pairs,
                "loadavg_start": [round(x, 2) for x in load0],
                "loadavg_end": [round(x, 2) for x in load1],
            }
        )
    )


if __name__ == "__main__":
    main()
