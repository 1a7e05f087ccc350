"""The ``openai-compatible`` generator: a running vLLM OpenAI-compatible server.

Owns the HTTP protocol: one ``POST {base_url}/v1/completions`` per prompt (with ``n``,
``temperature``, ``top_p``, ``top_k``, ``stop``, ``max_tokens``, ``logprobs=1``, ``seed``),
sent in parallel from a thread pool, with a per-request timeout and retries with
exponential backoff on timeouts, connection errors, 429 and 5xx. Finish reasons follow
vLLM: ``length`` -> "length"; ``stop`` with a ``stop_reason`` -> "stop", without -> "eos".
Chat templating and token counting use a local tokenizer loaded from ``spec.path``
(a local dir, a .gguf or "embedded"); nothing is fetched from a hub.
An API key, if the server needs one, is read from $SPHERE_OPENAI_API_KEY or $OPENAI_API_KEY.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from sphere_core.backends.registry import register_generator
from sphere_core.backends.sampling import GeneratorBase, find_stop
from sphere_core.config import ModelSpec
from sphere_core.errors import BackendError, GenerationError
from sphere_core.schemas import Step

RETRY_STATUS = {408, 429, 500, 502, 503, 504}


def completions_url(base_url: str) -> str:
    """``http://h:8000`` or ``http://h:8000/v1`` -> ``http://h:8000/v1/completions``."""
    base = base_url.rstrip("/")
    return f"{base}/completions" if base.endswith("/v1") else f"{base}/v1/completions"


class OpenAICompatGenerator(GeneratorBase):
    """Generator protocol over an OpenAI-compatible ``/v1/completions`` endpoint."""

    name = "openai-compatible"

    def __init__(self, spec: ModelSpec, home: Path, *, max_retries: int = 3,
                 backoff_s: float = 0.5, max_concurrency: int = 32) -> None:
        if not spec.base_url:
            raise BackendError("the openai-compatible backend needs models.*.base_url (e.g. http://host:8000/v1)")
        if spec.adapter and not spec.served_model_name:
            raise BackendError(
                f"the openai-compatible backend cannot apply the LoRA adapter {spec.adapter} itself: serve "
                f"it (vLLM: --enable-lora --lora-modules trained={spec.adapter}) and set "
                "models.policy.served_model_name to that name"
            )
        self.spec = spec
        self.home = home
        self.url = completions_url(spec.base_url)
        self.model_name = spec.served_model_name or spec.path
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_concurrency = max_concurrency
        key = os.environ.get("SPHERE_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(spec.request_timeout_s), headers=headers)
        self._tokenizer = None
        self._tok_lock = threading.Lock()

    # -- tokenizer (local) ------------------------------------------------------------
    @property
    def tokenizer(self):
        with self._tok_lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                from sphere_core.backends.embedded import resolve_model_path

                self._tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_path(self.spec.path, self.home)))
            return self._tokenizer

    # -- generation -------------------------------------------------------------------
    def _sample(self, prompts: list[str], n: int, temperature: float, stop: list[str],
                max_tokens: int, *, top_p: float, top_k: int, seed: int | None) -> list[list[Step]]:
        stops = stop
        bodies = []
        for i, prompt in enumerate(prompts):
            body: dict[str, Any] = {
                "model": self.model_name, "prompt": prompt, "n": n, "temperature": temperature,
                "top_p": top_p, "max_tokens": max_tokens, "logprobs": 1,
            }
            if stops:
                body["stop"] = stops
            if top_k > 0:
                body["top_k"] = top_k
            if seed is not None:
                body["seed"] = int(seed) + i  # distinct prompts -> distinct streams, reproducible
            bodies.append(body)
        workers = max(1, min(self.max_concurrency, len(bodies)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sphere-openai") as pool:
            responses = list(pool.map(self._post, bodies))
        return [self._parse(resp, n, stops, i) for i, resp in enumerate(responses)]

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TimeoutException:
                last = f"no answer within {self.spec.request_timeout_s:g} s"
                continue
            except httpx.TransportError as err:
                last = f"{type(err).__name__}: {err}"
                continue
            if response.status_code in RETRY_STATUS:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code != 200:
                raise GenerationError(
                    f"server {self.url} rejected the request: HTTP {response.status_code}: {response.text[:300]}"
                )
            try:
                return response.json()
            except ValueError:
                raise GenerationError(f"server {self.url} returned non-JSON: {response.text[:200]!r}") from None
        raise GenerationError(
            f"server {self.url} failed after {self.max_retries + 1} attempts; last error: {last}"
        )

    def _parse(self, payload: dict[str, Any], n: int, stops: list[str], prompt_index: int) -> list[Step]:
        choices = payload.get("choices")
        if not isinstance(choices, list) or len(choices) != n:
            got = len(choices) if isinstance(choices, list) else type(choices).__name__
            raise GenerationError(f"server {self.url} returned {got} choices for prompt {prompt_index}, expected {n}")
        steps = []
        for choice in sorted(choices, key=lambda c: c.get("index", 0)):
            logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
            if logprobs is None:
                raise GenerationError(f"server {self.url} returned no logprobs for prompt {prompt_index}")
            token_logprobs = [float(x) for x in logprobs if x is not None]
            text = choice.get("text") or ""
            cut = find_stop(text, stops)
            if cut != -1:  # servers normally drop the stop string; be safe if one does not
                text = text[:cut]
            steps.append(Step(text=text, token_logprobs=token_logprobs,
                              finish_reason=self._finish(choice, stops, prompt_index),
                              num_tokens=len(token_logprobs)))
        return steps

    def _finish(self, choice: dict[str, Any], stops: list[str], prompt_index: int) -> str:
        reason = choice.get("finish_reason")
        if reason == "length":
            return "length"
        if reason == "stop":
            if "stop_reason" in choice:  # vLLM: None = EOS, else the matched stop string/token
                return "eos" if choice["stop_reason"] is None else "stop"
            return "stop" if stops else "eos"
        raise GenerationError(f"server {self.url} returned finish_reason {reason!r} for prompt {prompt_index}")

    def close(self) -> None:
        self._client.close()


@register_generator("openai-compatible")
def _factory(spec: ModelSpec, home: Path) -> OpenAICompatGenerator:
    return OpenAICompatGenerator(spec, home)

