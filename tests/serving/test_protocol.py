"""protocol/: the one place pydantic becomes SamplingParams, and what input is refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from glm_api.engine.request import SamplingParams
from glm_api.protocol.legacy import LegacyChatRequest
from glm_api.protocol.openai import ChatCompletionRequest
from glm_api.protocol.openai_misc import CompletionRequest, EmbeddingRequest

USER = [{"role": "user", "content": "x"}]


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": USER, **fields})


def test_unset_fields_take_the_defaults_and_set_ones_win() -> None:
    defaults = {"temperature": 0.8, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.2}
    assert chat().to_sampling_params(defaults) == SamplingParams(
        temperature=0.8, top_p=0.9, top_k=40, repetition_penalty=1.2
    )
    params = chat(temperature=0, top_k=-1, stop=["a", "b"], logprobs=True).to_sampling_params(
        defaults
    )
    assert (params.temperature, params.top_k, params.stop, params.logprobs) == (0, 0, ["a", "b"], 0)


def test_legacy_request_is_explicit() -> None:
    params = LegacyChatRequest(prompt="x").to_sampling_params(max_tokens=7)
    assert params == SamplingParams(temperature=0.95, top_p=0.7, max_tokens=7)


@pytest.mark.parametrize(
    "fields",
    [
        {"logit_bias": {"1": 2.0}},
        {"tool_choice": {"type": "function", "function": {"name": "missing"}}},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        {"messages": [{"role": "tool", "tool_call_id": "c"}]},
        {"presence_penalty": 2.5},
        {"top_logprobs": 21, "logprobs": True},
    ],
)
def test_chat_refusals(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        chat(**fields)


def test_prompt_and_input_emptiness() -> None:
    assert CompletionRequest(model="m", prompt="").prompt_items() == [""]
    assert CompletionRequest(model="m", prompt=[5, 6]).prompt_items() == [[5, 6]]
    for prompt in ([], [[]], [[1], []]):
        with pytest.raises(ValidationError):
            CompletionRequest(model="m", prompt=prompt)
    for value in ("", [""], [], [[]]):
        with pytest.raises(ValidationError):
            EmbeddingRequest(model="m", input=value)
    assert EmbeddingRequest(model="m", input=[[1, 2], [3]]).input_items() == [[1, 2], [3]]
