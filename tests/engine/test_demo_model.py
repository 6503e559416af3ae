"""The engine on the built-in demo model (a tiny random GLM-4 with the byte-level DemoFormat)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engine_fakes import reference_greedy

from glm_api.config import EngineConfig
from glm_api.engine.async_engine import AsyncEngine
from glm_api.engine.request import FinishReason, RequestOutput, SamplingParams
from glm_api.models.demo import build_demo_model
from glm_api.models.loader import LoadedModel


@pytest.fixture(scope="module")
def demo() -> LoadedModel:
    return build_demo_model()


def new_engine(demo: LoadedModel, **config: Any) -> AsyncEngine:
    settings: dict[str, Any] = dict(max_num_seqs=16, max_model_len=128, max_num_batched_tokens=32)
    settings.update(config)
    return AsyncEngine.from_loaded(demo, EngineConfig(**settings))


def generate_all(
    engine: AsyncEngine, prompts: list[list[int]], **params: Any
) -> list[list[RequestOutput]]:
    async def one(prompt: list[int], request_id: str) -> list[RequestOutput]:
        stream = engine.generate(prompt, SamplingParams(**params), request_id)
        return [o async for o in stream]

    async def main() -> list[list[RequestOutput]]:
        async with engine:
            return list(await asyncio.gather(*(one(p, f"r{i}") for i, p in enumerate(prompts))))

    return asyncio.run(main())


def ids_of(outputs: list[RequestOutput]) -> list[int]:
    return [i for o in outputs for i in o.new_token_ids]


def test_greedy_matches_the_reference_loop(demo: LoadedModel) -> None:
    prompt = demo.format.encode("Hello, GLM! How are you today?")
    (outputs,) = generate_all(
        new_engine(demo), [prompt], temperature=0, max_tokens=16, ignore_eos=True
    )
    expected = reference_greedy(demo.model, prompt, 16, demo.format.vocab_size)
    assert ids_of(outputs) == expected
    assert "".join(o.new_text for o in outputs) == demo.format.decode(expected)
    assert outputs[-1].finish_reason is FinishReason.LENGTH


def test_sixteen_concurrent_requests_are_batched_and_correct(demo: LoadedModel) -> None:
    engine = new_engine(demo, max_num_batched_tokens=40)
    prompts = [demo.format.encode("ask " * (i + 1)) for i in range(16)]
    results = generate_all(engine, prompts, temperature=0, max_tokens=8, ignore_eos=True)
    alone = generate_all(
        new_engine(demo), [prompts[5]], temperature=0, max_tokens=8, ignore_eos=True
    )
    assert ids_of(results[5]) == ids_of(alone[0])  # batch invariance, float32
    for prompt, outputs in zip(prompts, results, strict=True):
        expected = reference_greedy(demo.model, prompt, 8, demo.format.vocab_size)
        assert ids_of(outputs) == expected
        assert "".join(o.new_text for o in outputs) == demo.format.decode(expected)
        assert outputs[-1].num_generated_tokens == 8
        assert outputs[-1].num_prompt_tokens == len(prompt)
    stats = engine.stats()
    assert max(stats.batch_sizes) > 1 and stats.num_generation_tokens_total == 16 * 8
