"""One forward over a batch of token sequences that feeds each sequence's uncached tail only.

Row i of ``prefill`` is laid out as ``[pad | cached prefix | pad | new tokens]`` with an
attention mask over exactly its real tokens and explicit position ids, so a row computes what
the unpadded, uncached sequence would (up to float rounding), and the new keys/values are
stored in the ``PrefixKVCache`` for later calls. ``shared_prefixes`` and ``worth_prefilling``
choose the prefixes several sequences share that deserve a forward of their own;
``even_chunks`` sizes batches. torch (and ``batch_kv``) are imported when a batch is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sphere_core.backends.prefix_cache import PrefixKVCache


@dataclass
class RowLayout:
    """Where a row's sequence positions are in the batch cache: runs of (seq, col, n)."""

    length: int
    runs: list[tuple[int, int, int]] = field(default_factory=list)

    def columns(self, start: int, end: int) -> list[tuple[int, int]]:
        """Column ranges holding sequence positions [start, end), in order."""
        out = []
        for s, c, n in self.runs:
            lo, hi = max(start, s), min(end, s + n)
            if lo < hi:
                out.append((c + lo - s, c + hi - s))
        return out

    def extended(self, col_start: int, n: int) -> RowLayout:
        """This layout plus ``n`` more positions written from column ``col_start`` on."""
        return RowLayout(self.length + n, [*self.runs, (self.length, col_start, n)])


@dataclass
class PrefillCounter:
    """Prompt tokens run through the model vs served from the prefix cache, and forwards."""

    fed_tokens: int = 0
    reused_tokens: int = 0
    padded_tokens: int = 0
    forwards: int = 0

    def add(self, pre: Prefilled) -> Prefilled:
        self.fed_tokens += pre.fed_tokens
        self.reused_tokens += pre.reused_tokens
        self.padded_tokens += pre.padded_tokens
        self.forwards += 1
        return pre


@dataclass
class Prefilled:
    """Result of ``prefill``: last-position logits plus everything needed to keep decoding."""

    logits: Any  # [rows, vocab], float as the model returns it
    cache: Any  # BatchKV (or transformers' DynamicCache when reuse is unsupported)
    mask: Any  # [rows, width] attention mask over the cache columns
    next_pos: Any  # [rows, 1] position id of each row's next token
    layouts: list[RowLayout]
    width: int
    fed_tokens: int  # tokens actually run through the model (padding excluded)
    reused_tokens: int
    padded_tokens: int  # rows x width of the fed block: what the forward computed


def gather_kv(cache: Any, row: int, layout: RowLayout, start: int, end: int):
    """Owned copy of the keys/values of sequence positions [start, end) of ``row``."""
    import torch

    parts = [cache.row_kv(row, lo, hi) for lo, hi in layout.columns(start, end)]
    if sum(p.shape[3] for p in parts) != end - start:
        raise ValueError(f"row {row} holds no keys/values for positions [{start}, {end})")
    if len(parts) == 1:
        return parts[0].clone(memory_format=torch.contiguous_format)
    return torch.cat(parts, dim=3)


def prefill(
    model: Any,
    seqs: Sequence[Sequence[int]],
    *,
    pad_id: int,
    device: Any,
    store: PrefixKVCache | None = None,
    geometry: tuple[int, int, int] | None = None,
    reserve: int = 0,
    store_result: bool = True,
) -> Prefilled:
    """Run the uncached tail of every sequence through ``model`` in one forward.

    ``store`` (with ``geometry`` from ``kv_geometry``) supplies cached prefixes (at most
    len - 1 tokens, so every row feeds at least its last token) and, when ``store_result``,
    receives each sequence's keys/values afterwards. ``reserve`` extra positions are
    allocated for decoding. Without ``geometry`` this is a plain left-padded prefill into
    transformers' DynamicCache.
    """
    if any(len(s) == 0 for s in seqs):
        raise ValueError("prefill needs non-empty token sequences")
    use_store = store is not None and store.enabled and geometry is not None
    matches = [
        store.match(s, len(s) - 1) if use_store else (0, [])  # type: ignore[union-attr]
        for s in seqs
    ]
    past = [m for m, _ in matches]
    new = [len(s) - m for s, m in zip(seqs, past)]
    ids, mask, pos, layouts = _layout(seqs, past, new, pad_id)
    ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
    if geometry is not None:
        cache = _seeded_batch_kv(model, geometry, matches, mask.shape[1] + reserve, device)
    else:
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=pos,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    cache = out.past_key_values
    if use_store and store_result:
        for i, s in enumerate(seqs):
            kv_for = lambda a, b, i=i: gather_kv(cache, i, layouts[i], a, b)
            store.insert(s, kv_for)  # type: ignore[union-attr]
    return Prefilled(
        logits=out.logits[:, -1, :],
        cache=cache,
        mask=mask,
        next_pos=pos[:, -1:] + 1,
        layouts=layouts,
        width=mask.shape[1],
        fed_tokens=sum(new),
        reused_tokens=sum(past),
        padded_tokens=len(seqs) * max(new),
    )


def _layout(seqs: Sequence[Sequence[int]], past: list[int], new: list[int], pad_id: int):
    """(input ids, attention mask, position ids, layouts) of rows ``[pad | cached | pad | new]``."""
    import torch

    rows, P, N = len(seqs), max(past), max(new)
    width = P + N
    ids = torch.full((rows, N), pad_id, dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.long)
    pos = torch.zeros((rows, N), dtype=torch.long)
    layouts = []
    for i, (s, m, n) in enumerate(zip(seqs, past, new)):
        ids[i, N - n :] = torch.tensor(list(s[m:]), dtype=torch.long)
        mask[i, P - m : P] = 1
        mask[i, width - n :] = 1
        pos[i, N - n :] = torch.arange(m, m + n)
        runs = ([(0, P - m, m)] if m else []) + [(m, width - n, n)]
        layouts.append(RowLayout(len(s), runs))
    return ids, mask, pos, layouts


def _seeded_batch_kv(
    model: Any,
    geometry: tuple[int, int, int],
    matches: list[tuple[int, list[Any]]],
    capacity: int,
    device: Any,
):
    """A BatchKV whose first columns hold each row's cached prefix, right-aligned."""
    from sphere_core.backends.batch_kv import new_batch_kv

    P = max(m for m, _ in matches)
    param = next(model.parameters())
    cache = new_batch_kv(
        geometry, len(matches), capacity, dtype=param.dtype, device=device, length=P
    )
    if P:
        buffer = cache.buffer
        buffer[:, :, :, :, :P].zero_()
        for i, (m, segs) in enumerate(matches):
            col = P - m
            for seg in segs:
                n_seg = seg.shape[3]
                buffer[:, :, i, :, col : col + n_seg] = seg
                col += n_seg
    return cache


def shared_prefixes(
    seqs: Sequence[Sequence[int]],
    groups: Sequence[Any] | None = None,
) -> list[list[tuple[list[int], int]]]:
    """Token prefixes shared by several sequences, as rounds to prefill in order.

    Round 0 holds the common prefix of the whole batch; round 1 the common prefix of each group
    of two or more sequences (when ``groups`` labels them), each extending round 0's. Every
    entry is ``(prefix, members)``; a prefix as long as one of its members (nothing left to
    feed for that member) or already listed is left out.
    """

    def lcp(members: list[Sequence[int]]) -> list[int]:
        first = members[0]
        n = min(len(m) for m in members)
        for m in members[1:]:
            if tuple(m[:n]) == tuple(first[:n]):
                continue
            k = 0
            while k < n and m[k] == first[k]:
                k += 1
            n = k
        return list(first[:n])

    seen: set[tuple[int, ...]] = set()

    def entry(members: list[Sequence[int]]) -> list[tuple[list[int], int]]:
        if len(members) < 2:
            return []
        p = lcp(members)
        key = tuple(p)
        if not p or key in seen or any(len(m) <= len(p) for m in members):
            return []
        seen.add(key)
        return [(p, len(members))]

    rounds = [entry(list(seqs))]
    if groups is not None:
        by_group: dict[Any, list[Sequence[int]]] = {}
        for g, s in zip(groups, seqs):
            by_group.setdefault(g, []).append(s)
        rounds.append([e for members in by_group.values() for e in entry(members)])
    return [r for r in rounds if r]


def worth_prefilling(
    store: PrefixKVCache, candidates: list[tuple[list[int], int]], min_saved_tokens: int = 32
) -> list[list[int]]:
    """The shared prefixes whose separate prefill saves at least ``min_saved_tokens`` in all.

    A prefix of m members with u uncached tokens saves (m - 1) * u fed tokens; one extra
    forward is only worth it when the round as a whole saves a few dozen tokens.
    """
    chosen, saved = [], 0
    for prefix, members in candidates:
        uncached = len(prefix) - store.cached_length(prefix)
        if uncached > 0 and (members - 1) * uncached >= 4:
            chosen.append(prefix)
            saved += (members - 1) * uncached
    return chosen if saved >= min_saved_tokens else []


def even_chunks(items: Sequence[Any], max_size: int) -> list[list[Any]]:
    """``items`` split in order into the fewest chunks of at most ``max_size``, sizes within one.

    (64 + 8 rows become 36 + 36: no small straggler batch paying a full pass over the weights.)
    """
    items = list(items)
    if not items:
        return []
    count = -(-len(items) // max(1, max_size))
    base, extra = divmod(len(items), count)
    out, start = [], 0
    for i in range(count):
        size = base + (1 if i < extra else 0)
        out.append(items[start : start + size])
        start += size
    return out
