"""The whole engine on a tiny real model: greedy parity with a no-cache reference loop,
concurrency, abort, seeds, stop strings and ids, validation, and a failing step."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest
import torch
from engine_fakes import SOP, VOCAB, PieceFormat, TinyLM, reference_greedy

from glm_api.config import EngineConfig
from glm_api.engine.async_engine import AsyncEngine
from glm_api.engine.errors import (
    EngineDeadError,
    EngineError,
    InvalidRequestError,
    PromptTooLongError,
    ServerBusyError,
)
from glm_api.engine.request import FinishReason, RequestOutput, SamplingParams

FORMAT = PieceFormat()


def new_engine(model: TinyLM | None = None, **config: Any) -> AsyncEngine:
    settings: dict[str, Any] = dict(max_num_seqs=16, max_model_len=64, max_num_batched_tokens=32)
    settings.update(config)
    return AsyncEngine(model or TinyLM(), FORMAT, EngineConfig(**settings))


def run(engine: AsyncEngine, body: Coroutine[Any, Any, Any]) -> Any:
    async def main() -> Any:
        async with engine:
            return await body

    return asyncio.run(main())


async def collect(
    engine: AsyncEngine, prompt: list[int], request_id: str = "r", **params: Any
) -> list[RequestOutput]:
    return [o async for o in engine.generate(prompt, SamplingParams(**params), request_id)]


def token_ids(outputs: list[RequestOutput]) -> list[int]:
    return [i for o in outputs for i in o.new_token_ids]


def test_greedy_matches_a_full_recompute_reference() -> None:
    engine = new_engine()
    prompt = [5, 9, 12, 3, 30, 7, 8, 21, 4, 4]
    outputs = run(engine, collect(engine, prompt, temperature=0, max_tokens=20, ignore_eos=True))
    expected = reference_greedy(engine.model, prompt, 20, VOCAB)
    assert token_ids(outputs) == expected
    assert "".join(o.new_text for o in outputs) == FORMAT.decode(expected)
    last = outputs[-1]
    assert last.finish_reason is FinishReason.LENGTH and last.num_generated_tokens == 20
    assert last.num_prompt_tokens == 10 and all(not o.is_finished for o in outputs[:-1])


def test_sixteen_concurrent_requests_batch_and_match_alone() -> None:
    engine = new_engine(max_num_batched_tokens=24)
    prompts = [[3 + (7 * i + j) % 36 for j in range(1 + 3 * i)] for i in range(16)]
    lengths = [4 + (i % 5) * 3 for i in range(16)]

    async def body() -> list[list[RequestOutput]]:
        jobs = [
            collect(engine, p, f"r{i}", temperature=0, max_tokens=n, ignore_eos=True)
            for i, (p, n) in enumerate(zip(prompts, lengths, strict=True))
        ]
        return list(await asyncio.gather(*jobs))

    results = run(engine, body())
    for prompt, num_new, outputs in zip(prompts, lengths, results, strict=True):
        expected = reference_greedy(engine.model, prompt, num_new, VOCAB)
        assert token_ids(outputs) == expected
        assert "".join(o.new_text for o in outputs) == FORMAT.decode(expected)
        assert outputs[-1].num_generated_tokens == num_new
    stats = engine.stats()
    assert max(stats.batch_sizes) > 1 and stats.num_running == 0 and stats.kv_cache_usage == 0
    assert stats.num_generation_tokens_total == sum(lengths)
    assert stats.num_prompt_tokens_total == sum(len(p) for p in prompts)
    assert len(stats.time_to_first_token) == 16 and engine.stats().batch_sizes == []


def test_batch_invariance_alone_and_beside_fifteen_others() -> None:
    prompt = [7, 3, 22, 9, 14]
    engine = new_engine()
    alone = run(engine, collect(engine, prompt, "x", temperature=0, max_tokens=24, ignore_eos=True))
    crowded_engine = new_engine()

    async def crowded() -> list[RequestOutput]:
        others = [
            collect(
                crowded_engine,
                [3 + i, 4, 5 + i] * (i + 1),
                f"o{i}",
                temperature=0,
                max_tokens=30,
                ignore_eos=True,
            )
            for i in range(15)
        ]
        target = collect(crowded_engine, prompt, "x", temperature=0, max_tokens=24, ignore_eos=True)
        return list(await asyncio.gather(target, *others))[0]

    assert token_ids(run(crowded_engine, crowded())) == token_ids(alone)


def test_closing_the_stream_aborts_and_frees_the_slot() -> None:
    engine = new_engine(max_num_batched_tokens=4)

    async def body() -> None:
        stream = engine.generate([5] * 20, SamplingParams(temperature=0, max_tokens=40), "gone")
        async for _ in stream:
            assert engine.stats().num_running == 1
            break
        await stream.aclose()  # type: ignore[attr-defined]
        stats = engine.stats()
        assert stats.num_running == 0 and stats.num_waiting == 0 and stats.kv_cache_usage == 0
        # abort() from elsewhere ends the consumer with an `abort` output
        other = engine.generate([5, 6], SamplingParams(temperature=0, max_tokens=60), "other")
        first = await other.__anext__()
        await engine.abort("other")
        rest = [o async for o in other]
        assert rest[-1].finish_reason is FinishReason.ABORT
        assert first.num_generated_tokens >= 1 and engine.cache.usage == 0

    run(engine, body())


def test_a_seed_reproduces_whatever_runs_beside_it() -> None:
    def sample(num_others: int) -> list[int]:
        engine = new_engine()

        async def body() -> list[RequestOutput]:
            others = [
                collect(engine, [4, 5, i + 3], f"o{i}", temperature=1.0, max_tokens=12)
                for i in range(num_others)
            ]
            target = collect(
                engine, [8, 9, 10], "s", temperature=1.0, seed=77, max_tokens=12, ignore_eos=True
            )
            return list(await asyncio.gather(target, *others))[0]

        return token_ids(run(engine, body()))

    assert sample(0) == sample(5)


def test_stop_strings_and_stop_ids_end_the_output() -> None:
    engine = new_engine()
    prompt = [5, 9, 12, 3]
    expected = reference_greedy(engine.model, prompt, 12, VOCAB)
    text = FORMAT.decode(expected)
    stop = text[5:7]
    cut = text[: text.find(stop)]

    async def body() -> tuple[list[RequestOutput], list[RequestOutput]]:
        by_text = await collect(
            engine, prompt, "t", temperature=0, max_tokens=12, stop=[stop], ignore_eos=True
        )
        by_id = await collect(
            engine,
            prompt,
            "i",
            temperature=0,
            max_tokens=12,
            ignore_eos=True,
            stop_token_ids=[expected[3]],
            skip_special_tokens=False,
        )
        return by_text, by_id

    by_text, by_id = run(engine, body())
    assert "".join(o.new_text for o in by_text) == cut
    assert by_text[-1].finish_reason is FinishReason.STOP and by_text[-1].stop_reason == stop
    first_stop = expected.index(expected[3])
    assert token_ids(by_id) == expected[: first_stop + 1]
    assert "".join(o.new_text for o in by_id) == FORMAT.decode(expected[:first_stop], False)
    assert by_id[-1].stop_reason == expected[3] and by_id[-1].finish_reason is FinishReason.STOP


def test_logprobs_and_max_tokens_cut_to_the_context() -> None:
    engine = new_engine(max_model_len=16)
    outputs = run(engine, collect(engine, [5] * 10, temperature=0, logprobs=2, ignore_eos=True))
    assert (
        outputs[-1].num_generated_tokens == 6 and outputs[-1].finish_reason is FinishReason.LENGTH
    )
    for output in outputs:
        assert output.logprobs is not None and len(output.logprobs) == 1
        entry = output.logprobs[0]
        assert entry.token_id == output.new_token_ids[0] and len(entry.top) == 2
        assert entry.top[0][0] == entry.token_id and entry.logprob == pytest.approx(entry.top[0][1])


def test_validation_errors_come_before_the_first_output() -> None:
    engine = new_engine(max_model_len=16)

    async def body() -> None:
        cases: list[tuple[list[int], SamplingParams, type[Exception]]] = [
            ([5] * 16, SamplingParams(), PromptTooLongError),
            ([], SamplingParams(), InvalidRequestError),
            ([5, 999], SamplingParams(), InvalidRequestError),
            ([5], SamplingParams(top_p=0.0), InvalidRequestError),
            ([5], SamplingParams(temperature=-1.0), InvalidRequestError),
        ]
        for prompt, params, error in cases:
            with pytest.raises(error):
                await engine.generate(prompt, params, "bad").__anext__()
        assert engine.stats().num_waiting == 0

    run(engine, body())
    busy = new_engine(max_queue_len=0)
    with pytest.raises(ServerBusyError):
        run(busy, collect(busy, [5]))


def test_prefix_rows_and_a_bidirectional_prompt_match_the_reference() -> None:
    model = TinyLM(num_prefix=3, bidirectional_id=SOP, seed=1)
    engine = new_engine(model, max_num_batched_tokens=4)
    prompt = [5, 6, 7, 8, 9, 10, SOP, 11, 12, 13]
    outputs = run(engine, collect(engine, prompt, temperature=0, max_tokens=10, ignore_eos=True))
    assert token_ids(outputs) == reference_greedy(model, prompt, 10, VOCAB)


class FailingLM(TinyLM):
    """Fails every step that contains the poison id."""

    def forward(self, input_ids: torch.Tensor, *args: Any) -> torch.Tensor:
        if bool((input_ids == 39).any()):
            raise RuntimeError("poisoned")
        return super().forward(input_ids, *args)


def test_a_failing_step_fails_its_requests_and_the_engine_serves_on() -> None:
    engine = new_engine(FailingLM())

    async def body() -> list[RequestOutput]:
        with pytest.raises(EngineError, match="poisoned"):
            await collect(engine, [39, 5], "bad", temperature=0, max_tokens=4)
        return await collect(engine, [5, 6], "good", temperature=0, max_tokens=4, ignore_eos=True)

    outputs = run(engine, body())
    assert outputs[-1].num_generated_tokens == 4 and engine.is_ready is False  # shut down
    assert engine.cache.usage == 0


def test_a_crashed_loop_fails_its_requests_and_reports_not_ready() -> None:
    engine = new_engine()
    assert engine.is_ready is False

    def broken() -> None:
        raise RuntimeError("scheduler bug")

    engine._scheduler.schedule = broken  # type: ignore[method-assign]

    async def body() -> None:
        assert engine.is_ready
        with pytest.raises(EngineDeadError, match="scheduler bug"):
            await collect(engine, [5, 6], temperature=0, max_tokens=2)
        assert engine.is_ready is False
        with pytest.raises(EngineDeadError):
            await collect(engine, [5, 6], "again", temperature=0, max_tokens=2)

    run(engine, body())


def test_an_idle_engine_takes_no_steps() -> None:
    engine = new_engine()

    async def body() -> tuple[int, int]:
        await collect(engine, [5, 6], temperature=0, max_tokens=3)
        before = engine.stats().num_steps_total
        for _ in range(20):
            await asyncio.sleep(0)
        return before, engine.stats().num_steps_total

    before, after = run(engine, body())
    assert before == after == 3


def test_a_float16_kv_cache_holds_twice_the_slots_and_stays_batch_invariant() -> None:
    from glm_api.config import KVCacheDType

    # a float32 slot: keys and values x 2 heads x 64 positions x 16 dims x 4 bytes = 16 KiB
    budget = dict(max_num_seqs=64, kv_cache_memory_gb=32 * 16 * 1024 / 1024**3)
    wide = new_engine(**budget)  # 32 slots of float32 in the budget
    half = new_engine(kv_cache_dtype=KVCacheDType.FLOAT16, **budget)
    assert half.cache.dtype == torch.float16 and wide.cache.dtype == torch.float32
    assert half.cache.layers[0].keys.dtype == torch.float16
    assert (wide.num_slots, half.num_slots) == (32, 64)
    prompt = [7, 3, 22, 9, 14]
    alone = run(half, collect(half, prompt, "x", temperature=0, max_tokens=24, ignore_eos=True))
    crowded_engine = new_engine(kv_cache_dtype=KVCacheDType.FLOAT16, **budget)

    async def crowded() -> list[RequestOutput]:
        others = [
            collect(crowded_engine, [3 + i, 4] * (i + 1), f"o{i}", temperature=0, max_tokens=30)
            for i in range(7)
        ]
        target = collect(crowded_engine, prompt, "x", temperature=0, max_tokens=24, ignore_eos=True)
        return list(await asyncio.gather(target, *others))[0]

    assert token_ids(run(crowded_engine, crowded())) == token_ids(alone)
    assert len(token_ids(alone)) == 24
