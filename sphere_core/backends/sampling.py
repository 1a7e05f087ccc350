"""Pure helpers shared by the generator backends: stop-string cutting, top-k/top-p sampling,
chosen-token log-probs, incremental detokenization, greedy de-duplication. No model loading here.

Step semantics every backend follows (the same as vLLM's, so backends agree):
``Step.text`` is the sampled text cut right *before* the first stop string (the stop string
and anything after it, even inside the same token, are dropped); ``Step.token_logprobs``
holds one raw model log-prob (log_softmax of unscaled logits, i.e. independent of
temperature/top-k/top-p) for *every* sampled token, including the token(s) that completed
the stop string and a sampled EOS token; ``num_tokens == len(token_logprobs)``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from sphere_core.errors import GenerationError
from sphere_core.schemas import Step

FINISH_REASONS = ("stop", "eos", "length")


def find_stop(text: str, stop: Sequence[str] | None, start: int = 0) -> int:
    """Index of the earliest stop string occurrence at or after ``start`` (-1 if none)."""
    best = -1
    for s in stop or ():
        idx = text.find(s, start)
        if idx != -1 and (best == -1 or idx < best):
            best = idx
    return best


def check_sampling_args(
    n: int,
    temperature: float,
    max_tokens: int,
    top_p: float,
    top_k: int,
    stop: Sequence[str] | None,
) -> None:
    """Reject arguments no backend can honour, naming the argument."""
    if n < 1:
        raise GenerationError(f"n must be >= 1, got {n}")
    if temperature < 0:
        raise GenerationError(f"temperature must be >= 0, got {temperature}")
    if max_tokens < 1:
        raise GenerationError(f"max_tokens must be >= 1, got {max_tokens}")
    if not 0 < top_p <= 1:
        raise GenerationError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise GenerationError(f"top_k must be >= 0 (0 disables), got {top_k}")
    if any(not s for s in stop or ()):
        raise GenerationError("stop strings must be non-empty")


def replicate(steps: list[list[Step]], n: int) -> list[list[Step]]:
    """Greedy decoding yields one distinct continuation; copy it to n (independent objects)."""
    return [[copy.deepcopy(row[0]) for _ in range(n)] for row in steps]


class GeneratorBase:
    """What every generator backend shares: chat templating, token counting, and the
    argument checks / greedy de-duplication around the backend's own ``_sample``."""

    tokenizer: object

    def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def generate_steps(
        self,
        prompts: Sequence[str],
        n: int,
        temperature: float,
        stop: Sequence[str] | None,
        max_tokens: int,
        *,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
    ) -> list[list[Step]]:
        check_sampling_args(n, temperature, max_tokens, top_p, top_k, stop)
        if not prompts:
            return []
        if temperature == 0 and n > 1:
            return replicate(self.generate_steps(prompts, 1, 0.0, stop, max_tokens), n)
        return self._sample(
            list(prompts),
            n,
            temperature,
            list(stop or ()),
            max_tokens,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
        )

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
        raise NotImplementedError


def sample_tokens(logits, temperature: float, top_p: float, top_k: int, generator):
    """Draw one token per row from softmax(logits / T) restricted by top-k and top-p.

    ``temperature == 0`` is greedy (argmax). Sampling is by inverse CDF: one uniform number per
    row located in the cumulative probabilities (``searchsorted``), which is several times
    cheaper than ``torch.multinomial`` over a 150k-token vocabulary. Returns a LongTensor
    of shape [rows].
    """
    import torch

    if temperature == 0:
        return logits.argmax(dim=-1)
    scores = logits.float()
    if temperature != 1.0:
        scores = scores / temperature
    vocab = scores.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        # drop a token when the mass strictly before it already reaches top_p (keeps >= 1 token)
        drop = (probs.cumsum(dim=-1) - probs) >= top_p
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(-1, order, sorted_scores)
    cdf = torch.softmax(scores, dim=-1).cumsum_(dim=-1)
    u = torch.rand((cdf.shape[0], 1), generator=generator, device=cdf.device, dtype=cdf.dtype)
    # right=True: the first index whose cumulative mass exceeds u, never a zero-probability token
    picked = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return picked.clamp_(max=vocab - 1).squeeze(-1)


def chosen_logprobs(logits, tokens):
    """Raw model log-prob (log_softmax of the unscaled logits) of ``tokens[i]`` in row i."""
    import torch

    scores = logits.float()
    return scores.gather(-1, tokens[:, None]).squeeze(-1) - torch.logsumexp(scores, dim=-1)


class StreamText:
    """Text of a growing list of generated tokens, decoded a few tokens at a time.

    Decoding the whole row after every token costs O(n) per token (O(n^2) per row); this keeps
    two offsets and decodes only the tokens since the last complete character, so the text
    grows by what each token adds (a token that ends inside a multi-byte character adds
    nothing until the character is complete). ``full()`` decodes everything once, the exact
    text the caller keeps.
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.text = ""
        self._prefix = 0
        self._read = 0

    def push(self, token: int) -> str:
        """Append one token; return the text it completed (possibly empty)."""
        self.ids.append(int(token))
        decode = self.tokenizer.decode
        before = decode(self.ids[self._prefix : self._read], skip_special_tokens=self.skip)
        after = decode(self.ids[self._prefix :], skip_special_tokens=self.skip)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            delta = after[len(before) :]
            self.text += delta
            self._prefix, self._read = self._read, len(self.ids)
            return delta
        return ""

    def full(self, upto: int | None = None) -> str:
        return self.tokenizer.decode(self.ids[:upto], skip_special_tokens=self.skip)
