"""Token-prefix reuse of attention keys/values for HF causal LMs (generation and the judge PRM).

Owns three pieces:

* ``PrefixKVCache``: a radix tree over token ids whose nodes hold the keys/values of their
  token segment for every layer. ``match`` finds the longest cached prefix of a token
  sequence, ``insert`` stores a sequence's not-yet-cached tail, and leaf segments are evicted
  least-recently-used first while the stored bytes exceed the bound. Matching is on token ids,
  never on text: BPE merges across a step boundary make equal strings no guarantee of equal
  tokens.
* ``BatchKV``: the cache of one batch, a single preallocated tensor
  ``[layers, 2, rows, kv_heads, capacity, head_dim]`` the model writes into in place (no
  per-token concatenation of the whole cache), with finished rows dropped by moving the last
  rows into their slots.
* ``prefill``: one forward over a batch of token sequences that feeds each sequence's
  uncached tail only. Row i is laid out as ``[pad | cached prefix | pad | new tokens]`` with an
  attention mask over exactly its real tokens and explicit position ids, so a row computes what
  the unpadded, uncached sequence would (up to float rounding), and the new keys/values are
  stored for later calls.

Only models whose every layer is a plain full-attention cache layer are supported
(``kv_geometry``); for others callers decode with transformers' own cache and no reuse.
Does not own sampling, stop strings or scoring (``hf.py``, ``prm_judge.py``).
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MEMORY_FRACTION = 1 / 16
MIN_DEFAULT_BYTES = 64 << 20
MAX_DEFAULT_BYTES = 4 << 30


def default_cache_bytes(device: str) -> int:
    """Default bound: 1/16 of the device's memory (host RAM on CPU), clamped to [64 MiB, 4 GiB]."""
    total = 0
    if str(device).startswith("cuda"):
        import torch

        total = int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    else:
        try:
            total = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            total = 0
    if total <= 0:
        return MIN_DEFAULT_BYTES
    return int(min(MAX_DEFAULT_BYTES, max(MIN_DEFAULT_BYTES, total * DEFAULT_MEMORY_FRACTION)))


def kv_geometry(model: Any) -> tuple[int, int, int] | None:
    """(layers, kv_heads, head_dim) when every layer caches plain full-attention keys/values.

    None for models with sliding-window, linear-attention or shared-KV layers (no reuse there).
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        probe = DynamicCache(config=model.config)
        text = model.config.get_text_config(decoder=True)
    except Exception:  # noqa: BLE001 - an unusual config simply gets no reuse
        return None
    if not probe.layers or any(type(layer) is not DynamicLayer for layer in probe.layers):
        return None
    heads = getattr(text, "num_attention_heads", None)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or (text.hidden_size // heads if heads else None)
    if not kv_heads or not head_dim or len(probe.layers) != getattr(text, "num_hidden_layers", -1):
        return None
    return len(probe.layers), int(kv_heads), int(head_dim)


# -- the radix tree ---------------------------------------------------------------------------


class _Node:
    __slots__ = ("children", "kv", "parent", "stamp", "tokens")

    def __init__(self, tokens: tuple[int, ...], kv: Any, parent: _Node | None) -> None:
        self.tokens = tokens  # this node's segment of token ids
        self.kv = kv  # [layers, 2, kv_heads, len(tokens), head_dim] (None at the root)
        self.children: dict[int, _Node] = {}
        self.parent = parent
        self.stamp = 0


def _common(seg: tuple[int, ...], ids: Sequence[int], pos: int, limit: int) -> int:
    """Number of leading tokens of ``seg`` equal to ``ids[pos:limit]``."""
    n = min(len(seg), limit - pos)
    if tuple(ids[pos:pos + n]) == seg[:n]:
        return n
    for i in range(n):
        if seg[i] != ids[pos + i]:
            return i
    return n


@dataclass
class CacheStats:
    """Counters since construction (or the last ``clear``)."""

    lookups: int = 0
    looked_up_tokens: int = 0
    matched_tokens: int = 0
    inserted_tokens: int = 0
    evicted_tokens: int = 0


class PrefixKVCache:
    """Keys/values of token prefixes of ONE model, bounded by ``max_bytes`` (0 disables it)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"prefix cache bound must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._lock = threading.RLock()
        self._clock = itertools.count(1)
        self.stats = CacheStats()
        self._reset()

    def _reset(self) -> None:
        self._root = _Node((), None, None)
        self.bytes = 0
        self.tokens = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def clear(self) -> None:
        with self._lock:
            self._reset()
            self.stats = CacheStats()

    def match(self, ids: Sequence[int], limit: int | None = None) -> tuple[int, list[Any]]:
        """Longest cached prefix of ``ids`` (at most ``limit`` tokens).

        Returns its length and the key/value segments that cover it, in order, each
        ``[layers, 2, kv_heads, n, head_dim]`` (views; never written to by callers).
        """
        limit = len(ids) if limit is None else max(0, min(limit, len(ids)))
        segs: list[Any] = []
        pos = 0
        with self._lock:
            self.stats.lookups += 1
            self.stats.looked_up_tokens += len(ids)
            if not self.enabled:
                return 0, segs
            stamp = next(self._clock)
            node = self._root
            while pos < limit:
                child = node.children.get(ids[pos])
                if child is None:
                    break
                k = _common(child.tokens, ids, pos, limit)
                child.stamp = stamp
                segs.append(child.kv if k == len(child.tokens) else child.kv[:, :, :, :k])
                pos += k
                if k < len(child.tokens):
                    break
                node = child
            self.stats.matched_tokens += pos
        return pos, segs

    def cached_length(self, ids: Sequence[int], limit: int | None = None) -> int:
        """Length of the longest cached prefix of ``ids`` (no statistics, no LRU touch)."""
        limit = len(ids) if limit is None else max(0, min(limit, len(ids)))
        pos = 0
        with self._lock:
            node = self._root
            while self.enabled and pos < limit:
                child = node.children.get(ids[pos])
                if child is None:
                    break
                k = _common(child.tokens, ids, pos, limit)
                pos += k
                if k < len(child.tokens):
                    break
                node = child
        return pos

    def insert(self, ids: Sequence[int], kv_for: Callable[[int, int], Any]) -> int:
        """Cache ``ids``; ``kv_for(start, end)`` gives the keys/values of tokens [start, end).

        Only the not-yet-cached tail is fetched; returns how many tokens were added.
        """
        if not self.enabled or not ids:
            return 0
        ids = tuple(int(t) for t in ids)
        with self._lock:
            stamp = next(self._clock)
            node, pos = self._root, 0
            while pos < len(ids):
                child = node.children.get(ids[pos])
                if child is None:
                    break
                k = _common(child.tokens, ids, pos, len(ids))
                child.stamp = stamp
                if k < len(child.tokens):
                    if pos + k == len(ids):  # ids end inside this segment: all cached already
                        pos = len(ids)
                        break
                    child = self._split(child, k)
                pos += k
                node = child
            added = len(ids) - pos
            if added:
                kv = kv_for(pos, len(ids))
                if kv.shape[3] != added:
                    raise ValueError(f"kv_for({pos}, {len(ids)}) returned {kv.shape[3]} positions")
                leaf = _Node(ids[pos:], kv, node)
                leaf.stamp = stamp
                node.children[ids[pos]] = leaf
                self.bytes += _nbytes(kv)
                self.tokens += added
                self.stats.inserted_tokens += added
            self._evict()
        return added

    def _split(self, child: _Node, k: int) -> _Node:
        import torch

        parent = child.parent
        assert parent is not None
        head = _Node(child.tokens[:k], child.kv[:, :, :, :k].clone(memory_format=torch.contiguous_format),
                     parent)
        head.stamp = child.stamp
        parent.children[head.tokens[0]] = head
        child.tokens = child.tokens[k:]
        child.kv = child.kv[:, :, :, k:].clone(memory_format=torch.contiguous_format)
        child.parent = head
        head.children[child.tokens[0]] = child
        return head

    def _evict(self) -> None:
        if self.bytes <= self.max_bytes:
            return
        heap: list[tuple[int, int, _Node]] = []
        stack = list(self._root.children.values())
        while stack:
            n = stack.pop()
            if n.children:
                stack.extend(n.children.values())
            else:
                heap.append((n.stamp, id(n), n))
        heapq.heapify(heap)
        while self.bytes > self.max_bytes and heap:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            assert parent is not None
            del parent.children[leaf.tokens[0]]
            self.bytes -= _nbytes(leaf.kv)
            self.tokens -= len(leaf.tokens)
            self.stats.evicted_tokens += len(leaf.tokens)
            leaf.kv = None
            if parent is not self._root and not parent.children:
                heapq.heappush(heap, (parent.stamp, id(parent), parent))

    def node_count(self) -> int:
        with self._lock:
            count, stack = 0, list(self._root.children.values())
            while stack:
                n = stack.pop()
                count += 1
                stack.extend(n.children.values())
            return count


def _nbytes(t: Any) -> int:
    return int(t.numel() * t.element_size())


# -- the batch cache ------------------------------------------------------------------------------


def _batch_kv_classes():
    """BatchKV and its layer class (built lazily: importing this module never imports torch)."""
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import Cache, DynamicLayer

    class BufferLayer(DynamicLayer):
        """One layer's window on ``BatchKV.buffer``; ``update`` writes in place."""

        def __init__(self, owner: BatchKV, index: int, length: int) -> None:
            super().__init__()
            self._owner, self._index, self._length = owner, index, length
            self.is_initialized = True
            self.refresh()

        def refresh(self) -> None:
            buf, rows = self._owner.buffer, self._owner.rows
            self.dtype, self.device = buf.dtype, buf.device
            self.keys = buf[self._index, 0, :rows, :, : self._length]
            self.values = buf[self._index, 1, :rows, :, : self._length]

        def update(self, key_states, value_states, *args, **kwargs):
            start, end = self._length, self._length + key_states.shape[-2]
            buf = self._owner.reserve(end)
            if key_states.shape[0] != self._owner.rows or key_states.shape[1] != buf.shape[3] \
                    or key_states.shape[-1] != buf.shape[5]:
                raise ValueError(
                    f"layer {self._index} produced keys of shape {tuple(key_states.shape)}, the batch "
                    f"cache holds {self._owner.rows} rows x {buf.shape[3]} heads x {buf.shape[5]} dims"
                )
            buf[self._index, 0, : self._owner.rows, :, start:end] = key_states
            buf[self._index, 1, : self._owner.rows, :, start:end] = value_states
            self._length = end
            self.refresh()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self._length

        def batch_select_indices(self, indices) -> None:  # handled once for all layers by BatchKV
            raise NotImplementedError("select rows through BatchKV.batch_select_indices")

    class BatchKV(DynamicCache):
        """Keys/values of a batch in one tensor ``[layers, 2, rows, kv_heads, capacity, head_dim]``."""

        def __init__(self, buffer, rows: int, length: int) -> None:
            self.buffer = buffer
            self.rows = rows
            layers = [BufferLayer(self, i, length) for i in range(buffer.shape[0])]
            Cache.__init__(self, layers=layers)

        @property
        def length(self) -> int:
            return self.layers[-1].get_seq_length()

        def reserve(self, end: int):
            """Make room for ``end`` positions (grows the buffer, rarely: callers size it)."""
            cap = self.buffer.shape[4]
            if end > cap:
                shape = list(self.buffer.shape)
                shape[4] = max(end, cap + cap // 2)
                grown = self.buffer.new_zeros(shape)
                grown[:, :, :, :, :cap] = self.buffer
                self.buffer = grown
                for layer in self.layers:
                    layer.refresh()
            return self.buffer

        def batch_select_indices(self, indices, capacity: int | None = None) -> None:
            """Rows ``indices`` (any order, repeats allowed) become the batch, with room for
            ``capacity`` positions (default: the current capacity); copies used positions only."""
            used = max(layer.get_seq_length() for layer in self.layers)
            idx = torch.as_tensor(indices, device=self.buffer.device, dtype=torch.long)
            shape = list(self.buffer.shape)
            shape[2] = int(idx.numel())
            shape[4] = max(used, shape[4] if capacity is None else int(capacity), 1)
            fresh = self.buffer.new_empty(shape)
            fresh[:, :, :, :, :used] = self.buffer[:, :, idx, :, :used]
            self.buffer, self.rows = fresh, shape[2]
            for layer in self.layers:
                layer.refresh()

        def drop_rows(self, keep: list[int]) -> list[int]:
            """Keep rows ``keep`` (ascending): the last kept rows move into the freed slots.

            Returns the new order as old row indices (row j now holds old row ``order[j]``).
            Copies one row per freed slot instead of the whole cache.
            """
            order = list(range(self.rows))
            keep_set = set(keep)
            used = max(layer.get_seq_length() for layer in self.layers)
            holes = [i for i in range(len(keep)) if i not in keep_set]
            movers = [i for i in keep if i >= len(keep)]
            for hole, src in zip(holes, movers):
                self.buffer[:, :, hole, :, :used] = self.buffer[:, :, src, :, :used]
                order[hole] = src
            self.rows = len(keep)
            for layer in self.layers:
                layer.refresh()
            return order[: self.rows]

        def row_kv(self, row: int, start: int, end: int):
            """Keys/values of positions [start, end) of ``row``: ``[layers, 2, kv_heads, n, head_dim]``."""
            return self.buffer[:, :, row, :, start:end]

    _CLASSES = (BufferLayer, BatchKV)
    return _CLASSES


_CLASSES = None


def new_batch_kv(geometry: tuple[int, int, int], rows: int, capacity: int, *, dtype, device):
    """An empty BatchKV for ``rows`` rows and ``capacity`` positions."""
    import torch

    layers, kv_heads, head_dim = geometry
    _, batch_kv = _batch_kv_classes()
    buffer = torch.empty((layers, 2, rows, kv_heads, max(1, capacity), head_dim), dtype=dtype, device=device)
    return batch_kv(buffer, rows, 0)


# -- prefill -----------------------------------------------------------------------------------


@dataclass
class RowLayout:
    """Where a row's sequence positions live in the batch cache: runs of (seq_start, col_start, n)."""

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


def prefill(model: Any, seqs: Sequence[Sequence[int]], *, pad_id: int, device: Any,
            store: PrefixKVCache | None = None, geometry: tuple[int, int, int] | None = None,
            reserve: int = 0, store_result: bool = True) -> Prefilled:
    """Run the uncached tail of every sequence through ``model`` in one forward.

    ``store`` (with ``geometry`` from ``kv_geometry``) supplies cached prefixes (at most
    len - 1 tokens, so every row feeds at least its last token) and, when ``store_result``,
    receives each sequence's keys/values afterwards. ``reserve`` extra positions are
    allocated for decoding. Without ``geometry`` this is a plain left-padded prefill into
    transformers' DynamicCache.
    """
    import torch

    if any(len(s) == 0 for s in seqs):
        raise ValueError("prefill needs non-empty token sequences")
    rows = len(seqs)
    use_store = store is not None and store.enabled and geometry is not None
    matches = [store.match(s, len(s) - 1) if use_store else (0, []) for s in seqs]  # type: ignore[union-attr]
    past = [m for m, _ in matches]
    new = [len(s) - m for s, m in zip(seqs, past)]
    P, N = max(past), max(new)
    width = P + N
    ids = torch.full((rows, N), pad_id, dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.long)
    pos = torch.zeros((rows, N), dtype=torch.long)
    layouts = []
    for i, (s, m, n) in enumerate(zip(seqs, past, new)):
        ids[i, N - n:] = torch.tensor(list(s[m:]), dtype=torch.long)
        mask[i, P - m:P] = 1
        mask[i, width - n:] = 1
        pos[i, N - n:] = torch.arange(m, m + n)
        runs = ([(0, P - m, m)] if m else []) + [(m, width - n, n)]
        layouts.append(RowLayout(len(s), runs))
    ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
    if geometry is not None:
        param = next(model.parameters())
        layers, kv_heads, head_dim = geometry
        _, batch_kv = _batch_kv_classes()
        buffer = torch.empty((layers, 2, rows, kv_heads, width + reserve, head_dim),
                             dtype=param.dtype, device=device)
        if P:
            buffer[:, :, :, :, :P].zero_()
            for i, (m, (_, segs)) in enumerate(zip(past, matches)):
                col = P - m
                for seg in segs:
                    n_seg = seg.shape[3]
                    buffer[:, :, i, :, col:col + n_seg] = seg
                    col += n_seg
        cache = batch_kv(buffer, rows, P)
    else:
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    if use_store and store_result:
        for i, s in enumerate(seqs):
            store.insert(s, lambda a, b, i=i: gather_kv(cache, i, layouts[i], a, b))  # type: ignore[union-attr]
    return Prefilled(logits=out.logits[:, -1, :], cache=cache, mask=mask,
                     next_pos=pos[:, -1:] + 1, layouts=layouts, width=width,
                     fed_tokens=sum(new), reused_tokens=sum(past), padded_tokens=rows * N)


def shared_prefixes(seqs: Sequence[Sequence[int]], groups: Sequence[Any] | None = None,
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


def worth_prefilling(store: PrefixKVCache, candidates: list[tuple[list[int], int]],
                     min_saved_tokens: int = 32) -> list[list[int]]:
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
        out.append(items[start:start + size])
        start += size
    return out
