"""The engine on tiny random instances of the real architectures (v1 and v2+), with
P-tuning prefixes, GQA and chunked prefill: greedy output equals the no-cache reference."""

from __future__ import annotations

import asyncio

import pytest
import torch
from engine_fakes import PieceFormat, reference_greedy

from glm_api.config import EngineConfig
from glm_api.engine.async_engine import AsyncEngine
from glm_api.engine.request import RequestOutput, SamplingParams
from glm_api.models.base import CausalLM
from glm_api.models.chatglm import ChatGLMForCausalLM
from glm_api.models.config import ChatGLMv1Config, GLMConfig
from glm_api.models.glm import GLMForCausalLM

SOP = 5


def chatglm_v1() -> CausalLM:
    torch.manual_seed(0)
    config = ChatGLMv1Config(
        vocab_size=48, hidden_size=32, num_layers=2, num_attention_heads=4,
        inner_hidden_size=64, max_position=128, bos_token_id=SOP, eos_token_ids=[0],
        pre_seq_len=2,
    )  # fmt: skip
    return ChatGLMForCausalLM(config).eval()


def glm_v2() -> CausalLM:
    torch.manual_seed(0)
    config = GLMConfig(
        vocab_size=48, hidden_size=32, num_layers=2, num_attention_heads=4, num_kv_heads=2,
        head_dim=8, intermediate_size=64, max_position=128, pre_seq_len=3,
    )  # fmt: skip
    return GLMForCausalLM(config).eval()


def generate(model: CausalLM, prompts: list[list[int]]) -> list[list[int]]:
    config = EngineConfig(max_num_seqs=4, max_model_len=64, max_num_batched_tokens=5)
    engine = AsyncEngine(model, PieceFormat(), config)
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)

    async def one(prompt: list[int], request_id: str) -> list[RequestOutput]:
        return [o async for o in engine.generate(prompt, params, request_id)]

    async def main() -> list[list[RequestOutput]]:
        async with engine:
            return list(await asyncio.gather(*(one(p, str(i)) for i, p in enumerate(prompts))))

    return [[i for o in outputs for i in o.new_token_ids] for outputs in asyncio.run(main())]


@pytest.mark.parametrize("build", [chatglm_v1, glm_v2], ids=["chatglm-v1", "glm-v2"])
def test_greedy_with_prefix_and_chunks_matches_the_reference(build: object) -> None:
    model = build()  # type: ignore[operator]
    prompts = [
        [7, 8, 9, 10, 11, 12, 13, 3, SOP, 14],  # v1: 8 bidirectional tokens, over the budget
        [20, 21, SOP],
        [30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41],
    ]
    results = generate(model, prompts)
    for prompt, ids in zip(prompts, results, strict=True):
        assert ids == reference_greedy(model, prompt, 10, PieceFormat.vocab_size)
