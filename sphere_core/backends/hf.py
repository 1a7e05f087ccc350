"""The ``hf`` generator: batched step sampling with transformers on CPU or CUDA.

Owns the decoding loop (our own, with a KV cache): prompts are left-padded and prefilled
once per *distinct* prompt, the cache rows are then repeated for the n continuations,
and finished rows (stop string / EOS / length) are dropped from the batch as they finish.
Also teacher-forced ``sequence_logprobs`` (used by the judge PRM and evaluation).
Step text / log-prob semantics are documented in ``sphere_core.backends.sampling``.
Does not own model-path resolution (``embedded.py``) or caching of instances (``cache.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sphere_core.backends.embedded import resolve_model_path
from sphere_core.backends.registry import register_generator
from sphere_core.backends.sampling import GeneratorBase, find_stop, sample_tokens
from sphere_core.config import ModelSpec
from sphere_core.errors import GenerationError, ModelLoadError
from sphere_core.schemas import Step

LOGITS_BUDGET = 2048
"""Max (rows x kept positions) of full-vocabulary logits materialised at once in sequence_logprobs."""


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available")
    return device


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose auto, {', '.join(table)}")
    return table[dtype]


@dataclass
class _Row:
    """One continuation being decoded."""

    prompt_index: int
    limit: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish: str | None = None


class HFGenerator(GeneratorBase):
    """Generator protocol on a local HF causal LM; also exposes ``.model``, ``.tokenizer``, ``.device``."""

    name = "hf"

    def __init__(self, model_dir: Path, *, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 64, max_model_len: int = 2048) -> None:
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
        self._lock = threading.Lock()
        self._torch = torch

    @classmethod
    def from_spec(cls, spec: ModelSpec, home: Path) -> HFGenerator:
        return cls(resolve_model_path(spec.path, home), device=spec.device, dtype=spec.dtype,
                   batch_size=spec.batch_size, max_model_len=spec.max_model_len)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        for value in (gen_eos, self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif value:
                ids.update(int(v) for v in value)
        return ids

    # -- text helpers ----------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as-is (no BOS/EOS added: chat templates carry their own)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    # -- sampling --------------------------------------------------------------------
    def _sample(self, prompts: list[str], n: int, temperature: float, stop: list[str],
                max_tokens: int, *, top_p: float, top_k: int, seed: int | None) -> list[list[Step]]:
        torch = self._torch
        encoded = [self.encode(p) for p in prompts]
        for i, ids in enumerate(encoded):
            if not ids:
                raise GenerationError(f"prompt {i} is empty")
            if len(ids) >= self.max_model_len:
                raise GenerationError(
                    f"prompt {i} has {len(ids)} tokens, not below max_model_len={self.max_model_len}"
                )
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
        rows = [
            _Row(prompt_index=i, limit=min(max_tokens, self.max_model_len - len(encoded[i])))
            for i in range(len(prompts)) for _ in range(n)
        ]
        with self._lock, torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                self._decode_chunk(chunk, encoded, temperature, top_p, top_k, stop, generator)
        out: list[list[Step]] = [[] for _ in prompts]
        for row in rows:
            out[row.prompt_index].append(
                Step(text=row.text, token_logprobs=row.logprobs, finish_reason=row.finish or "length",
                     num_tokens=len(row.tokens))
            )
        return out

    def _decode_chunk(self, rows: list[_Row], encoded: list[list[int]], temperature: float,
                      top_p: float, top_k: int, stop: list[str], generator) -> None:
        """Decode every row of the chunk to completion (fills text/tokens/logprobs/finish)."""
        torch = self._torch
        from transformers import DynamicCache

        distinct = sorted({r.prompt_index for r in rows})
        slot = {p: i for i, p in enumerate(distinct)}
        input_ids, mask = self._left_pad([encoded[p] for p in distinct])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        # fan the prefilled prompts out to one cache row per continuation
        select = torch.tensor([slot[r.prompt_index] for r in rows], device=self.device)
        cache = out.past_key_values
        cache.batch_select_indices(select)
        logits = out.logits[:, -1, :][select]
        mask = mask[select]
        next_pos = mask.sum(-1, keepdim=True)
        active = list(rows)
        while active:
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            tokens = sample_tokens(logits, temperature, top_p, top_k, generator)
            chosen = logprobs.gather(-1, tokens[:, None]).squeeze(-1)
            keep: list[int] = []
            for i, (row, tok, lp) in enumerate(zip(active, tokens.tolist(), chosen.tolist())):
                self._advance(row, tok, lp, stop)
                if row.finish is None:
                    keep.append(i)
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, next_pos, tokens = mask[index], next_pos[index], tokens[index]
                active = [active[i] for i in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
            out = self.model(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos,
                             past_key_values=cache, use_cache=True)
            cache, logits, next_pos = out.past_key_values, out.logits[:, -1, :], next_pos + 1

    def _advance(self, row: _Row, token: int, logprob: float, stop: list[str]) -> None:
        row.tokens.append(token)
        row.logprobs.append(logprob)
        if token in self.eos_ids:
            row.text = self.tokenizer.decode(row.tokens[:-1], skip_special_tokens=True)
            row.finish = "eos"
            return
        previous = len(row.text)
        row.text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        if stop:
            longest = max(len(s) for s in stop)
            cut = find_stop(row.text, stop, max(0, previous - longest + 1))
            if cut != -1:
                row.text = row.text[:cut]
                row.finish = "stop"
                return
        if len(row.tokens) >= row.limit:
            row.finish = "length"

    def _left_pad(self, seqs: list[list[int]]):
        torch = self._torch
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- scoring ---------------------------------------------------------------------
    def sequence_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[list[float]]:
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
        order = sorted((i for i in range(len(items)) if items[i][1]), key=lambda i: -len(items[i][1]))
        with self._lock, torch.inference_mode():
            start = 0
            while start < len(order):
                keep = len(items[order[start]][1]) + 1  # longest continuation comes first
                size = max(1, min(self.batch_size, LOGITS_BUDGET // keep))
                batch = order[start:start + size]
                start += size
                ids, mask = self._left_pad([items[i][0] + items[i][1] for i in batch])
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                    use_cache=False, logits_to_keep=keep).logits
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                for row, i in enumerate(batch):
                    c_ids = items[i][1]
                    m = len(c_ids)
                    preds = logprobs[row, keep - 1 - m: keep - 1, :]
                    target = torch.tensor(c_ids, device=preds.device)[:, None]
                    results[i] = preds.gather(-1, target).squeeze(-1).tolist()
        return results


def _factory(spec: ModelSpec, home: Path) -> HFGenerator:
    return HFGenerator.from_spec(spec, home)


register_generator("hf", _factory)
