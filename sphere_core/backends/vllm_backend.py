"""The ``vllm`` generator: offline ``vllm.LLM`` with prefix caching (single GPU node).

Owns the mapping from the Generator protocol onto ``LLM.generate`` + ``SamplingParams``
(one SamplingParams per prompt so each gets its own seed) and from vLLM outputs back to
``Step`` (text without the stop string, raw log-probs of every sampled token: vLLM's
default ``logprobs_mode`` is raw log-probs, matching the ``hf`` backend). vLLM is imported
lazily; without it the factory raises BackendError with the install hint. A
``spec.adapter`` (a trained LoRA adapter) is served as a vLLM LoRA request on the base weights.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any

from sphere_core.backends.embedded import resolve_model_path
from sphere_core.backends.registry import register_generator
from sphere_core.backends.sampling import GeneratorBase, find_stop
from sphere_core.config import ModelSpec
from sphere_core.errors import BackendError, GenerationError
from sphere_core.schemas import Step

INSTALL_HINT = "vLLM is not installed: pip install 'sphere-dpo[gpu]'"


def import_vllm():
    try:
        return importlib.import_module("vllm")
    except ImportError as err:
        raise BackendError(f"{INSTALL_HINT} ({err})") from err


class VLLMGenerator(GeneratorBase):
    """Generator protocol on an in-process ``vllm.LLM``."""

    name = "vllm"

    def __init__(self, spec: ModelSpec, home: Path) -> None:
        vllm = import_vllm()
        self._vllm = vllm
        self.model_dir = resolve_model_path(spec.path, home)
        kwargs: dict[str, Any] = {
            "model": str(self.model_dir),
            "enable_prefix_caching": True,
            "gpu_memory_utilization": spec.gpu_memory_utilization,
            "max_model_len": spec.max_model_len,
        }
        if spec.dtype != "auto":
            kwargs["dtype"] = spec.dtype
        self.lora = None
        if spec.adapter:
            from sphere_core.backends.adapters import check_adapter_dir, lora_rank

            adapter = check_adapter_dir(spec.adapter)
            kwargs.update(enable_lora=True, max_lora_rank=max(8, lora_rank(adapter)))
            self.lora = importlib.import_module("vllm.lora.request").LoRARequest(
                "sphere-adapter", 1, str(adapter)
            )
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as err:  # vLLM raises many types (CUDA, OOM, config)
            raise BackendError(f"vLLM could not load {self.model_dir}: {err}") from err
        self.tokenizer = self.llm.get_tokenizer()
        self._lock = threading.Lock()

    def _sample(
        self,
        prompts: list[str],
        n: int,
        temperature: float,
        stop: list[str],
        max_tokens: int,
        *,
        top_p: float,
        top_k: int,
        seed: int | None,
    ) -> list[list[Step]]:
        stops = stop
        params = [
            self._vllm.SamplingParams(
                n=n,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k if top_k > 0 else -1,
                stop=stops or None,
                max_tokens=max_tokens,
                logprobs=0,
                seed=None if seed is None else int(seed) + i,
            )
            for i in range(len(prompts))
        ]
        with self._lock:
            outputs = self.llm.generate(
                list(prompts), params, use_tqdm=False, lora_request=self.lora
            )
        return [[to_step(c, stops, i) for c in out.outputs] for i, out in enumerate(outputs)]


def to_step(completion: Any, stops: list[str], prompt_index: int) -> Step:
    """vLLM ``CompletionOutput`` -> Step (sampled-token log-probs; finish reason mapped)."""
    token_ids = list(completion.token_ids)
    if completion.logprobs is None or len(completion.logprobs) != len(token_ids):
        raise GenerationError(f"vLLM returned no per-token logprobs for prompt {prompt_index}")
    logprobs = [float(entry[tok].logprob) for entry, tok in zip(completion.logprobs, token_ids)]
    text = completion.text
    cut = find_stop(text, stops)
    if cut != -1:
        text = text[:cut]
    if completion.finish_reason == "length":
        finish = "length"
    elif completion.finish_reason == "stop":
        finish = "eos" if completion.stop_reason is None else "stop"
    else:
        raise GenerationError(
            f"vLLM finish_reason {completion.finish_reason!r} for prompt {prompt_index}"
        )
    return Step(text=text, token_logprobs=logprobs, finish_reason=finish, num_tokens=len(token_ids))


@register_generator("vllm")
def _factory(spec: ModelSpec, home: Path) -> VLLMGenerator:
    return VLLMGenerator(spec, home)
