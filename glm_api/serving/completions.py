"""POST /v1/completions: prompt texts or id lists -> n engine requests each -> choices.

Choice `p * n + i` is the i-th sample of prompt p, as OpenAI numbers them. `echo` puts the
prompt text in front of the answer; `suffix` and echo with logprobs are refused by protocol/.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from glm_api.engine.errors import InvalidRequestError
from glm_api.engine.protocol import EngineClient
from glm_api.engine.request import RequestOutput, SamplingParams
from glm_api.protocol.openai import UsageInfo
from glm_api.protocol.openai_misc import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
)
from glm_api.serving.logprobs import TextOffsets, completion_logprobs
from glm_api.serving.models import ServedModels
from glm_api.serving.streams import Collected, collect, fan_out, fit_max_tokens, merge, open_streams


@dataclass(slots=True)
class _Prompt:
    ids: list[int]
    text: str  # what `echo` shows


@dataclass(slots=True)
class _Job:
    request: CompletionRequest
    response_id: str
    prompts: list[_Prompt]
    params: list[SamplingParams]  # one per prompt (max_tokens capped per prompt)

    def engine_jobs(self) -> list[tuple[list[int], SamplingParams, str]]:
        jobs = []
        for p, prompt in enumerate(self.prompts):
            for i, params in enumerate(fan_out(self.params[p], self.request.n)):
                index = p * self.request.n + i
                jobs.append((prompt.ids, params, f"{self.response_id}-{index}"))
        return jobs

    def prefix(self, index: int) -> str:
        return self.prompts[index // self.request.n].text if self.request.echo else ""


class CompletionService:
    def __init__(self, engine: EngineClient, models: ServedModels):
        self.engine = engine
        self.models = models

    def _prompt(self, item: str | list[int]) -> _Prompt:
        fmt = self.engine.format
        if isinstance(item, str):
            return _Prompt(fmt.completion_prompt(item), item)
        if any(i < 0 or i >= fmt.vocab_size for i in item):
            raise InvalidRequestError(
                f"prompt token ids must be in [0, {fmt.vocab_size})", param="prompt"
            )
        return _Prompt(list(item), fmt.decode(item))

    def _prepare(self, request: CompletionRequest, response_id: str) -> _Job:
        self.models.check_chat(request.model)
        prompts = [self._prompt(item) for item in request.prompt_items()]
        base = request.to_sampling_params(self.engine.generation_defaults)
        params = []
        for prompt in prompts:
            max_tokens = fit_max_tokens(self.engine, len(prompt.ids), base.max_tokens, "prompt")
            params.append(dataclasses.replace(base, max_tokens=max_tokens))
        return _Job(request, response_id, prompts, params)

    def _offsets(self, job: _Job, index: int) -> TextOffsets:
        """Where choice `index`'s tokens start in its text (after the echoed prompt)."""
        skip = job.request.skip_special_tokens
        return TextOffsets(self.engine.format, skip, len(job.prefix(index)))

    def _logprobs(
        self, job: _Job, result: Collected, offsets: TextOffsets, end: int | None
    ) -> CompletionLogprobs | None:
        if job.request.logprobs is None:
            return None
        return completion_logprobs(self.engine.format, result.logprobs, offsets, end)

    async def create(self, request: CompletionRequest, response_id: str) -> CompletionResponse:
        job = self._prepare(request, response_id)
        results = await collect(await open_streams(self.engine, job.engine_jobs()))
        choices = [
            CompletionChoice(
                index=i,
                text=job.prefix(i) + r.text,
                logprobs=self._logprobs(job, r, self._offsets(job, i), len(job.prefix(i) + r.text)),
                finish_reason=r.finish_reason.value if r.finish_reason else None,
            )
            for i, r in enumerate(results)
        ]
        usage = _usage(job, results)
        return CompletionResponse(id=response_id, model=request.model, choices=choices, usage=usage)

    async def create_stream(
        self, request: CompletionRequest, response_id: str
    ) -> AsyncIterator[str]:
        """Starts the engine requests now (errors raise here); returns the chunks' JSON."""
        job = self._prepare(request, response_id)
        streams = await open_streams(self.engine, job.engine_jobs())
        return self._events(job, streams)

    async def _events(
        self, job: _Job, streams: list[AsyncIterator[RequestOutput]]
    ) -> AsyncIterator[str]:
        options = job.request.stream_options
        include_usage = bool(options and options.include_usage)
        results = [Collected() for _ in streams]
        offsets = [self._offsets(job, i) for i in range(len(streams))]
        exclude = None if include_usage else {"usage"}

        def chunk(choices: list[CompletionChoice], usage: UsageInfo | None = None) -> str:
            response = CompletionResponse(
                id=job.response_id, model=job.request.model, choices=choices, usage=usage
            )
            return response.model_dump_json(exclude=exclude)

        if job.request.echo:
            yield chunk(
                [CompletionChoice(index=i, text=job.prefix(i)) for i in range(len(streams))]
            )
        async for index, output in merge(streams):
            results[index].add(output)
            if not (output.new_text or output.logprobs or output.is_finished):
                continue  # the decoder is holding back an incomplete character
            delta = Collected()
            delta.add(output)
            finish = output.finish_reason.value if output.finish_reason else None
            # the text sent so far caps offsets only at the end: until then held-back text
            # (maybe a stop string's start) is still to come
            end = len(job.prefix(index) + results[index].text) if output.is_finished else None
            logprobs = self._logprobs(job, delta, offsets[index], end)
            yield chunk(
                [
                    CompletionChoice(
                        index=index, text=output.new_text, logprobs=logprobs, finish_reason=finish
                    )
                ]
            )
        if include_usage:
            yield chunk([], usage=_usage(job, results))


def _usage(job: _Job, results: Sequence[Collected]) -> UsageInfo:
    """Each prompt is counted once, however many samples it has."""
    prompt = sum(len(p.ids) for p in job.prompts)
    completion = sum(r.num_generated_tokens for r in results)
    # each prompt's first sample (results are prompt-major, n per prompt)
    cached = sum(r.num_cached_tokens for r in results[:: max(1, job.request.n)])
    return UsageInfo.of(prompt, completion, cached)
