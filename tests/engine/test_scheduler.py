"""Scheduler and slot cache without a model: hand-made sampled ids in, queue moves out."""

from __future__ import annotations

import pytest
import torch
from engine_fakes import EOS, make_request

from glm_api.engine.errors import ServerBusyError
from glm_api.engine.kv_cache import KVCache, SlotPool, num_slots_for, slot_bytes
from glm_api.engine.request import FinishReason, RequestStatus
from glm_api.engine.scheduler import Scheduler, SchedulerOutput
from glm_api.models.base import CacheSpec


def chunks(output: SchedulerOutput) -> list[tuple[str, int, int, bool]]:
    return [(c.request.request_id, c.start, c.num_tokens, c.needs_sample) for c in output.chunks]


def run_step(scheduler: Scheduler, token_id: int = 7) -> SchedulerOutput:
    output = scheduler.schedule()
    sampled: list[int | None] = [token_id if c.needs_sample else None for c in output.chunks]
    scheduler.update_from_output(output, sampled)
    return output


def new_scheduler(num_slots: int = 4, budget: int = 8, max_queue: int = 8) -> Scheduler:
    return Scheduler(
        SlotPool(num_slots), max_num_seqs=4, max_num_batched_tokens=budget, max_queue_len=max_queue
    )


def test_chunked_prefill_splits_under_the_budget_then_decodes_first() -> None:
    scheduler = new_scheduler(budget=8)
    scheduler.add_request(make_request("a", list(range(3, 23))))  # 20 prompt tokens
    assert chunks(run_step(scheduler)) == [("a", 0, 8, False)]
    assert chunks(run_step(scheduler)) == [("a", 8, 8, False)]
    scheduler.add_request(make_request("b", list(range(3, 13))))  # 10 prompt tokens
    assert chunks(run_step(scheduler)) == [("a", 16, 4, True), ("b", 0, 4, False)]
    # a decodes first (1 token), b's prefill gets the remaining 7 of the budget
    assert chunks(run_step(scheduler)) == [("a", 20, 1, True), ("b", 4, 6, True)]
    assert chunks(run_step(scheduler)) == [("a", 21, 1, True), ("b", 10, 1, True)]
    request_a = scheduler.running[0]
    assert request_a.output_ids == [7, 7, 7] and request_a.num_computed == 22


def test_finish_on_stop_id_and_on_length_frees_the_slot() -> None:
    pool = SlotPool(2)
    scheduler = Scheduler(pool, max_num_seqs=2, max_num_batched_tokens=16, max_queue_len=4)
    stop = make_request("stop", [5, 6], max_tokens=10)
    length = make_request("len", [5, 6, 7], max_tokens=2, stop_ids=frozenset())
    scheduler.add_request(stop)
    scheduler.add_request(length)
    run_step(scheduler, token_id=9)
    assert pool.num_free == 0 and stop.slot == 0 and length.slot == 1
    run_step(scheduler, token_id=EOS)
    assert stop.finish_reason is FinishReason.STOP and stop.stop_reason == EOS
    assert length.finish_reason is FinishReason.LENGTH and length.output_ids == [9, EOS]
    assert stop.slot is None and pool.num_free == 2 and scheduler.running == []
    assert stop.status is RequestStatus.FINISHED


def test_min_tokens_keeps_a_stop_id_from_finishing() -> None:
    scheduler = new_scheduler()
    request = make_request("a", [5], max_tokens=10, min_tokens=2)
    scheduler.add_request(request)
    run_step(scheduler, token_id=EOS)
    run_step(scheduler, token_id=EOS)
    assert not request.is_finished
    run_step(scheduler, token_id=EOS)
    assert request.finish_reason is FinishReason.STOP and len(request.output_ids) == 3


def test_abort_frees_the_slot_at_once_and_skips_the_running_step() -> None:
    pool = SlotPool(1)
    scheduler = Scheduler(pool, max_num_seqs=4, max_num_batched_tokens=16, max_queue_len=4)
    scheduler.add_request(make_request("a", [5, 6]))
    scheduler.add_request(make_request("b", [5, 6]))
    output = scheduler.schedule()
    assert chunks(output) == [("a", 0, 2, True)] and pool.num_free == 0
    aborted = scheduler.abort("a")  # while its step runs
    assert aborted is not None and aborted.finish_reason is FinishReason.ABORT
    assert pool.num_free == 1
    assert scheduler.update_from_output(output, [9]) == []
    assert aborted.output_ids == []
    assert chunks(scheduler.schedule()) == [("b", 0, 2, True)]
    assert scheduler.abort("b") is not None and scheduler.abort("missing") is None


def test_abort_of_a_waiting_request() -> None:
    scheduler = new_scheduler()
    scheduler.add_request(make_request("w", [5]))
    assert scheduler.abort("w") is not None and not scheduler.has_work


def test_queue_bound_raises_server_busy() -> None:
    scheduler = new_scheduler(max_queue=2)
    scheduler.add_request(make_request("a", [5]))
    scheduler.add_request(make_request("b", [5]))
    with pytest.raises(ServerBusyError):
        scheduler.add_request(make_request("c", [5]))


def test_admission_waits_for_a_free_slot() -> None:
    pool = SlotPool(2)
    scheduler = Scheduler(pool, max_num_seqs=4, max_num_batched_tokens=16, max_queue_len=8)
    for name in "abc":
        scheduler.add_request(make_request(name, [5, 6], max_tokens=2))
    assert [c[0] for c in chunks(run_step(scheduler))] == ["a", "b"]
    assert [r.request_id for r in scheduler.waiting] == ["c"]
    run_step(scheduler)  # a and b reach max_tokens: their slots come back
    assert [c[0] for c in chunks(run_step(scheduler))] == ["c"]


def test_max_num_seqs_bounds_running() -> None:
    scheduler = Scheduler(SlotPool(8), max_num_seqs=2, max_num_batched_tokens=64, max_queue_len=8)
    for name in "abc":
        scheduler.add_request(make_request(name, [5]))
    run_step(scheduler)
    assert len(scheduler.running) == 2 and len(scheduler.waiting) == 1


def test_bidirectional_part_is_one_chunk_even_over_the_budget() -> None:
    scheduler = new_scheduler(budget=4)
    scheduler.add_request(make_request("d", [5], max_tokens=10))
    run_step(scheduler)  # d now decodes
    scheduler.add_request(make_request("v1", list(range(3, 13)), num_bidirectional=6))
    # 1 decode + 6 bidirectional tokens: over the budget of 4, but never split
    assert chunks(run_step(scheduler)) == [("d", 1, 1, True), ("v1", 0, 6, False)]
    assert chunks(run_step(scheduler)) == [("d", 2, 1, True), ("v1", 6, 3, False)]


def test_kv_cache_shapes_prefix_rows_and_slots() -> None:
    spec = CacheSpec(num_layers=2, num_kv_heads=2, head_dim=4, num_prefix=3)
    cache = KVCache(spec, num_slots=3, max_len=10, dtype=torch.float32)
    assert cache.layers[0].keys.shape == (3, 2, 13, 4) and len(cache.layers) == 2
    prefix = [(torch.full((2, 3, 4), float(i)), torch.full((2, 3, 4), -float(i))) for i in (1, 2)]
    cache.write_prefix(prefix)
    assert torch.equal(cache.layers[1].keys[2, :, :3], torch.full((2, 3, 4), 2.0))
    assert torch.equal(cache.layers[1].values[0, :, :3], torch.full((2, 3, 4), -2.0))
    assert [cache.allocate(), cache.allocate()] == [0, 1] and cache.usage == pytest.approx(2 / 3)
    cache.free(0)
    assert cache.allocate() == 0 and cache.allocate() == 2 and cache.allocate() is None
    with pytest.raises(ValueError):
        SlotPool(2).free(1)


def test_num_slots_follows_the_memory_budget() -> None:
    spec = CacheSpec(num_layers=2, num_kv_heads=2, head_dim=4)
    assert slot_bytes(spec, 100, torch.float32) == 2 * 2 * 2 * 100 * 4 * 4
    one_slot_gb = slot_bytes(spec, 100, torch.float32) / 1024**3
    cpu = torch.device("cpu")
    assert num_slots_for(spec, 100, torch.float32, 16, one_slot_gb * 3.5, cpu) == 3
    assert num_slots_for(spec, 100, torch.float32, 2, 1.0, cpu) == 2
    assert num_slots_for(spec, 100, torch.float32, 16, None, cpu) == 16
