"""``judge`` PRM: a local chat model asked whether the last step of a partial solution is correct.

The prompt shows the problem and the solution so far ("Step 1: ...", ..., "Step k: ...") and
asks "Is Step k correct? Answer Yes or No." (each step without the answer format's closing
"I hope it is correct.", see ``judge_step``); the reward is

    P(Yes) / (P(Yes) + P(No))

read from the next-token logits of ONE forward pass per prompt (no sampling). "Yes" and "No"
are each the set of their surface variants ("Yes", " Yes", "yes", " yes", "YES", " YES") that
the tokenizer encodes as a single token; the probabilities of a set are summed. A tokenizer
with no single-token variant of either word is a ``BackendError``.

``score_last`` (what the search uses) needs one prompt per candidate; ``score`` one per
distinct step prefix, i.e. a candidate with n steps costs n prompts (shared prefixes of
sibling candidates are scored once). A prompt longer than the model's ``max_model_len``
drops its earliest steps (marked "(earlier steps omitted)") until it fits; the last step is
always kept.

Prefix sharing (the default for models whose layers all cache plain keys/values): every
prompt is tokenized in full and matched at the token level against a prefix key/value cache
(``prefix_cache.PrefixKVCache``, shared with the ``hf`` generator of the same model, so one
byte bound covers both). Before the prompts themselves, the prefix common to the whole call
(system turn, "Problem:") and then the prefix common to each node's candidates (the problem and
the path up to the last step) are prefilled once, so each candidate feeds only what it adds: its
last step and the question after it. Each prompt's keys/values are kept, so at the next depth
a child's prompt reuses its parent's up to the parent's last step. Rows are LEFT-padded with
explicit position ids and an attention mask over exactly their real tokens, so a padded or
reused row computes what the unpadded full prompt would (to float rounding: scores equal the
full re-encode, ``share_prefixes=False``, to about 1e-6). Only the last position's logits
are computed. Prompts are batched ``prm.batch_size`` at a time, sorted by length.

The model is the ``hf`` generator of ``cfg.prm_model`` from the process-wide cache, so on the
demo the judge shares the policy's weights instead of loading a second copy.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sphere_core.backends.prefill import (
    PrefillCounter,
    even_chunks,
    prefill,
    shared_prefixes,
    worth_prefilling,
)
from sphere_core.backends.prefix_cache import PrefixKVCache, default_cache_bytes, kv_geometry
from sphere_core.backends.prm import BasePRM, prefixes, unflatten
from sphere_core.backends.registry import register_prm
from sphere_core.config import SphereConfig
from sphere_core.errors import BackendError

log = logging.getLogger(__name__)

YES_VARIANTS = ("Yes", " Yes", "yes", " yes", "YES", " YES")
NO_VARIANTS = ("No", " No", "no", " no", "NO", " NO")

JUDGE_SYSTEM = (
    "You are a meticulous math teacher. You check one step of a student's solution at a time "
    "and reply with a single word: Yes if the step is correct, No if it is not."
)
OMITTED = "(earlier steps omitted)"


SIGN_OFF = re.compile(r"\s*I hope it is correct\.?", re.IGNORECASE)
"""The paper format's closing words, dropped from the steps the judge is shown."""


def judge_step(text: str) -> str:
    """A step as the judge sees it: stripped, without the format's "I hope it is correct."

    The solve prompt asks for "Final Answer: The final answer is $x$. I hope it is correct."
    The sentence says nothing about the step, yet it moves the 0.5B judge's P(Yes) up by about
    0.1 whether the answer is right or wrong (docs/performance.md, PRM calibration), so an
    answer step written in full format out-scored the same answer without it.
    """
    return SIGN_OFF.sub("", text).strip()


def judge_messages(
    question: str, steps: Sequence[str], first_step: int = 1, omitted: bool = False
) -> list[dict[str, str]]:
    """Chat turns asking whether the last of ``steps`` is correct (steps numbered from
    ``first_step``)."""
    lines = [f"Step {first_step + i}: {judge_step(s)}" for i, s in enumerate(steps)]
    if omitted:
        lines.insert(0, OMITTED)
    last = first_step + len(steps) - 1
    user = (
        f"Problem:\n{question.strip()}\n\nSolution so far:\n"
        + "\n\n".join(lines)
        + f"\n\nIs Step {last} correct? Answer Yes or No."
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def single_token_ids(tokenizer: Any, variants: Sequence[str]) -> list[int]:
    ids: set[int] = set()
    for word in variants:
        enc = tokenizer.encode(word, add_special_tokens=False)
        if len(enc) == 1:
            ids.add(int(enc[0]))
    return sorted(ids)


class JudgePRM(BasePRM):
    name = "judge"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        render: Callable[[list[dict[str, str]]], str],
        *,
        batch_size: int = 16,
        max_len: int = 2048,
        share_prefixes: bool = True,
        prefix_cache: PrefixKVCache | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.render = render
        self.batch_size = int(batch_size)
        self.max_len = int(max_len)
        self.yes_ids = single_token_ids(tokenizer, YES_VARIANTS)
        self.no_ids = single_token_ids(tokenizer, NO_VARIANTS)
        if not self.yes_ids or not self.no_ids:
            raise BackendError(
                "judge PRM: the tokenizer encodes none of "
                f"{YES_VARIANTS if not self.yes_ids else NO_VARIANTS} as a single token; "
                "choose another prm.model or prm.kind"
            )
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.pad_id = int(pad) if pad is not None else 0
        self._extra = (
            {"logits_to_keep": 1}
            if "logits_to_keep" in inspect.signature(model.forward).parameters
            else {}
        )
        self.geometry = kv_geometry(model) if share_prefixes and self._extra else None
        self.prefix_cache: PrefixKVCache | None = None
        self.prefill_counter = PrefillCounter()
        if self.geometry is not None:
            self.prefix_cache = prefix_cache or PrefixKVCache(
                default_cache_bytes(str(next(model.parameters()).device))
            )
            if not self.prefix_cache.enabled:
                self.geometry = None

    @classmethod
    def from_config(cls, cfg: SphereConfig, home: Path) -> JudgePRM:
        from sphere_core.backends.cache import get_generator

        spec = cfg.prm_model
        if spec.backend != "hf":
            log.warning(
                "judge PRM reads logits, so it loads %s with the hf backend (not %s)",
                spec.path,
                spec.backend,
            )
            spec = spec.model_copy(update={"backend": "hf"})
        gen = get_generator(spec, home)
        for attr in ("model", "tokenizer"):
            if not hasattr(gen, attr):
                raise BackendError(
                    f"judge PRM needs a generator exposing .{attr}; {type(gen).__name__} does not"
                )
        return cls(
            gen.model,
            gen.tokenizer,
            lambda messages: gen.apply_chat_template(messages, add_generation_prompt=True),
            batch_size=cfg.prm.batch_size,
            max_len=spec.max_model_len,
            prefix_cache=getattr(gen, "prefix_cache", None),
        )

    # -- BasePRM ---------------------------------------------------------------------
    def _score(self, questions, steps, golds):
        items, offsets = prefixes(steps)
        keys = [(questions[c], tuple(steps[c][: j + 1])) for c, j in items]
        unique = list(dict.fromkeys(keys))
        values = dict(
            zip(unique, self._judge([q for q, _ in unique], [list(s) for _, s in unique]))
        )
        return unflatten([values[k] for k in keys], steps, offsets)

    def _score_last(self, questions, steps, golds):
        return self._judge(questions, steps)

    # -- internals -------------------------------------------------------------------
    def _encode(self, question: str, steps: list[str]) -> list[int]:
        for start in range(len(steps)):
            text = self.render(
                judge_messages(question, steps[start:], first_step=start + 1, omitted=start > 0)
            )
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            if len(ids) <= self.max_len:
                if start:
                    log.info(
                        "judge PRM: dropped %d earlier steps to fit %d tokens", start, self.max_len
                    )
                return list(ids)
        raise BackendError(
            f"judge PRM: the problem plus its last step is {len(ids)} tokens, over "
            f"max_model_len={self.max_len}"
        )

    def clear_cache(self) -> None:
        """Forget memoised scores and cached prefixes (benchmarks start cold with this)."""
        super().clear_cache()
        if self.prefix_cache is not None:
            self.prefix_cache.clear()

    def _judge(self, questions: list[str], steps: list[list[str]]) -> list[float]:
        encoded = [self._encode(q, s) for q, s in zip(questions, steps)]
        if self.geometry is None:
            return self.judge_full(encoded)
        import torch

        device = next(self.model.parameters()).device
        store = self.prefix_cache
        groups = [(q, tuple(s[:-1])) for q, s in zip(questions, steps)]
        out = [0.0] * len(encoded)
        with torch.inference_mode():
            for round_ in shared_prefixes(encoded, groups):
                todo = sorted(worth_prefilling(store, round_), key=len)
                for chunk in even_chunks(todo, self.batch_size):
                    self.prefill_counter.add(
                        prefill(
                            self.model,
                            chunk,
                            pad_id=self.pad_id,
                            device=device,
                            store=store,
                            geometry=self.geometry,
                        )
                    )
            # batch prompts with similar uncached tails: padding is computed like real tokens
            tails = [len(e) - store.cached_length(e, len(e) - 1) for e in encoded]
            order = sorted(range(len(encoded)), key=lambda i: (tails[i], len(encoded[i])))
            for idx in even_chunks(order, self.batch_size):
                pre = self.prefill_counter.add(
                    prefill(
                        self.model,
                        [encoded[i] for i in idx],
                        pad_id=self.pad_id,
                        device=device,
                        store=store,
                        geometry=self.geometry,
                    )
                )
                for i, p in zip(idx, self._rewards(pre.logits)):
                    out[i] = p
        return out

    def judge_full(self, encoded: list[list[int]]) -> list[float]:
        """Rewards of the given prompts, each re-encoded in full (no prefix reuse).

        The reference the prefix-sharing path is tested against, and the path for models
        whose cache layers cannot be reused.
        """
        import torch

        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out = [0.0] * len(encoded)
        device = next(self.model.parameters()).device
        for idx in even_chunks(order, self.batch_size):
            input_ids, attention, positions = _left_pad(
                [encoded[i] for i in idx], self.pad_id, device
            )
            self.prefill_counter.fed_tokens += sum(len(encoded[i]) for i in idx)
            self.prefill_counter.padded_tokens += int(input_ids.numel())
            self.prefill_counter.forwards += 1
            with torch.inference_mode():
                logits = self.model(
                    input_ids=input_ids,
                    attention_mask=attention,
                    position_ids=positions,
                    **self._extra,
                ).logits[:, -1, :]
            for i, p in zip(idx, self._rewards(logits)):
                out[i] = p
        return out

    def _rewards(self, logits) -> list[float]:
        """P(Yes) / (P(Yes) + P(No)) per row of last-position logits."""
        import torch

        logits = logits.float()
        yes = torch.tensor(self.yes_ids, device=logits.device)
        no = torch.tensor(self.no_ids, device=logits.device)
        margin = torch.logsumexp(logits[:, yes], dim=-1) - torch.logsumexp(logits[:, no], dim=-1)
        return [float(p) for p in torch.sigmoid(margin).tolist()]


def _left_pad(rows: list[list[int]], pad_id: int, device: Any):
    import torch

    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        input_ids[k, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        attention[k, width - len(r) :] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return input_ids.to(device), attention.to(device), positions.to(device)


@register_prm("judge")
def _factory(cfg: SphereConfig, home: Path) -> JudgePRM:
    return JudgePRM.from_config(cfg, home)
