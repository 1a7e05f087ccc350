"""``judge`` PRM: a local chat model asked whether the last step of a partial solution is correct.

The prompt shows the problem and the solution so far ("Step 1: ...", ..., "Step k: ...") and
asks "Is Step k correct? Answer Yes or No."; the reward is

    P(Yes) / (P(Yes) + P(No))

read from the next-token logits of ONE forward pass per prompt (no sampling). "Yes" and "No"
are each the set of their surface variants ("Yes", " Yes", "yes", " yes", "YES", " YES") that
the tokenizer encodes as a single token; the probabilities of a set are summed. A tokenizer
with no single-token variant of either word is a ``BackendError``.

``score_last`` (what the search uses) runs one forward per candidate; ``score`` runs one per
distinct step prefix, i.e. a candidate with n steps costs n prompts (shared prefixes of
sibling candidates are scored once). Prompts are batched ``prm.batch_size`` at a time,
length-sorted, LEFT-padded with explicit position ids (so a padded row computes exactly what
the unpadded row would) and only the last position's logits are computed. A prompt longer
than the model's ``max_model_len`` drops its earliest steps (marked "(earlier steps
omitted)") until it fits; the last step is always kept.

The model is the ``hf`` generator of ``cfg.prm_model`` from the process-wide cache, so on the
demo the judge shares the policy's weights instead of loading a second copy.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sphere_core.backends.prm import BasePRM, prefixes, unflatten
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


def judge_messages(
    question: str, steps: Sequence[str], first_step: int = 1, omitted: bool = False
) -> list[dict[str, str]]:
    """Chat turns asking whether the last of ``steps`` is correct (steps numbered from ``first_step``)."""
    lines = [f"Step {first_step + i}: {s.strip()}" for i, s in enumerate(steps)]
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
            f"judge PRM: the problem plus its last step is {len(ids)} tokens, over max_model_len={self.max_len}"
        )

    def _judge(self, questions: list[str], steps: list[list[str]]) -> list[float]:
        import torch

        encoded = [self._encode(q, s) for q, s in zip(questions, steps)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out = [0.0] * len(encoded)
        device = next(self.model.parameters()).device
        yes = torch.tensor(self.yes_ids, device=device)
        no = torch.tensor(self.no_ids, device=device)
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            input_ids, attention, positions = _left_pad(
                [encoded[i] for i in idx], self.pad_id, device
            )
            with torch.inference_mode():
                logits = (
                    self.model(
                        input_ids=input_ids,
                        attention_mask=attention,
                        position_ids=positions,
                        **self._extra,
                    )
                    .logits[:, -1, :]
                    .float()
                )
            margin = torch.logsumexp(logits[:, yes], dim=-1) - torch.logsumexp(
                logits[:, no], dim=-1
            )
            for i, p in zip(idx, torch.sigmoid(margin).tolist()):
                out[i] = float(p)
        return out


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
