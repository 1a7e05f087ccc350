"""Stage-1 search through llama.cpp's ``llama-server`` vs the in-process ``hf`` backend, and
``llama-batched-bench`` on the same GGUF at the search's batch sizes: the anchor a CPU user
would pick instead of the in-process backend.

Both searches run the same questions with the same config (judge PRM in-process on the same
model in both); the figure is generated tokens per second inside the search's generate calls
(``SearchStats.generated_tokens / generate_s``). llama-server runs with ``--slots`` parallel
sequences and ``--threads`` threads (build: ``tests/support/llama_server.py``, cached outside
the clone). Prints human-readable lines, then ONE JSON line LAST.
Usage: python bench/llama_server.py [--model embedded|embedded-small] [--questions 4] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support

from search_setup import load_setup, search_config

from sphere_core.search.params import SearchParams
from sphere_core.search.pruned import SearchStats, pruned_search
from tests.support import llama_server

ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|" + r"\s*([\d.]+)\s*\|" * 7)


def _machine() -> str:
    """CPU model, core count and whether it has native bf16 (what the figures depend on)."""
    from sphere_core.backends.cpu_features import cpu_has_native_bf16

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"{name}, {os.cpu_count()} cores, {bf16}"


def run_search(cfg, home: str | None, questions: int) -> dict:
    from sphere_core.backends.cache import clear_caches

    clear_caches()
    gen, prm, _load_s, tasks = load_setup(cfg, home, questions)
    stats = SearchStats()
    t0 = time.perf_counter()
    results = pruned_search(
        tasks,
        gen,
        prm,
        SearchParams.for_stage(cfg, "stage1"),
        cfg.reward,
        stage="stage1",
        stats=stats,
    )
    wall = time.perf_counter() - t0
    finished = sum(1 for r in results if r.max_path.text and r.min_path.text)
    out = {
        "wall_s": round(wall, 1),
        "generate_s": round(stats.generate_s, 1),
        "prm_s": round(stats.prm_s, 1),
        "generated_tokens": stats.generated_tokens,
        "tok_per_s": round(stats.generated_tokens / max(stats.generate_s, 1e-9), 1),
        "generate_calls": stats.generate_calls,
        "finished_questions": finished,
    }
    usage = getattr(gen, "usage", None)
    if usage is not None:
        out.update(
            requests=usage.requests,
            prompt_tokens=usage.prompt_tokens,
            cached_prompt_tokens=usage.cached_prompt_tokens,
        )
    return out


def batched_bench(gguf: Path, threads: int, batches: str, pp: int, tg: int) -> list[dict]:
    cmd = [
        str(llama_server.bin_dir() / "llama-batched-bench"),
        "-m",
        str(gguf),
        "-c",
        "16384",
        "-b",
        "2048",
        "-ub",
        "512",
        "-npp",
        str(pp),
        "-ntg",
        str(tg),
        "-npl",
        batches,
        "-t",
        str(threads),
    ]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = []
    for line in text.splitlines():
        m = ROW.match(line.strip())
        if m:
            pp_, tg_, b, _, _, s_pp, _, s_tg, _, s = m.groups()
            rows.append(
                {
                    "pp": int(pp_),
                    "tg": int(tg_),
                    "batch": int(b),
                    "prefill_tok_s": float(s_pp),
                    "decode_tok_s": float(s_tg),
                    "total_tok_s": float(s),
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--questions", type=int, default=4)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,3,6,12,24")
    ap.add_argument("--home", default=None)
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()

    from sphere_core.backends.embedded import verified_gguf
    from sphere_core.paths import sphere_home

    llama_server.build()
    home = Path(args.home) if args.home else sphere_home()
    gguf = verified_gguf(args.model, home)
    shape = {
        "questions": args.questions,
        "E": 3,
        "depth": 2,
        "step_tokens": 32,
        "completion": 32,
        "model": args.model,
        "device": "cpu",
        "dtype": "auto",
    }
    report: dict = {
        "model": args.model,
        "gguf": gguf.name,
        "questions": args.questions,
        "slots": args.slots,
        "threads": args.threads,
        "machine": _machine(),
    }
    with llama_server.LlamaServer(gguf, slots=args.slots, threads=args.threads) as server:
        cfg = search_config(**shape).model_copy(deep=True)
        policy = cfg.models.policy.model_copy(
            update={"backend": "openai-compatible", "base_url": server.base_url}
        )
        cfg.models.policy = policy
        report["server"] = run_search(cfg, args.home, args.questions)
        print("llama-server:", report["server"], flush=True)
    if not args.skip_hf:
        report["hf"] = run_search(search_config(**shape), args.home, args.questions)
        print("hf:", report["hf"], flush=True)
    report["batched_bench"] = batched_bench(gguf, args.threads, args.batches, 128, 32)
    for row in report["batched_bench"]:
        print("llama-batched-bench:", row, flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
