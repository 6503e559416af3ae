"""The engine on what `serve` loads: a tiny checkpoint of every real layout, through the
loader (float32 linears reordered for oneDNN, as served on a CPU), with its real tokenizer.

Greedy ids must be bit-identical whether a request runs alone or beside 15 others of
different lengths, and the text must be the tokenizer's decoding of those ids.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from glm_api.config import Device, EngineConfig
from glm_api.engine.async_engine import AsyncEngine
from glm_api.engine.request import RequestOutput, SamplingParams
from glm_api.models.loader import LoadedModel, load_model
from glm_api.models.packed import PackedLinear
from tests.helpers.checkpoints import LAYOUTS, write_checkpoint

CONFIG = EngineConfig(
    device=Device.CPU, max_num_seqs=16, max_model_len=160, max_num_batched_tokens=96
)
PARAMS = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)


def run(loaded: LoadedModel, prompts: list[list[int]]) -> tuple[list[list[RequestOutput]], int]:
    """Every prompt at once; the outputs per prompt and the largest batch of a step."""
    engine = AsyncEngine.from_loaded(loaded, CONFIG)

    async def one(prompt: list[int], request_id: str) -> list[RequestOutput]:
        return [o async for o in engine.generate(prompt, PARAMS, request_id)]

    async def main() -> tuple[list[list[RequestOutput]], int]:
        async with engine:
            outputs = await asyncio.gather(*(one(p, str(i)) for i, p in enumerate(prompts)))
            return list(outputs), max(engine.stats().batch_sizes)

    return asyncio.run(main())


def ids_of(outputs: list[RequestOutput]) -> list[int]:
    return [i for o in outputs for i in o.new_token_ids]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_alone_and_among_fifteen_give_the_same_ids(
    assets: Path, tmp_path: Path, layout: str
) -> None:
    loaded = load_model(str(write_checkpoint(layout, tmp_path / layout, assets)), CONFIG)
    assert any(isinstance(m, PackedLinear) for m in loaded.model.modules())
    fmt = loaded.format
    prompts = [fmt.legacy_prompt("你好, GLM! " * (1 + i % 5) + str(i), []) for i in range(16)]
    assert len({len(p) for p in prompts}) >= 5
    together, max_batch = run(loaded, prompts)
    assert max_batch > 1  # steps ran several requests at once
    for outputs in together:
        assert len(ids_of(outputs)) == PARAMS.max_tokens
        assert outputs[-1].finish_reason is not None and outputs[-1].finish_reason.value == "length"
        text = "".join(o.new_text for o in outputs)
        assert text == fmt.decode(ids_of(outputs))
    for i in (0, 9, 15):
        alone, _ = run(loaded, [prompts[i]])
        assert ids_of(alone[0]) == ids_of(together[i]), f"prompt {i} changed beside others"
