"""`EmbeddingService`: the real `EmbeddingClient`.

Owns the served models by name, request checks, and batching: requests that arrive within a
few milliseconds of each other (or while a forward runs) are sorted by length and padded into
shared forwards. Tokenization and forwards run on one dedicated worker thread, so a burst of
embedding requests never blocks the event loop nor queues behind the default executor.
Model internals live in model.py; HTTP shapes belong to protocol/ and serving/.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from glm_api import openmp
from glm_api.embeddings.base import EmbeddingModelInfo, EmbeddingResult
from glm_api.embeddings.folder import DEFAULT_MODEL_NAME, parse_spec, resolve_folder
from glm_api.embeddings.model import EmbeddingModel
from glm_api.engine.errors import InvalidRequestError

MAX_INPUTS_PER_REQUEST = 2048  # OpenAI's limit for one embeddings request
MAX_BATCH_TOKENS = 16384  # padded tokens in one forward: bounds activation memory
BATCH_WAIT_S = 0.003  # how long the first request of a batch waits for company


@dataclass(slots=True)
class _Pending:
    """One embed() call waiting for its vectors."""

    model: EmbeddingModel
    sequences: list[list[int]]
    future: asyncio.Future[list[list[float]]]


@dataclass(slots=True)
class _Collector:
    """The batching loop bound to one event loop (a new loop gets a new collector)."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_Pending] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


class EmbeddingService:
    """Serves several embedding models; the first is the default."""

    def __init__(
        self,
        models: list[EmbeddingModel],
        max_inputs_per_request: int = MAX_INPUTS_PER_REQUEST,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        batch_wait_s: float = BATCH_WAIT_S,
    ):
        if not models:
            raise ValueError("EmbeddingService needs at least one model")
        names = [model.name for model in models]
        if len(set(names)) != len(names):
            raise ValueError(f"embedding model names must be unique, got {names}")
        self._models = {model.name: model for model in models}
        self.default_model = models[0].name
        self.max_inputs_per_request = max_inputs_per_request
        self.max_batch_tokens = max_batch_tokens
        self.batch_wait_s = batch_wait_s
        self.num_forwards = 0  # forwards run so far (for stats and tests)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="glm-embed")
        self._collector: _Collector | None = None

    @classmethod
    def from_specs(
        cls,
        specs: list[str],
        max_inputs_per_request: int = MAX_INPUTS_PER_REQUEST,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        batch_wait_s: float = BATCH_WAIT_S,
    ) -> EmbeddingService:
        """Load "PATH_OR_ID" / "NAME=PATH_OR_ID" specs; none -> the bundled all-MiniLM-L6-v2."""
        models = []
        for spec in specs or [DEFAULT_MODEL_NAME]:
            name, source = parse_spec(spec)
            models.append(EmbeddingModel.load(name, resolve_folder(source)))
        openmp.release_pool()  # loading ran torch on this thread: its workers go (openmp.py)
        return cls(models, max_inputs_per_request, max_batch_tokens, batch_wait_s)

    def models(self) -> list[EmbeddingModelInfo]:
        return [model.info() for model in self._models.values()]

    async def embed(
        self,
        inputs: list[str] | list[list[int]],
        model: str | None = None,
        dimensions: int | None = None,
        truncate: bool = False,
    ) -> EmbeddingResult:
        served = self._model(model)
        self._check_request(served, inputs, dimensions)
        loop = asyncio.get_running_loop()
        sequences = await loop.run_in_executor(self._executor, served.prepare, inputs, truncate)
        pending = _Pending(served, sequences, loop.create_future())
        self._ensure_collector(loop).queue.put_nowait(pending)
        vectors = await pending.future
        if dimensions is not None and dimensions != served.dimension:
            vectors = [_shorten(v, dimensions, served.folder_config.is_normalized) for v in vectors]
        num_tokens = sum(len(ids) for ids in sequences)
        return EmbeddingResult(vectors=vectors, num_tokens=num_tokens, model=served.name)

    def close(self) -> None:
        """Stop the collector and the worker thread."""
        if self._collector is not None and self._collector.task is not None:
            self._collector.task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _model(self, name: str | None) -> EmbeddingModel:
        if name is None:
            return self._models[self.default_model]
        if name not in self._models:
            raise KeyError(name)
        return self._models[name]

    def _check_request(
        self, model: EmbeddingModel, inputs: list[str] | list[list[int]], dimensions: int | None
    ) -> None:
        if not inputs:
            raise InvalidRequestError("input must not be empty", param="input")
        if len(inputs) > self.max_inputs_per_request:
            raise InvalidRequestError(
                f"input has {len(inputs)} items, more than the {self.max_inputs_per_request} "
                "allowed in one request",
                param="input",
            )
        for index, item in enumerate(inputs):
            if not isinstance(item, str | list):
                raise InvalidRequestError(
                    f"input[{index}] must be a string or a list of token ids", param="input"
                )
            if len(item) == 0:
                raise InvalidRequestError(f"input[{index}] is empty", param="input")
        if dimensions is None or dimensions == model.dimension:  # the native size: as is
            return
        if not model.folder_config.can_shorten:
            raise InvalidRequestError(
                f"model {model.name!r} does not support shortening its vectors with dimensions",
                param="dimensions",
            )
        if not 1 <= dimensions <= model.dimension:
            raise InvalidRequestError(
                f"dimensions must be between 1 and {model.dimension} for model {model.name!r}",
                param="dimensions",
            )

    def _ensure_collector(self, loop: asyncio.AbstractEventLoop) -> _Collector:
        collector = self._collector
        if (
            collector is None
            or collector.loop is not loop
            or collector.task is None
            or collector.task.done()
        ):
            collector = _Collector(loop)
            collector.task = loop.create_task(self._collect(collector.queue))
            self._collector = collector
        return collector

    async def _collect(self, queue: asyncio.Queue[_Pending]) -> None:
        """Forever: take what is waiting (after a short window), run it, hand vectors back."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.batch_wait_s
            while (remaining := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            while not queue.empty():
                batch.append(queue.get_nowait())
            for model in {id(p.model): p.model for p in batch}.values():
                await self._run(model, [p for p in batch if p.model is model])

    async def _run(self, model: EmbeddingModel, batch: list[_Pending]) -> None:
        """Embed every call of `batch` with `model`; each caller gets its vectors or the error."""
        try:
            results = await self._forward_all(model, batch)
        except Exception as error:  # every waiting caller must hear of it
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        for p, vectors_of_p in zip(batch, results, strict=True):
            if not p.future.done():  # a caller that gave up is simply skipped
                p.future.set_result(vectors_of_p)

    async def _forward_all(
        self, model: EmbeddingModel, batch: list[_Pending]
    ) -> list[list[list[float]]]:
        """All sequences of `batch`, sorted by length, in forwards of <= max_batch_tokens."""
        items = [(p, s) for p, pending in enumerate(batch) for s in range(len(pending.sequences))]
        items.sort(key=lambda item: len(batch[item[0]].sequences[item[1]]))
        results: list[list[list[float]]] = [[[] for _ in p.sequences] for p in batch]
        loop = asyncio.get_running_loop()
        for chunk in self._chunks(items, batch):
            sequences = [batch[p].sequences[s] for p, s in chunk]
            vectors = await loop.run_in_executor(self._executor, _forward, model, sequences)
            self.num_forwards += 1
            for (p, s), vector in zip(chunk, vectors, strict=True):
                results[p][s] = vector
        return results

    def _chunks(
        self, items: list[tuple[int, int]], batch: list[_Pending]
    ) -> list[list[tuple[int, int]]]:
        """Split length-sorted items so that rows * longest row stays within the token budget."""
        chunks: list[list[tuple[int, int]]] = [[]]
        for item in items:
            length = len(batch[item[0]].sequences[item[1]])
            if chunks[-1] and (len(chunks[-1]) + 1) * length > self.max_batch_tokens:
                chunks.append([])
            chunks[-1].append(item)
        return chunks


def _forward(model: EmbeddingModel, sequences: list[list[int]]) -> list[list[float]]:
    """On the worker thread: one forward, and the conversion to Python floats (slow for 2048).
    Then the thread's OpenMP workers go (openmp.py): while they live beside the engine's,
    every engine step's barriers sleep and wake."""
    try:
        return model.embed_ids(sequences).tolist()  # type: ignore[no-any-return]
    finally:
        openmp.release_pool()


def _shorten(vector: list[float], dimensions: int, is_normalized: bool) -> list[float]:
    """Matryoshka shortening: keep the first components, renormalise if the model normalises."""
    head = vector[:dimensions]
    if not is_normalized:
        return head
    norm = math.sqrt(sum(x * x for x in head)) or 1.0
    return [x / norm for x in head]
