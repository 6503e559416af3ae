"""From (prompt ids, SamplingParams) to a validated `Request` with every default resolved.

Runs on the event loop before a request reaches the scheduler, so every error here is
raised before the first output: PromptTooLongError, InvalidRequestError. Defaults for unset
fields come from the checkpoint's generation config (as loader.py names them: temperature,
top_p, top_k, repetition_penalty, max_tokens, stop_token_ids), then from fixed fallbacks.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from glm_api.config import EngineConfig
from glm_api.engine.errors import InvalidRequestError, PromptTooLongError
from glm_api.engine.request import Request, SamplingParams
from glm_api.engine.stopping import TextStream
from glm_api.formats.base import ChatFormat
from glm_api.models.base import CausalLM

#: when neither the request nor the checkpoint says (OpenAI's defaults; top_k 0 is off)
FALLBACK_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "repetition_penalty": 1.0,
}
#: the longest context used when neither the config nor a smaller checkpoint limits it
DEFAULT_MAX_MODEL_LEN = 8192
MAX_LOGPROBS = 20
#: temperatures below this sample as greedy (vLLM's threshold): dividing by less overflows
GREEDY_BELOW = 1e-5
MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY = 0.01, 100.0


def max_model_len_for(model: CausalLM, config: EngineConfig) -> int:
    if config.max_model_len is None:
        return min(model.max_position, DEFAULT_MAX_MODEL_LEN)
    if config.max_model_len > model.max_position:
        raise ValueError(
            f"max_model_len {config.max_model_len} exceeds the model's context {model.max_position}"
        )
    return config.max_model_len


class Admission:
    def __init__(
        self,
        model: CausalLM,
        format: ChatFormat,
        max_model_len: int,
        generation_defaults: dict[str, Any],
    ) -> None:
        self.model, self.format, self.max_model_len = model, format, max_model_len
        names = {f.name for f in dataclasses.fields(SamplingParams)}
        self.defaults = {k: v for k, v in generation_defaults.items() if k in names}
        #: generation_config.json's eos ids: end a request like the format's stop ids
        self.checkpoint_stop_ids = [int(i) for i in self.defaults.pop("stop_token_ids", [])]

    def make_request(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str
    ) -> Request:
        num_prompt = len(prompt_ids)
        if num_prompt == 0:
            raise InvalidRequestError("The prompt is empty.", param="prompt")
        if num_prompt >= self.max_model_len:  # no room left for a single new token
            raise PromptTooLongError(num_prompt, self.max_model_len)
        vocab = self.model.vocab_size
        if any(not 0 <= token_id < vocab for token_id in prompt_ids):
            raise InvalidRequestError(f"The prompt has ids outside 0..{vocab - 1}.", param="prompt")
        params = self.resolve(params)
        room = self.max_model_len - num_prompt
        max_tokens = room if params.max_tokens is None else min(params.max_tokens, room)
        stop_ids = set(params.stop_token_ids)  # the user's: they stop even with ignore_eos
        if not params.ignore_eos:
            stop_ids.update(self.format.stop_token_ids)
            stop_ids.update(self.checkpoint_stop_ids)
        return Request(
            request_id=request_id,
            prompt_ids=list(prompt_ids),
            params=params,
            max_tokens=max_tokens,
            stop_ids=frozenset(stop_ids),
            num_bidirectional=self.model.bidirectional_len(prompt_ids),
            arrival_time=time.monotonic(),
        )

    def resolve(self, params: SamplingParams) -> SamplingParams:
        """A copy with unset fields filled (checkpoint defaults, then fallbacks), validated."""
        filled: dict[str, Any] = {}
        for name, fallback in FALLBACK_DEFAULTS.items():
            if getattr(params, name) is None:
                filled[name] = self.defaults.get(name, fallback)
        if params.max_tokens is None and "max_tokens" in self.defaults:
            filled["max_tokens"] = int(self.defaults["max_tokens"])  # max_new_tokens
        params = dataclasses.replace(params, **filled)
        params.stop = list(params.stop)
        params.stop_token_ids = list(params.stop_token_ids)
        if params.top_k is not None and params.top_k < 0:
            params.top_k = 0  # vLLM spells "off" as -1
        _validate(params)
        if params.temperature is not None and params.temperature < GREEDY_BELOW:
            # logits / 1e-39 overflow to inf and the softmax to NaN: as vLLM, this is greedy
            params.temperature = 0.0
        return params

    def text_stream(self, request: Request) -> TextStream:
        decoder = self.format.new_decoder(request.params.skip_special_tokens)
        return TextStream(decoder, request.params.stop)


def _validate(params: SamplingParams) -> None:
    def bad(message: str, param: str) -> InvalidRequestError:
        return InvalidRequestError(message, param=param)

    if params.temperature is None or params.temperature < 0:
        raise bad("temperature must be >= 0.", "temperature")
    if params.top_p is None or not 0 < params.top_p <= 1:
        raise bad("top_p must be in (0, 1].", "top_p")
    penalty = params.repetition_penalty
    if penalty is None or not MIN_REPETITION_PENALTY <= penalty <= MAX_REPETITION_PENALTY:
        # ChatGLM's penalty divides positive logits by it: 1e-300 overflows them to inf
        raise bad(
            f"repetition_penalty must be in [{MIN_REPETITION_PENALTY}, "
            f"{MAX_REPETITION_PENALTY}] (1 is off).",
            "repetition_penalty",
        )
    if not -2 <= params.presence_penalty <= 2:
        raise bad("presence_penalty must be in [-2, 2].", "presence_penalty")
    if not -2 <= params.frequency_penalty <= 2:
        raise bad("frequency_penalty must be in [-2, 2].", "frequency_penalty")
    if params.max_tokens is not None and params.max_tokens < 1:
        raise bad("max_tokens must be >= 1.", "max_tokens")
    if params.min_tokens < 0:
        raise bad("min_tokens must be >= 0.", "min_tokens")
    if params.logprobs is not None and not 0 <= params.logprobs <= MAX_LOGPROBS:
        raise bad(f"logprobs must be in [0, {MAX_LOGPROBS}].", "logprobs")
