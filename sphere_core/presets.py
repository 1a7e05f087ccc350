"""Named presets: partial configs applied on top of the defaults (``--preset NAME``).

Pure data; ``sphere_core.config.resolve_config`` merges a preset before ``--config`` and
``--set``. Each preset says in a comment what it is for and where its choices are measured.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # Embedded models on CPU: Qwen2.5-Coder-0.5B policy + judge, SmolLM2-135M as pi_small,
    # 8 questions chosen to be solved part of the time (docs/demo.md); ends in minutes.
    "demo": {
        "models": {"small": {"path": "embedded-small"}},
        "data": {"path": "builtin:gsm8k_demo", "limit": 8},
        "search": {
            "num_candidates": 3,
            "max_depth": 3,
            "max_step_tokens": 96,
            "completion_max_tokens": 160,
        },
        "prm": {"kind": "judge", "batch_size": 16},
        "training": {
            "num_epochs": 1,
            "max_steps": 8,
            "learning_rate": 5e-5,
            "warmup_ratio": 0.0,
            "lora_r": 8,
            "lora_alpha": 16,
            "per_device_batch_size": 2,
            "max_length": 512,
        },
        "evaluation": {"benchmarks": ["gsm8k", "math500"], "limit": 8, "max_new_tokens": 256},
        "pairs": {"eval_fraction": 0.25},
        "orchestration": {"shard_size": 8, "retries": 1, "retry_delay_s": 1},
    },
    # The learning study on the embedded models (docs/results.md): 128 GSM8K-train questions
    # of builtin:gsm8k_study (scripts/select_study_questions.py: disjoint from the demo, the
    # tuning set and every benchmark), the demo's search budget, LoRA DPO, and greedy Pass@1
    # of base and trained policy on the first 300 GSM8K-test questions. The control arm is
    # the same preset with search.strategy=sampling (docs/results.md gives the command).
    "study": {
        "models": {"small": {"path": "embedded-small"}},
        "data": {"path": "builtin:gsm8k_study", "limit": 128},
        "search": {
            "num_candidates": 3,
            "max_depth": 3,
            "max_step_tokens": 96,
            "completion_max_tokens": 160,
        },
        "prm": {"kind": "judge", "batch_size": 16},
        "training": {
            "num_epochs": 2,
            "learning_rate": 2e-5,
            "beta": 0.1,
            "warmup_ratio": 0.1,
            "lora_r": 16,
            "lora_alpha": 32,
            "per_device_batch_size": 4,
            "max_length": 640,
        },
        "evaluation": {
            "benchmarks": ["gsm8k"],
            "limit": 300,
            "greedy": True,
            "max_new_tokens": 320,
            "self_correction": False,
        },
        "pairs": {"eval_fraction": 0.1},
        "orchestration": {"shard_size": 16, "retries": 1, "retry_delay_s": 5},
    },
    # The paper's settings; model paths must be supplied by the user (local dirs).
    "paper": {
        "search": {"num_candidates": 5, "temperature": 0.8, "small_candidates_factor": 2},
        "training": {
            "beta": 0.8,
            "learning_rate": 1e-6,
            "warmup_ratio": 0.2,
            "num_epochs": 10,
            "lora_r": 64,
            "lora_alpha": 128,
            "lora_dropout": 0.05,
        },
        "evaluation": {"temperature": 0.1, "top_p": 1.0, "top_k": 50},
    },
}
