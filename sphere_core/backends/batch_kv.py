"""The key/value cache of one batch: a single preallocated tensor written in place.

``BatchKV`` holds ``[layers, 2, rows, kv_heads, capacity, head_dim]``; the model writes each
step's keys/values into it through one ``BufferLayer`` per layer (no per-token concatenation
of the whole cache), and finished rows are dropped by moving the last rows into their slots.
This module imports torch and transformers: callers import it only when they build a batch,
so that importing ``prefix_cache`` or ``prefill`` stays light.
"""

from __future__ import annotations

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
        if (
            key_states.shape[0] != self._owner.rows
            or key_states.shape[1] != buf.shape[3]
            or key_states.shape[-1] != buf.shape[5]
        ):
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
        """Keys/values of positions [start, end) of ``row``: ``[layers, 2, kv_heads, n, dim]``."""
        return self.buffer[:, :, row, :, start:end]


def new_batch_kv(
    geometry: tuple[int, int, int], rows: int, capacity: int, *, dtype, device, length: int = 0
) -> BatchKV:
    """An empty BatchKV for ``rows`` rows and ``capacity`` positions (``length`` already used)."""
    layers, kv_heads, head_dim = geometry
    buffer = torch.empty(
        (layers, 2, rows, kv_heads, max(1, capacity), head_dim), dtype=dtype, device=device
    )
    return BatchKV(buffer, rows, length)
