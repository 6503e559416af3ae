"""The slot KV cache: one contiguous region per running request, allocated once at start.

Each running request holds one slot for its whole life, and a slot reserves room for
`max_model_len` tokens (plus the P-tuning prefix rows). So an admitted request can never
run out of cache, and the engine needs no preemption and no block tables: the price is that
the number of slots (concurrent requests) is fixed by the memory budget. On a CPU this is
the right trade: attention reads each slot in place (see models/attention.py).

This module owns the tensors and which slot is free. Who gets a slot, and when, is the
scheduler's business; what a layer writes into its slot is the model's.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Protocol

import torch

from glm_api.config import KVCacheDType
from glm_api.models.attention import LayerCache
from glm_api.models.base import CacheSpec

#: share of free memory the cache may take when no budget is given
DEFAULT_MEMORY_SHARE = 0.5


class SlotAllocator(Protocol):
    """What the scheduler needs of the cache: slots, no tensors."""

    num_slots: int

    def allocate(self) -> int | None: ...

    def allocate_reusing(self, prompt_ids: Sequence[int]) -> tuple[int, int] | None: ...

    def free(self, slot: int, held_ids: Sequence[int] = ()) -> None: ...


class SlotPool:
    """Free-slot bookkeeping; always hands out the lowest free slot (deterministic).

    A freed slot may keep what its cache holds (`free(slot, held_ids)`: the ids at positions
    0.. whose keys and values are still in it); `allocate_reusing` then gives a request the
    free slot holding the longest prefix of its prompt, so that prefix need not be computed
    again (a multi-turn chat resends its whole history every turn).
    """

    def __init__(self, num_slots: int) -> None:
        self.num_slots = num_slots
        self._free = list(range(num_slots))  # a heap
        self._used: set[int] = set()
        self._held: dict[int, list[int]] = {}  # free slot -> the ids its cache holds

    def allocate(self) -> int | None:
        if not self._free:
            return None
        slot = heapq.heappop(self._free)
        self._take(slot)
        return slot

    def allocate_reusing(self, prompt_ids: Sequence[int]) -> tuple[int, int] | None:
        """(slot, how many leading ids of `prompt_ids` its cache holds already), or None.

        The free slot holding the longest prefix wins, the lowest on a tie; with no prefix
        held anywhere this is `allocate()`'s slot.
        """
        if not self._free:
            return None
        best, best_len = self._free[0], 0
        for slot, held in self._held.items():
            length = common_prefix_len(held, prompt_ids)
            if length > best_len or (length == best_len and length and slot < best):
                best, best_len = slot, length
        self._free.remove(best)
        heapq.heapify(self._free)
        self._take(best)
        return best, best_len

    def _take(self, slot: int) -> None:
        self._held.pop(slot, None)  # its new owner overwrites the cache
        self._used.add(slot)

    def free(self, slot: int, held_ids: Sequence[int] = ()) -> None:
        if slot not in self._used:
            raise ValueError(f"slot {slot} is not allocated")
        self._used.remove(slot)
        heapq.heappush(self._free, slot)
        if held_ids:
            self._held[slot] = list(held_ids)

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Share of slots in use, 0..1."""
        return len(self._used) / self.num_slots if self.num_slots else 0.0


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids `a` and `b` share (slices compared in C, 256 ids at a time)."""
    limit, step, n = min(len(a), len(b)), 256, 0
    while n + step <= limit and a[n : n + step] == b[n : n + step]:
        n += step
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def cache_dtype(choice: KVCacheDType, model_dtype: torch.dtype) -> torch.dtype:
    """The dtype the cache holds: the model's for "auto", else the one asked for.

    A narrower cache than the activations (float16 under float32) is written rounded to
    nearest and read back widened: the attention's arithmetic stays in the model's dtype.
    """
    if choice is KVCacheDType.AUTO:
        return model_dtype
    return {
        KVCacheDType.FLOAT32: torch.float32,
        KVCacheDType.FLOAT16: torch.float16,
        KVCacheDType.BFLOAT16: torch.bfloat16,
    }[choice]


def slot_bytes(spec: CacheSpec, max_len: int, dtype: torch.dtype) -> int:
    """Bytes one slot takes over all layers (keys and values)."""
    element = torch.empty((), dtype=dtype).element_size()
    rows = spec.num_prefix + max_len
    return 2 * spec.num_layers * spec.num_kv_heads * rows * spec.head_dim * element


def available_memory_bytes(device: torch.device) -> int:
    """Free memory on `device` now (host RAM from /proc/meminfo on a CPU)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 1024**3  # no /proc (macOS): assume a modest 4 GiB


def num_slots_for(
    spec: CacheSpec,
    max_len: int,
    dtype: torch.dtype,
    max_num_seqs: int,
    memory_gb: float | None,
    device: torch.device,
) -> int:
    """min(max_num_seqs, slots the budget allows); the budget defaults to a share of free memory."""
    if memory_gb is not None:
        budget = int(memory_gb * 1024**3)
    else:
        budget = int(available_memory_bytes(device) * DEFAULT_MEMORY_SHARE)
    return max(0, min(max_num_seqs, budget // slot_bytes(spec, max_len, dtype)))


class KVCache:
    """Keys and values of every layer: each `(num_slots, num_kv_heads, num_prefix + max_len, head_dim)`."""

    def __init__(
        self,
        spec: CacheSpec,
        num_slots: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ) -> None:
        if num_slots < 1:
            raise ValueError("the KV cache needs at least one slot")
        self.spec = spec
        self.num_slots = num_slots
        self.max_len = max_len
        self.dtype = dtype
        shape = (num_slots, spec.num_kv_heads, spec.num_prefix + max_len, spec.head_dim)
        # empty, not zeros: attention reads a slot only up to its sequence's length (rows it
        # wrote), and on a CPU a large fresh allocation is committed page by page as it is
        # written, so the cache takes memory as it fills. Zeroing 16 slots x 8192 positions
        # of the 0.6B benchmark model took 9 s at start-up and made all 6.3 GB resident.
        self.layers = [
            LayerCache(
                keys=torch.empty(shape, dtype=dtype, device=device),
                values=torch.empty(shape, dtype=dtype, device=device),
            )
            for _ in range(spec.num_layers)
        ]
        self._pool = SlotPool(num_slots)

    def write_prefix(self, prefix: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Copy P-tuning v2 prefix keys/values `(num_kv_heads, num_prefix, head_dim)` into every slot."""
        num_prefix = self.spec.num_prefix
        if len(prefix) != len(self.layers):
            raise ValueError(f"prefix has {len(prefix)} layers, the model {len(self.layers)}")
        for layer, (keys, values) in zip(self.layers, prefix, strict=True):
            layer.keys[:, :, :num_prefix] = keys.to(layer.keys.dtype).unsqueeze(0)
            layer.values[:, :, :num_prefix] = values.to(layer.values.dtype).unsqueeze(0)

    def allocate(self) -> int | None:
        return self._pool.allocate()

    def allocate_reusing(self, prompt_ids: Sequence[int]) -> tuple[int, int] | None:
        return self._pool.allocate_reusing(prompt_ids)

    def free(self, slot: int, held_ids: Sequence[int] = ()) -> None:
        self._pool.free(slot, held_ids)

    @property
    def num_free(self) -> int:
        return self._pool.num_free

    @property
    def usage(self) -> float:
        return self._pool.usage
