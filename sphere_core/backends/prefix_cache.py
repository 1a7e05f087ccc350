"""Token-prefix reuse of attention keys/values for HF causal LMs: the radix-tree store.

``PrefixKVCache`` is a radix tree over token ids whose nodes hold the keys/values of their
token segment for every layer. ``match`` finds the longest cached prefix of a token sequence,
``insert`` stores a sequence's not-yet-cached tail, and leaf segments are evicted
least-recently-used first while the stored bytes exceed the bound. Matching is on token ids,
never on text: BPE merges across a step boundary make equal strings no guarantee of equal
tokens. ``kv_geometry`` says whether a model's cache can be reused at all: only models whose
every layer is a plain full-attention cache layer are supported; for others callers decode
with transformers' own cache and no reuse.

The rest of the prefix reuse lives beside it: ``batch_kv`` (the cache of one batch, one
preallocated tensor written in place; imported only when a batch is built, since it imports
torch and transformers) and ``prefill`` (one forward over a batch that feeds each sequence's
uncached tail only, and the choice of shared prefixes worth a forward of their own). Does not
own sampling, stop strings or scoring (``hf.py``, ``prm_judge.py``).
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    if tuple(ids[pos : pos + n]) == seg[:n]:
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
        head = _Node(
            child.tokens[:k],
            child.kv[:, :, :, :k].clone(memory_format=torch.contiguous_format),
            parent,
        )
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
