"""One engine step on the model: SchedulerOutput -> tensors -> forward -> sampled ids.

The flattened batch is built from Python lists with one `torch.tensor` call per field;
logits are computed only for the rows that yield a next id (the last row of a finished
prefill chunk, every decode row), and only for the tokenizer's part of a padded vocabulary;
plain greedy rows first ask the model for their argmax without logits (`greedy_ids`).
The runner owns each request's `torch.Generator` (seeded once) and nothing else: it never
touches queues, and it never decides when a request stops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from glm_api.engine.kv_cache import KVCache
from glm_api.engine.request import Request, TokenLogprob
from glm_api.engine.sampler import Sampler, SamplingRow, is_plain_greedy
from glm_api.engine.scheduler import SchedulerOutput
from glm_api.models.attention import AttentionBatch
from glm_api.models.base import CausalLM


@dataclass(slots=True)
class StepInputs:
    """The tensors of one step, and which hidden rows need logits."""

    input_ids: torch.Tensor  # (num_tokens,)
    positions: torch.Tensor  # (num_tokens,)
    batch: AttentionBatch
    sample_rows: list[int]
    #: index into output.chunks of each sample row
    sample_chunks: list[int]


class Runner:
    def __init__(
        self,
        model: CausalLM,
        cache: KVCache,
        vocab_limit: int,
        device: torch.device,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.cache = cache
        self.vocab_limit = min(vocab_limit, model.vocab_size)
        self.device = device
        self.sampler = Sampler()
        # unseeded requests share one generator, seeded from the config: whole runs repeat
        self._shared_generator = torch.Generator(device=device).manual_seed(seed)
        self._generators: dict[str, torch.Generator] = {}

    def prepare(self, output: SchedulerOutput) -> StepInputs:
        ids: list[int] = []
        positions: list[int] = []
        batch = AttentionBatch([], [], [], [], [], [])
        sample_rows: list[int] = []
        sample_chunks: list[int] = []
        for i, chunk in enumerate(output.chunks):
            request = chunk.request
            assert request.slot is not None, "a scheduled request holds a slot"
            batch.slot_ids.append(request.slot)
            batch.query_starts.append(len(ids))
            batch.query_lens.append(chunk.num_tokens)
            batch.cached_lens.append(chunk.start)
            batch.bidirectional_lens.append(request.num_bidirectional)
            batch.prompt_lens.append(request.num_prompt_tokens)
            ids.extend(request.token_slice(chunk.start, chunk.num_tokens))
            positions.extend(range(chunk.start, chunk.start + chunk.num_tokens))
            if chunk.needs_sample:
                sample_rows.append(len(ids) - 1)
                sample_chunks.append(i)
        return StepInputs(
            input_ids=torch.tensor(ids, dtype=torch.long, device=self.device),
            positions=torch.tensor(positions, dtype=torch.long, device=self.device),
            batch=batch,
            sample_rows=sample_rows,
            sample_chunks=sample_chunks,
        )

    def execute(
        self, output: SchedulerOutput
    ) -> tuple[list[int | None], list[TokenLogprob | None]]:
        """Run one step; per chunk the sampled id (None when the chunk needs none) and logprobs."""
        inputs = self.prepare(output)
        with torch.inference_mode():
            hidden = self.model.forward(
                inputs.input_ids, inputs.positions, inputs.batch, self.cache.layers
            )  # (num_tokens, hidden)
            sampled: list[int | None] = [None] * len(output.chunks)
            logprobs: list[TokenLogprob | None] = [None] * len(output.chunks)
            if not inputs.sample_rows:
                return sampled, logprobs
            rows = torch.tensor(inputs.sample_rows, dtype=torch.long, device=hidden.device)
            hidden = hidden[rows]  # (num_rows, hidden)
            requests = [output.chunks[i].request for i in inputs.sample_chunks]
            found = self._greedy_ids(hidden, requests)
            rest = [j for j in range(len(requests)) if j not in found]
            row_ids: list[int] = []
            row_logprobs: list[TokenLogprob | None] = []
            if rest:
                if len(rest) < len(requests):
                    hidden = hidden[torch.tensor(rest, device=hidden.device)]
                logits = self.model.compute_logits(hidden)  # (num_rest, vocab_size)
                logits = logits[:, : self.vocab_limit].float()
                row_ids, row_logprobs = self.sampler(
                    logits, [SamplingRow(requests[j], self._generator(requests[j])) for j in rest]
                )
        for j, token_id in found.items():
            sampled[inputs.sample_chunks[j]] = token_id
        for j, token_id, token_logprob in zip(rest, row_ids, row_logprobs, strict=True):
            i = inputs.sample_chunks[j]
            sampled[i], logprobs[i] = token_id, token_logprob
        return sampled, logprobs

    def _greedy_ids(self, hidden: torch.Tensor, requests: list[Request]) -> dict[int, int]:
        """Rows (index -> id) the model's greedy_ids settles without computing their logits."""
        plain = [j for j, request in enumerate(requests) if is_plain_greedy(request)]
        if not plain:
            return {}
        if len(plain) < len(requests):
            hidden = hidden[torch.tensor(plain, device=hidden.device)]
        ids = self.model.greedy_ids(hidden, self.vocab_limit)
        if ids is None:
            return {}
        return {j: token_id for j, token_id in zip(plain, ids, strict=True) if token_id is not None}

    def _generator(self, request: Request) -> torch.Generator | None:
        if request.params.temperature == 0:
            return None
        seed = request.params.seed
        if seed is None:
            return self._shared_generator
        generator = self._generators.get(request.request_id)
        if generator is None:
            # any int seeds (n > 1 adds the choice's index): torch takes [0, 2^64)
            generator = torch.Generator(device=self.device).manual_seed(seed % 2**64)
            self._generators[request.request_id] = generator
        return generator

    def release(self, request_id: str) -> None:
        """Forget a finished request's generator."""
        self._generators.pop(request_id, None)
