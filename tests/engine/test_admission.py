"""Admission: defaults from the checkpoint then fallbacks, stop ids, max_tokens cut to fit."""

from __future__ import annotations

import pytest
from engine_fakes import EOS, USER, PieceFormat, TinyLM

from glm_api.config import EngineConfig
from glm_api.engine.admission import Admission, max_model_len_for
from glm_api.engine.errors import InvalidRequestError
from glm_api.engine.request import SamplingParams

DEFAULTS = {"temperature": 0.6, "top_p": 0.8, "max_tokens": 5, "stop_token_ids": [33]}


def admission(defaults: dict[str, object] | None = None, max_model_len: int = 32) -> Admission:
    return Admission(TinyLM(), PieceFormat(), max_model_len, dict(defaults or {}))


def test_unset_fields_come_from_the_checkpoint_then_fallbacks() -> None:
    request = admission(DEFAULTS).make_request([5, 6], SamplingParams(top_p=0.5), "a")
    params = request.params
    assert (params.temperature, params.top_p, params.top_k, params.repetition_penalty) == (
        0.6,
        0.5,
        0,
        1.0,
    )
    assert request.max_tokens == 5 and request.stop_ids == frozenset({EOS, USER, 33})
    fallback = admission().make_request([5], SamplingParams(), "b")
    assert (fallback.params.temperature, fallback.params.top_p) == (1.0, 1.0)
    assert fallback.max_tokens == 31  # what fits: 32 - 1


def test_ignore_eos_keeps_only_the_users_stop_ids() -> None:
    params = SamplingParams(ignore_eos=True, stop_token_ids=[7], max_tokens=100, top_k=-1)
    request = admission(DEFAULTS).make_request([5, 6], params, "a")
    assert request.stop_ids == frozenset({7}) and request.max_tokens == 30
    assert request.params.top_k == 0


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(repetition_penalty=0.0),
        SamplingParams(max_tokens=0),
        SamplingParams(logprobs=21),
        SamplingParams(presence_penalty=3.0),
        SamplingParams(min_tokens=-1),
    ],
)
def test_bad_parameters_are_refused(params: SamplingParams) -> None:
    with pytest.raises(InvalidRequestError):
        admission().make_request([5], params, "a")


def test_max_model_len_defaults_to_the_model_and_may_not_exceed_it() -> None:
    model = TinyLM(max_position=128)
    assert max_model_len_for(model, EngineConfig()) == 128
    assert max_model_len_for(model, EngineConfig(max_model_len=64)) == 64
    with pytest.raises(ValueError):
        max_model_len_for(model, EngineConfig(max_model_len=256))
