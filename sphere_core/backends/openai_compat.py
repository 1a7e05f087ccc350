"""The ``openai-compatible`` generator: a running OpenAI-compatible completions server
(vLLM's OpenAI server on GPU, llama.cpp's ``llama-server`` on CPU).

Owns the HTTP protocol: ``POST {base_url}/v1/completions`` per prompt (``n``, ``temperature``,
``top_p``, ``top_k``, ``stop``, ``max_tokens``, ``logprobs=1``, ``seed``), sent in parallel
from a thread pool, with a per-request timeout and retries with exponential backoff on
timeouts, connection errors, 429 and 5xx. Chat templating and token counting use a local
tokenizer loaded from ``spec.path`` (a local dir, a .gguf or "embedded"); nothing is fetched.
An API key, if the server needs one, is read from $SPHERE_OPENAI_API_KEY or $OPENAI_API_KEY.

What differs between servers, and how it is handled:

* **which server**: ``GET {root}/props`` is answered by llama.cpp only (probed once). To
  llama.cpp the client also sends ``cache_prompt: true`` (reuse the KV cache of the longest
  common prefix in a slot: the search re-sends the same question prefix at every depth),
  ``min_p: 0`` and ``top_k`` even when 0 (its defaults are min_p 0.05 and top_k 40; the
  other backends sample from top-k/top-p only). vLLM's automatic prefix caching is a server
  flag (on by default in vLLM's V1 engine, ``--enable-prefix-caching``).
* **log-prob shape**: vLLM answers the legacy ``logprobs.token_logprobs`` list; llama.cpp the
  chat-completions shape ``logprobs.content[j].logprob`` (with each token's ``id``). Both
  are read; a server that returns neither (``transformers serve`` ignores ``logprobs``)
  fails with one line naming the server and what is missing.
* **EOS vs stop string** (both reported as ``finish_reason: "stop"``): vLLM's ``stop_reason``
  is None for EOS and the matched stop string otherwise. llama.cpp has no ``stop_reason`` but
  reports every generated token's id, EOS included (its text is empty): the step ended on
  EOS when its last token is a special token of the local tokenizer, else on a stop string.
  A server with neither: "stop" when stop strings were sent, else "eos".
* **n**: a server that returns fewer choices than asked (ignores ``n``) or rejects ``n`` with
  HTTP 400 (llama.cpp caps it at its slot count) is asked for the missing choices one request
  each, and from then on every prompt is fanned out into single requests.
* **seeds**: prompt i of a call gets seed ``seed + i*n`` and its choice j ``seed + i*n + j``
  when fanned out; llama.cpp seeds the j-th of n choices of one request the same way.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sphere_core.backends.registry import register_generator
from sphere_core.backends.sampling import GeneratorBase, find_stop
from sphere_core.config import ModelSpec
from sphere_core.errors import BackendError, GenerationError
from sphere_core.schemas import Step

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 429, 500, 502, 503, 504}


def completions_url(base_url: str) -> str:
    """``http://h:8000`` or ``http://h:8000/v1`` -> ``http://h:8000/v1/completions``."""
    base = base_url.rstrip("/")
    return f"{base}/completions" if base.endswith("/v1") else f"{base}/v1/completions"


def server_root(base_url: str) -> str:
    """``http://h:8000/v1`` -> ``http://h:8000`` (where llama.cpp serves ``/props``)."""
    base = base_url.rstrip("/")
    return base.removesuffix("/v1")


class _Rejected(GenerationError):
    """A non-retryable HTTP answer (kept apart so a rejected ``n`` can fall back to singles)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Job:
    """One HTTP request: ``count`` choices of prompt ``prompt`` starting at choice ``first``."""

    prompt: int
    first: int
    count: int


@dataclass
class ServerUsage:
    """Token counts the server reported (``usage``), summed over every request."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, usage: dict[str, Any] | None) -> None:
        usage = usage or {}
        details = usage.get("prompt_tokens_details") or {}
        self.requests += 1
        self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.cached_prompt_tokens += int(details.get("cached_tokens") or 0)
        self.completion_tokens += int(usage.get("completion_tokens") or 0)


class OpenAICompatGenerator(GeneratorBase):
    """Generator protocol over an OpenAI-compatible ``/v1/completions`` endpoint."""

    name = "openai-compatible"

    def __init__(
        self,
        spec: ModelSpec,
        home: Path,
        *,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_concurrency: int = 32,
    ) -> None:
        if not spec.base_url:
            raise BackendError(
                "the openai-compatible backend needs models.*.base_url (e.g. http://host:8000/v1)"
            )
        if spec.adapter and not spec.served_model_name:
            raise BackendError(
                f"the openai-compatible backend cannot apply the LoRA adapter {spec.adapter} "
                f"itself: serve it (vLLM: --enable-lora --lora-modules trained={spec.adapter}) "
                "and set models.policy.served_model_name to that name"
            )
        self.spec = spec
        self.home = home
        self.url = completions_url(spec.base_url)
        self.root = server_root(spec.base_url)
        self.model_name = spec.served_model_name or spec.path
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_concurrency = max_concurrency
        self.usage = ServerUsage()
        key = os.environ.get("SPHERE_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(spec.request_timeout_s), headers=headers)
        self._tokenizer = None
        self._special_ids: frozenset[int] | None = None
        self._tok_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._kind: str | None = None
        self.fan_out = False  # True once the server answered fewer choices than ``n``

    # -- tokenizer (local) ------------------------------------------------------------
    @property
    def tokenizer(self):
        with self._tok_lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                from sphere_core.backends.embedded import resolve_model_path

                path = resolve_model_path(self.spec.path, self.home)
                self._tokenizer = AutoTokenizer.from_pretrained(str(path))
            return self._tokenizer

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of the local tokenizer's special tokens (EOS, end-of-turn, padding...)."""
        if self._special_ids is None:
            tok = self.tokenizer
            ids = set(tok.all_special_ids)
            ids.update(i for i, t in tok.added_tokens_decoder.items() if t.special)
            self._special_ids = frozenset(int(i) for i in ids)
        return self._special_ids

    # -- which server -----------------------------------------------------------------
    @property
    def server_kind(self) -> str:
        """``llama.cpp`` when ``GET {root}/props`` answers like llama-server, else ``openai``."""
        with self._state_lock:
            if self._kind is None:
                self._kind = self._probe_kind()
                log.info("openai-compatible server %s: %s", self.root, self._kind)
            return self._kind

    def _probe_kind(self) -> str:
        try:
            response = self._client.get(f"{self.root}/props", timeout=10.0)
            props = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return "openai"
        if isinstance(props, dict) and "default_generation_settings" in props:
            return "llama.cpp"
        return "openai"

    # -- generation -------------------------------------------------------------------
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
        base = {
            "model": self.model_name,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "logprobs": 1,
        }
        if stop:
            base["stop"] = stop
        if self.server_kind == "llama.cpp":
            base.update(cache_prompt=True, min_p=0.0, top_k=top_k)
        elif top_k > 0:
            base["top_k"] = top_k

        def body(job: _Job) -> dict[str, Any]:
            one = {**base, "prompt": prompts[job.prompt], "n": job.count}
            if seed is not None:  # distinct prompts and choices -> distinct, reproducible streams
                one["seed"] = int(seed) + job.prompt * n + job.first
            return one

        def run(job: _Job) -> list[dict[str, Any]]:
            return self._choices(job, body, n)

        per = [1] * n if self.fan_out else [n]
        jobs = [
            _Job(i, j, c) for i in range(len(prompts)) for j, c in zip(range(0, n, per[0]), per)
        ]
        workers = max(1, min(self.max_concurrency, len(jobs)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sphere-openai") as pool:
            answers = list(pool.map(run, jobs))
        rows: list[list[Step]] = [[] for _ in prompts]
        for job, choices in zip(jobs, answers):
            rows[job.prompt].extend(self._step(c, stop, job.prompt) for c in choices)
        return rows

    def _choices(self, job: _Job, body, n: int) -> list[dict[str, Any]]:
        """The choices of one job; a server that ignores or refuses ``n`` is topped up with
        single requests (and every later call fans out)."""
        try:
            payload = self._post(body(job))
        except _Rejected as err:
            if job.count == 1 or err.status != 400:
                raise
            self._note_fan_out(f"it rejected n={job.count} ({err})")
            choices: list[dict[str, Any]] = []
        else:
            choices = payload.get("choices")
            if not isinstance(choices, list):
                raise GenerationError(
                    f"server {self.url} returned no 'choices' list for prompt {job.prompt}"
                )
            choices = sorted(choices, key=lambda c: c.get("index", 0))
        if len(choices) > job.count:
            raise GenerationError(
                f"server {self.url} returned {len(choices)} choices for prompt "
                f"{job.prompt}, expected {job.count}"
            )
        if len(choices) < job.count:
            if choices:
                self._note_fan_out(f"it returned {len(choices)} of n={job.count} choices")
            for j in range(job.first + len(choices), job.first + job.count):
                single = self._post(body(_Job(job.prompt, j, 1))).get("choices") or []
                if len(single) != 1:
                    raise GenerationError(
                        f"server {self.url} returned {len(single)} choices for "
                        f"prompt {job.prompt} with n=1"
                    )
                choices.append(single[0])
        return choices

    def _note_fan_out(self, why: str) -> None:
        with self._state_lock:
            if not self.fan_out:
                log.warning(
                    "server %s ignores n: %s; sending one request per choice", self.url, why
                )
            self.fan_out = True

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
                raise _Rejected(
                    f"server {self.url} rejected the request: HTTP "
                    f"{response.status_code}: {response.text[:300]}",
                    response.status_code,
                )
            try:
                payload = response.json()
            except ValueError:
                raise GenerationError(
                    f"server {self.url} returned non-JSON: {response.text[:200]!r}"
                ) from None
            if not isinstance(payload, dict):
                raise GenerationError(
                    f"server {self.url} returned {type(payload).__name__}, not a JSON object"
                )
            with self._state_lock:
                self.usage.add(payload.get("usage"))
            return payload
        raise GenerationError(
            f"server {self.url} failed after {self.max_retries + 1} attempts; last error: {last}"
        )

    # -- parsing ----------------------------------------------------------------------
    def _step(self, choice: dict[str, Any], stops: list[str], prompt_index: int) -> Step:
        logprobs, token_ids = self._logprobs(choice, prompt_index)
        text = choice.get("text") or ""
        cut = find_stop(text, stops)
        if cut != -1:  # servers normally drop the stop string; be safe if one does not
            text = text[:cut]
        finish = self._finish(choice, stops, token_ids, prompt_index)
        return Step(
            text=text, token_logprobs=logprobs, finish_reason=finish, num_tokens=len(logprobs)
        )

    def _logprobs(
        self, choice: dict[str, Any], prompt_index: int
    ) -> tuple[list[float], list[int] | None]:
        """(per-token log-probs, token ids or None) from either answer shape."""
        block = choice.get("logprobs")
        block = block if isinstance(block, dict) else {}
        legacy = block.get("token_logprobs")
        if isinstance(legacy, list):  # vLLM / OpenAI legacy completions
            return [float(x) for x in legacy if x is not None], None
        content = block.get("content")
        if isinstance(content, list) and all(
            isinstance(c, dict) and "logprob" in c for c in content
        ):
            ids = [c.get("id") for c in content]  # llama.cpp: chat-completions shape
            values = [float(c["logprob"]) for c in content]
            return values, ids if all(isinstance(i, int) for i in ids) else None
        raise GenerationError(
            f"server {self.url} returned no per-token log-probs for prompt {prompt_index} "
            "(neither choices[].logprobs.token_logprobs nor choices[].logprobs.content[].logprob); "
            "the search needs them: use a server that honours 'logprobs' (vLLM, llama.cpp's "
            "llama-server)"
        )

    def _finish(
        self,
        choice: dict[str, Any],
        stops: list[str],
        token_ids: list[int] | None,
        prompt_index: int,
    ) -> str:
        reason = choice.get("finish_reason")
        if reason == "length":
            return "length"
        if reason != "stop":
            raise GenerationError(
                f"server {self.url} returned finish_reason {reason!r} for prompt {prompt_index}"
            )
        if "stop_reason" in choice:  # vLLM: None = EOS, else the matched stop string/token
            return "eos" if choice["stop_reason"] is None else "stop"
        if token_ids:  # llama.cpp: EOS is the last generated token (a special token)
            return "eos" if token_ids[-1] in self.special_ids else "stop"
        return "stop" if stops else "eos"

    def close(self) -> None:
        self._client.close()


@register_generator("openai-compatible")
def _factory(spec: ModelSpec, home: Path) -> OpenAICompatGenerator:
    return OpenAICompatGenerator(spec, home)
