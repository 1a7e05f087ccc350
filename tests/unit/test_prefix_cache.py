"""PrefixKVCache (radix tree of key/value segments, LRU by bytes), shared prefixes, BatchKV rows."""

from __future__ import annotations

import pytest
import torch

from sphere_core.backends.batch_kv import new_batch_kv
from sphere_core.backends.prefill import RowLayout, shared_prefixes, worth_prefilling
from sphere_core.backends.prefix_cache import PrefixKVCache

LAYERS, HEADS, DIM = 2, 1, 3
TOKEN_BYTES = LAYERS * 2 * HEADS * DIM * 4  # float32


def kv_of(ids):
    """Fake keys/values whose every position encodes its token id (so slices are checkable)."""
    t = torch.tensor(ids, dtype=torch.float32)
    return t.view(1, 1, 1, -1, 1).expand(LAYERS, 2, HEADS, len(ids), DIM).contiguous()


def fetcher(ids, calls):
    def kv_for(start, end):
        calls.append((start, end))
        return kv_of(ids[start:end])

    return kv_for


def joined(segs):
    return torch.cat(segs, dim=3)[0, 0, 0, :, 0].tolist() if segs else []


def test_match_returns_the_longest_token_prefix_and_insert_fetches_only_the_new_tail():
    cache = PrefixKVCache(1 << 20)
    a = [1, 2, 3, 4, 5]
    calls = []
    assert cache.insert(a, fetcher(a, calls)) == 5 and calls == [(0, 5)]
    b = [1, 2, 3, 9, 9, 9]  # diverges inside the cached segment: split at 3
    calls.clear()
    assert cache.insert(b, fetcher(b, calls)) == 3 and calls == [(3, 6)]
    assert cache.node_count() == 3 and cache.tokens == 8 and cache.bytes == 8 * TOKEN_BYTES
    n, segs = cache.match([1, 2, 3, 4, 7])
    assert n == 4 and joined(segs) == [1, 2, 3, 4]
    n, segs = cache.match([1, 2, 3, 9, 9, 9, 9], limit=5)
    assert n == 5 and joined(segs) == [1, 2, 3, 9, 9]
    assert cache.match([2, 3])[0] == 0
    calls.clear()
    assert cache.insert([1, 2], fetcher([1, 2], calls)) == 0 and calls == []  # already a prefix


def test_lru_evicts_least_recently_used_leaves_by_bytes():
    cache = PrefixKVCache(10 * TOKEN_BYTES)
    cache.insert([1, 2, 3, 4], fetcher([1, 2, 3, 4], []))
    cache.insert([1, 2, 7, 7], fetcher([1, 2, 7, 7], []))  # split: [1,2] -> [3,4] | [7,7]
    cache.match([1, 2, 3, 4])  # touch the first branch: [7,7] is now the oldest leaf
    cache.insert([5, 5, 5, 5], fetcher([5, 5, 5, 5], []))  # 10 tokens: fits exactly
    assert cache.tokens == 10
    cache.insert([6, 6], fetcher([6, 6], []))  # over the bound: evict the oldest leaf
    assert cache.match([1, 2, 7, 7])[0] == 2 and cache.match([1, 2, 3, 4])[0] == 4
    assert cache.bytes <= cache.max_bytes and cache.stats.evicted_tokens == 2
    big = list(range(100, 120))  # larger than the whole bound: stored, then evicted at once
    cache.insert(big, fetcher(big, []))
    assert cache.match(big)[0] == 0 and cache.bytes <= cache.max_bytes


def test_a_zero_bound_disables_the_cache():
    cache = PrefixKVCache(0)
    calls = []
    assert not cache.enabled and cache.insert([1, 2], fetcher([1, 2], calls)) == 0 and calls == []
    assert cache.match([1, 2]) == (0, [])
    with pytest.raises(ValueError, match=">= 0"):
        PrefixKVCache(-1)


def test_shared_prefixes_rounds_and_worth():
    sys_ = [9, 9, 9, 9]
    seqs = [sys_ + [1, 1, 1, 2], sys_ + [1, 1, 1, 3], sys_ + [5, 5, 5, 6]]
    rounds = shared_prefixes(seqs, groups=["q1", "q1", "q2"])
    assert rounds == [[(sys_, 3)], [(sys_ + [1, 1, 1], 2)]]
    assert (
        shared_prefixes([[1, 2], [1, 2]]) == []
    )  # a prefix equal to a member leaves nothing to feed
    cache = PrefixKVCache(1 << 20)
    assert worth_prefilling(cache, rounds[0], min_saved_tokens=8) == [sys_]
    assert worth_prefilling(cache, rounds[0], min_saved_tokens=9) == []  # saves 2 x 4 tokens only
    cache.insert(sys_, fetcher(sys_, []))
    assert worth_prefilling(cache, rounds[0], min_saved_tokens=1) == []  # already cached


def test_batch_kv_selects_drops_and_reads_rows():
    kv = new_batch_kv((LAYERS, HEADS, DIM), rows=3, capacity=8, dtype=torch.float32, device="cpu")
    for layer in range(LAYERS):
        keys = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, HEADS, 2, DIM)
        kv.layers[layer].update(keys, -keys)
    assert kv.get_seq_length() == 2
    kv.batch_select_indices(torch.tensor([2, 0, 0, 1]), capacity=6)
    assert kv.rows == 4 and kv.buffer.shape[4] == 6
    assert kv.layers[0].keys[:, 0, 0, 0].tolist() == [2.0, 0.0, 0.0, 1.0]
    order = kv.drop_rows([0, 3])  # row 1 leaves; the last row moves into its slot
    assert order == [0, 3] and kv.layers[1].keys[:, 0, 0, 0].tolist() == [2.0, 1.0]
    assert kv.layers[1].values[:, 0, 0, 0].tolist() == [-2.0, -1.0]
    layout = RowLayout(2, [(0, 0, 2)])
    assert layout.columns(1, 2) == [(1, 2)]
    assert layout.extended(4, 3).columns(1, 4) == [(1, 2), (4, 6)]
    assert kv.row_kv(1, 0, 2)[0, 0, 0, :, 0].tolist() == [1.0, 1.0]
