"""Search throughput on the embedded policy: lock-step batching vs raw generation and vs a loop.

Prints human-readable lines, then ONE JSON line LAST with:
  search_vs_raw_throughput_ratio  generated tokens/s inside the search's generate calls, divided
                                  by tokens/s of plain batched generate calls over the same
                                  prompts (same sequences per call, same max tokens, no stop string)
  lockstep_speedup                wall time of a per-question loop / lock-step search
                                  (same questions, seeds)
  prm_time_share                  share of the lock-step search wall time spent in the PRM
Every phase starts with the generator's prefix key/value cache and the PRM's caches cleared,
so no phase reuses another's prompts or scores.
Usage: python bench/search_throughput.py [--quick] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from search_setup import load_setup, search_config

from sphere_core.search.params import SearchParams
from sphere_core.search.pruned import SearchStats, pruned_search


class Recorder:
    """Generator proxy that records every generate call made by the search."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.name = getattr(inner, "name", "recorded")

    def apply_chat_template(self, messages, add_generation_prompt=True):
        return self.inner.apply_chat_template(messages, add_generation_prompt)

    def count_tokens(self, text):
        return self.inner.count_tokens(text)

    def generate_steps(self, prompts, n, temperature, stop, max_tokens, **kw):
        self.calls.append(
            {
                "prompts": list(prompts),
                "n": n,
                "temperature": temperature,
                "max_tokens": max_tokens,
                **kw,
            }
        )
        return self.inner.generate_steps(prompts, n, temperature, stop, max_tokens, **kw)


def _clear(*backends) -> None:
    """Drop prefix-KV and score caches so that a timed phase starts cold."""
    for b in backends:
        for name in ("clear_prefix_cache", "clear_cache"):
            fn = getattr(b, name, None)
            if callable(fn):
                fn()


def _tokens(outs) -> int:
    return sum(s.num_tokens or len(s.token_logprobs) for o in outs for s in o)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer questions and shorter steps")
    ap.add_argument("--home", default=None, help="SPHERE_HOME (models are converted once under it)")
    ap.add_argument("--model", default="embedded", help="models.policy.path (also the judge model)")
    ap.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    args = ap.parse_args()
    n_q, depth, step_tokens, E, completion = (6, 2, 32, 3, 32) if args.quick else (12, 3, 48, 3, 96)
    cfg = search_config(
        questions=n_q,
        E=E,
        depth=depth,
        step_tokens=step_tokens,
        completion=completion,
        model=args.model,
        device="cpu",
        dtype=args.dtype,
    )
    gen, prm, load_s, tasks = load_setup(cfg, args.home, n_q)
    params = SearchParams.for_stage(cfg, "stage1")
    gen.generate_steps(
        [gen.apply_chat_template(tasks[0].messages)], 1, 0.8, None, 4, seed=0
    )  # warm-up

    rec, stats = Recorder(gen), SearchStats()
    _clear(gen, prm)
    t0 = time.perf_counter()
    pruned_search(tasks, rec, prm, params, cfg.reward, stage="stage1", stats=stats)
    lock_s = time.perf_counter() - t0
    search_tps = stats.generated_tokens / stats.generate_s
    print(
        f"lock-step: {len(tasks)} questions, {stats.generate_calls} generate calls, "
        f"{stats.generated_tokens} tokens, {lock_s:.1f}s wall, gen {stats.generate_s:.1f}s, "
        f"prm {stats.prm_s:.1f}s"
    )

    raw_tokens, raw_s = 0, 0.0
    _clear(gen, prm)
    for c in rec.calls:
        t0 = time.perf_counter()
        outs = gen.generate_steps(
            c["prompts"],
            c["n"],
            c["temperature"],
            None,
            c["max_tokens"],
            top_p=c.get("top_p", 1.0),
            top_k=c.get("top_k", 0),
            seed=c.get("seed"),
        )
        raw_s += time.perf_counter() - t0
        raw_tokens += _tokens(outs)
    raw_tps = raw_tokens / raw_s
    print(
        f"raw replay: {raw_tokens} tokens in {raw_s:.1f}s ({raw_tps:.1f} tok/s) vs search "
        f"{search_tps:.1f} tok/s"
    )

    loop_stats = SearchStats()
    _clear(gen, prm)
    t0 = time.perf_counter()
    for task in tasks:
        pruned_search([task], gen, prm, params, cfg.reward, stage="stage1", stats=loop_stats)
    loop_s = time.perf_counter() - t0
    print(f"per-question loop: {loop_s:.1f}s ({loop_stats.generate_calls} generate calls)")

    import torch

    print(
        json.dumps(
            {
                "bench": "search_throughput",
                "quick": args.quick,
                "questions": len(tasks),
                "E": E,
                "max_depth": depth,
                "max_step_tokens": step_tokens,
                "prm": cfg.prm.kind,
                "model": args.model,
                "dtype": str(gen.dtype).replace("torch.", ""),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "completion_max_tokens": params.completion_max_tokens,
                "device": "cpu",
                "torch_threads": torch.get_num_threads(),
                "machine": platform.machine(),
                "model_load_s": round(load_s, 2),
                "search_generated_tokens": stats.generated_tokens,
                "search_tokens_per_s": round(search_tps, 2),
                "raw_tokens_per_s": round(raw_tps, 2),
                "search_vs_raw_throughput_ratio": round(search_tps / raw_tps, 3),
                "lockstep_wall_s": round(lock_s, 2),
                "loop_wall_s": round(loop_s, 2),
                "lockstep_speedup": round(loop_s / lock_s, 3),
                "prm_time_share": round(stats.prm_s / lock_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
