"""Prefix reuse: a prompt prefix a finished request left in its slot is not computed again,
and the reply is the one a fresh engine gives, to the bit (logprobs included)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from glm_api.config import EngineConfig
from glm_api.engine.async_engine import AsyncEngine
from glm_api.engine.kv_cache import SlotPool, common_prefix_len
from glm_api.engine.request import FinishReason, Request, RequestOutput, SamplingParams
from glm_api.engine.scheduler import Scheduler
from glm_api.formats.base import ChatMessage
from glm_api.models.loader import LoadedModel, load_model


def test_the_free_slot_holding_the_longest_prefix_wins() -> None:
    pool = SlotPool(4)
    slots = [pool.allocate() for _ in range(4)]
    assert slots == [0, 1, 2, 3]
    pool.free(2, [1, 2, 3, 4])
    pool.free(1, [1, 2, 9])
    pool.free(3, [1, 2, 3, 4, 5, 6])
    assert pool.allocate_reusing([1, 2, 3, 4, 7]) == (2, 4)  # 2 and 3 hold 4: the lower
    assert pool.allocate_reusing([1, 2, 3, 4, 5, 6, 7]) == (3, 6)
    assert pool.allocate_reusing([8]) == (1, 0)  # no prefix: the lowest free slot
    assert pool.allocate_reusing([1]) is None
    pool.free(1, [5, 5])
    assert pool.allocate() == 1  # a plain allocation forgets what the slot held
    pool.free(1)
    assert pool.allocate_reusing([5, 5]) == (1, 0)
    assert common_prefix_len(list(range(1000)), [*range(700), 5]) == 700


def request(request_id: str, prompt: list[int], bidirectional: int = 0) -> Request:
    params = SamplingParams(temperature=0, max_tokens=4)
    return Request(request_id, prompt, params, 4, num_bidirectional=bidirectional)


def test_prefill_starts_after_the_held_prefix_and_always_runs_the_last_id() -> None:
    scheduler = Scheduler(SlotPool(2), max_num_seqs=2, max_num_batched_tokens=64, max_queue_len=8)
    first = request("a", list(range(1, 41)))
    scheduler.add_request(first)
    scheduler.update_from_output(scheduler.schedule(), [7])  # one chunk: the whole prompt
    scheduler.finish_request(first, FinishReason.LENGTH)
    again = request("b", list(range(1, 41)))  # the same prompt: all but its last id
    longer = request("c", [*range(1, 31), 99, 98])  # shares 30 ids
    for r in (again, longer):
        scheduler.add_request(r)
    chunks = {c.request.request_id: c for c in scheduler.schedule().chunks}
    assert (again.num_reused, chunks["b"].start, chunks["b"].num_tokens) == (39, 39, 1)
    assert (longer.num_reused, chunks["c"].start) == (0, 0)  # slot 0 went to b; 1 held nothing
    assert scheduler.num_reused_tokens == 39


def test_bidirectional_prompts_and_a_disabled_cache_reuse_nothing() -> None:
    for bidirectional, reuse in ((5, True), (0, False)):
        scheduler = Scheduler(
            SlotPool(1), max_num_seqs=1, max_num_batched_tokens=64, max_queue_len=8,
            reuse_prefixes=reuse,
        )  # fmt: skip
        first = request("a", list(range(1, 21)), bidirectional)
        scheduler.add_request(first)
        scheduler.schedule()
        scheduler.finish_request(first, FinishReason.LENGTH)
        second = request("b", list(range(1, 21)), bidirectional)
        scheduler.add_request(second)
        assert scheduler.schedule().chunks[0].start == 0 and second.num_reused == 0


@pytest.fixture(scope="module")
def demo() -> LoadedModel:
    return load_model(None, EngineConfig())  # float32 on our kernels, as served


def replies(
    engine: AsyncEngine, prompts: list[list[int]], params: SamplingParams
) -> list[list[RequestOutput]]:
    """The prompts one after another (each request finishes before the next starts)."""

    async def main() -> list[list[RequestOutput]]:
        async with engine:
            out = []
            for i, prompt in enumerate(prompts):
                out.append([o async for o in engine.generate(prompt, params, f"r{i}")])
            return out

    return asyncio.run(main())


def ids_and_logprobs(outputs: list[RequestOutput]) -> list[tuple[int, float]]:
    return [(lp.token_id, lp.logprob) for o in outputs for lp in (o.logprobs or [])]


@pytest.mark.parametrize("budget", [256, 24])  # one prefill chunk, or several
def test_a_reused_prefix_gives_the_reply_of_a_fresh_engine(demo: LoadedModel, budget: int) -> None:
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=2)
    history = demo.format.encode("You are GLM. Answer briefly. What is the capital of France?")
    turn2 = history + demo.format.encode(" Paris. And of Italy?")
    config = EngineConfig(max_num_seqs=2, max_model_len=256, max_num_batched_tokens=budget)
    engine = AsyncEngine.from_loaded(demo, config)
    first, second, again = replies(engine, [history, turn2, turn2], params)
    assert engine._scheduler.num_reused_tokens == len(history) + len(turn2) - 1
    for prompt, outputs in ((history, first), (turn2, second), (turn2, again)):
        fresh_engine = AsyncEngine.from_loaded(demo, replace(config, prefix_caching=False))
        (fresh,) = replies(fresh_engine, [prompt], params)
        assert fresh_engine._scheduler.num_reused_tokens == 0
        assert ids_and_logprobs(outputs) == ids_and_logprobs(fresh)  # the same bits
        assert len(ids_and_logprobs(outputs)) == 12


def test_a_served_chat_turn_asked_again_gets_the_same_bits(demo: LoadedModel) -> None:
    # the prompt's last id alone is then a one-id chunk: it must be prefilled as in a fresh
    # engine (SDPA), not decoded (our decode kernel rounds differently in the last place)
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=0)
    prompt = demo.format.chat_prompt([ChatMessage("user", "Hello there, how are you doing today?")])
    config = EngineConfig(max_num_seqs=2, max_model_len=256)
    first, again = replies(AsyncEngine.from_loaded(demo, config), [prompt, prompt], params)
    assert ids_and_logprobs(first) == ids_and_logprobs(again)


def test_a_one_id_last_chunk_is_prefilled_to_the_bits_of_one_whole_chunk(
    demo: LoadedModel,
) -> None:
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, logprobs=0)
    prompt = demo.format.encode("a prompt of exactly twenty-five ids or so, more or less")[:25]
    assert len(prompt) == 25
    split = EngineConfig(max_num_seqs=1, max_model_len=128, max_num_batched_tokens=24)
    whole = replace(split, max_num_batched_tokens=64)
    (in_two,) = replies(AsyncEngine.from_loaded(demo, split), [prompt], params)  # 24 + 1
    (in_one,) = replies(AsyncEngine.from_loaded(demo, whole), [prompt], params)
    assert ids_and_logprobs(in_two) == ids_and_logprobs(in_one)
