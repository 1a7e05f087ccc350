"""The ``hf`` generator: batched step sampling with transformers on CPU or CUDA.

Owns the decoding loop (our own): every prompt is tokenized in full and matched against a
prefix cache of attention keys/values at the token level (``prefix_cache.PrefixKVCache``, an
LRU bounded by bytes: ``prefix_cache_mb``), so only each prompt's uncached tail is prefilled;
a prompt is prefilled once and its cache row repeated for its n continuations. When the
search expands a node at the next depth, its prompt is the parent's prompt plus the sampled
step, and both were cached (the prompt after prefill, the prompt plus the step's tokens when
the row finished), so only the few tokens after the longest common token prefix are fed.
The batch's keys/values live in one preallocated tensor written in place (``BatchKV``);
finished rows (stop string / EOS / length) leave the batch as they finish. Sampling draws by
inverse CDF, and stop strings are checked on incrementally decoded text
(``sampling.StreamText``), so no step re-decodes a whole row.
Also teacher-forced ``sequence_logprobs`` (used by evaluation).
Step text / log-prob semantics are documented in ``sphere_core.backends.sampling``.
Does not own model-path resolution (``embedded.py``) or caching of instances (``cache.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sphere_core import interrupts
from sphere_core.backends.embedded import resolve_model_path
from sphere_core.backends.prefill import (
    PrefillCounter,
    RowLayout,
    even_chunks,
    gather_kv,
    prefill,
    shared_prefixes,
    worth_prefilling,
)
from sphere_core.backends.prefix_cache import PrefixKVCache, default_cache_bytes, kv_geometry
from sphere_core.backends.registry import register_generator
from sphere_core.backends.sampling import (
    GeneratorBase,
    StreamText,
    chosen_logprobs,
    find_stop,
    sample_tokens,
)
from sphere_core.config import ModelSpec
from sphere_core.devices import pick_device, pick_dtype
from sphere_core.errors import GenerationError, ModelLoadError
from sphere_core.schemas import Step

LOGITS_BUDGET = 2048
"""Max (rows x kept positions) of full-vocabulary logits materialised at once in sequence_logprobs.
"""


@dataclass
class _Row:
    """One continuation being decoded."""

    prompt_index: int
    limit: int
    stream: StreamText
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish: str | None = None


class HFGenerator(GeneratorBase):
    """Generator protocol on a local HF causal LM; also exposes ``.model``, ``.tokenizer``,
    ``.device``.

    ``prefix_cache_mb``: bound of the prefix key/value cache in MiB (None: 1/16 of the
    device's memory, clamped to 64 MiB..4 GiB; 0 turns reuse off). The cache is also lent to
    the judge PRM when it runs on this generator's model (``.prefix_cache``).
    """

    name = "hf"

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 64,
        max_model_len: int = 2048,
        prefix_cache_mb: float | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = Path(model_dir)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.max_model_len = max_model_len
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
            self.model = AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=self.dtype)
        except Exception as err:  # OSError, ValueError, safetensors errors, ...
            raise ModelLoadError(f"cannot load model from {self.model_dir}: {err}") from err
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.eos_ids = self._eos_ids()
        self.geometry = kv_geometry(self.model)
        if prefix_cache_mb is not None and prefix_cache_mb < 0:
            raise ModelLoadError(
                f"prefix_cache_mb must be >= 0 (0 disables reuse), got {prefix_cache_mb}"
            )
        bound = (
            default_cache_bytes(self.device)
            if prefix_cache_mb is None
            else int(prefix_cache_mb * 2**20)
        )
        self.prefix_cache = PrefixKVCache(bound if self.geometry is not None else 0)
        self.prefill_counter = PrefillCounter()
        self._lock = threading.Lock()
        self._torch = torch

    @classmethod
    def from_spec(cls, spec: ModelSpec, home: Path) -> HFGenerator:
        generator = cls(
            resolve_model_path(spec.path, home),
            device=spec.device,
            dtype=spec.dtype,
            batch_size=spec.batch_size,
            max_model_len=spec.max_model_len,
        )
        if spec.adapter:
            from sphere_core.backends.adapters import merge_lora

            generator.model = merge_lora(generator.model, spec.adapter)
            generator.prefix_cache.clear()
        return generator

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        for value in (gen_eos, self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif value:
                ids.update(int(v) for v in value)
        return ids

    def clear_prefix_cache(self) -> None:
        """Forget every cached prefix (benchmarks start cold with this)."""
        self.prefix_cache.clear()

    # -- text helpers ----------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as-is (no BOS/EOS added: chat templates carry their own)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    # -- sampling --------------------------------------------------------------------
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
        torch = self._torch
        encoded = [self.encode(p) for p in prompts]
        for i, ids in enumerate(encoded):
            if not ids:
                raise GenerationError(f"prompt {i} is empty")
            if len(ids) >= self.max_model_len:
                raise GenerationError(
                    f"prompt {i} has {len(ids)} tokens, not below "
                    f"max_model_len={self.max_model_len}"
                )
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
        rows = [
            _Row(
                prompt_index=i,
                limit=min(max_tokens, self.max_model_len - len(encoded[i])),
                stream=StreamText(self.tokenizer),
            )
            for i in range(len(prompts))
            for _ in range(n)
        ]
        with self._lock, torch.inference_mode():
            self._prefill_shared(encoded)
            for chunk in even_chunks(rows, self.batch_size):
                self._decode_chunk(chunk, encoded, temperature, top_p, top_k, stop, generator)
        out: list[list[Step]] = [[] for _ in prompts]
        for row in rows:
            out[row.prompt_index].append(
                Step(
                    text=row.text,
                    token_logprobs=row.logprobs,
                    finish_reason=row.finish or "length",
                    num_tokens=len(row.tokens),
                )
            )
        return out

    def _prefill(self, seqs: list[list[int]], reserve: int = 0):
        return self.prefill_counter.add(
            prefill(
                self.model,
                seqs,
                pad_id=self.pad_id,
                device=self.device,
                store=self.prefix_cache,
                geometry=self.geometry,
                reserve=reserve,
            )
        )

    def _prefill_shared(self, encoded: list[list[int]]) -> None:
        """Prefill the prompts' common prefix once (e.g. the system prompt of every question)."""
        if not self.prefix_cache.enabled:
            return
        distinct = list({tuple(e): e for e in encoded}.values())
        for round_ in shared_prefixes(distinct):
            for chunk in even_chunks(worth_prefilling(self.prefix_cache, round_), self.batch_size):
                self._prefill(chunk)

    def _decode_chunk(
        self,
        rows: list[_Row],
        encoded: list[list[int]],
        temperature: float,
        top_p: float,
        top_k: int,
        stop: list[str],
        generator,
    ) -> None:
        """Decode every row of the chunk to completion (fills text/tokens/logprobs/finish)."""
        torch = self._torch
        distinct = sorted({r.prompt_index for r in rows})
        slot = {p: i for i, p in enumerate(distinct)}
        pre = self._prefill([encoded[p] for p in distinct])
        # fan the prefilled prompts out to one cache row per continuation
        select = [slot[r.prompt_index] for r in rows]
        index = torch.tensor(select, device=self.device)
        cache = pre.cache
        buffered = self.geometry is not None
        if buffered:
            cache.batch_select_indices(index, capacity=pre.width + max(r.limit for r in rows))
        else:
            cache.batch_select_indices(index)
        logits, mask, next_pos = pre.logits[index], pre.mask[index], pre.next_pos[index]
        layouts = [pre.layouts[s] for s in select]
        active = list(rows)
        fed = 0  # decoded tokens written to the cache (column pre.width + t holds the t-th)
        while active:
            interrupts.check()  # SIGINT/SIGTERM: stop between decode steps, in any thread
            tokens = sample_tokens(logits, temperature, top_p, top_k, generator)
            chosen = chosen_logprobs(logits, tokens)
            keep: list[int] = []
            for i, (row, tok, lp) in enumerate(zip(active, tokens.tolist(), chosen.tolist())):
                self._advance(row, tok, lp, stop)
                if row.finish is None:
                    keep.append(i)
                elif buffered and row.finish != "eos":
                    self._remember(
                        cache,
                        i,
                        encoded[row.prompt_index] + row.tokens[:-1],
                        layouts[i].extended(pre.width, fed),
                    )
            if not keep:
                break
            if len(keep) < len(active):
                if buffered:
                    order = cache.drop_rows(keep)
                else:
                    order = keep
                    cache.batch_select_indices(torch.tensor(keep, device=self.device))
                index = torch.tensor(order, device=self.device)
                mask, next_pos, tokens = mask[index], next_pos[index], tokens[index]
                active = [active[i] for i in order]
                layouts = [layouts[i] for i in order]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
            out = self.model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=next_pos,
                past_key_values=cache,
                use_cache=True,
            )
            cache, logits, next_pos = out.past_key_values, out.logits[:, -1, :], next_pos + 1
            fed += 1

    def _remember(self, cache, row: int, seq: list[int], layout: RowLayout) -> None:
        """Cache prompt + step tokens of a finished row: the next depth extends exactly this."""
        if seq and self.prefix_cache.enabled:
            self.prefix_cache.insert(seq, lambda a, b: gather_kv(cache, row, layout, a, b))

    def _advance(self, row: _Row, token: int, logprob: float, stop: list[str]) -> None:
        row.tokens.append(token)
        row.logprobs.append(logprob)
        if token in self.eos_ids:
            row.text = row.stream.full()  # the EOS token itself was never pushed
            row.finish = "eos"
            return
        previous = len(row.stream.text)
        added = row.stream.push(token)
        if stop and added:
            longest = max(len(s) for s in stop)
            if find_stop(row.stream.text, stop, max(0, previous - longest + 1)) != -1:
                text = row.stream.full()
                cut = find_stop(text, stop)
                if cut != -1:
                    row.text, row.finish = text[:cut], "stop"
                    return
        if len(row.tokens) >= row.limit:
            row.text = row.stream.full()
            row.finish = "length"

    def _left_pad(self, seqs: list[list[int]]):
        torch = self._torch
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- scoring ---------------------------------------------------------------------
    def sequence_logprobs(
        self, prompts: Sequence[str], continuations: Sequence[str]
    ) -> list[list[float]]:
        """Teacher-forced log-probs of each continuation's tokens given its prompt.

        Prompt and continuation are tokenized separately and concatenated, so the
        continuation's tokens are exactly ``encode(continuation)``.
        """
        if len(prompts) != len(continuations):
            raise GenerationError(
                f"sequence_logprobs needs one continuation per prompt, got {len(prompts)} prompts "
                f"and {len(continuations)} continuations"
            )
        torch = self._torch
        items = []
        for i, (p, c) in enumerate(zip(prompts, continuations)):
            p_ids, c_ids = self.encode(p), self.encode(c)
            if not p_ids:
                if self.tokenizer.bos_token_id is None:
                    raise GenerationError(f"prompt {i} is empty and the tokenizer has no BOS token")
                p_ids = [int(self.tokenizer.bos_token_id)]
            if len(p_ids) + len(c_ids) > self.max_model_len:
                raise GenerationError(
                    f"prompt+continuation {i} has {len(p_ids) + len(c_ids)} tokens, over "
                    f"max_model_len={self.max_model_len}"
                )
            items.append((p_ids, c_ids))
        results: list[list[float]] = [[] for _ in items]
        order = sorted(
            (i for i in range(len(items)) if items[i][1]), key=lambda i: -len(items[i][1])
        )
        with self._lock, torch.inference_mode():
            start = 0
            while start < len(order):
                keep = len(items[order[start]][1]) + 1  # longest continuation comes first
                size = max(1, min(self.batch_size, LOGITS_BUDGET // keep))
                batch = order[start : start + size]
                start += size
                ids, mask = self._left_pad([items[i][0] + items[i][1] for i in batch])
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=False,
                    logits_to_keep=keep,
                ).logits
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                for row, i in enumerate(batch):
                    c_ids = items[i][1]
                    m = len(c_ids)
                    preds = logprobs[row, keep - 1 - m : keep - 1, :]
                    target = torch.tensor(c_ids, device=preds.device)[:, None]
                    results[i] = preds.gather(-1, target).squeeze(-1).tolist()
        return results


@register_generator("hf")
def _factory(spec: ModelSpec, home: Path) -> HFGenerator:
    return HFGenerator.from_spec(spec, home)
