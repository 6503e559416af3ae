"""The seam between serving/ and the embedding models: `EmbeddingClient`.

The real implementation (embeddings/service.py) batches concurrent requests and runs the
models off the event loop; HTTP tests may use a fake. No torch import here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class EmbeddingModelInfo:
    """What /models and /v1/models show about one served embedding model."""

    name: str
    dimension: int
    max_input_tokens: int
    is_normalized: bool
    #: can the vector be shortened with `dimensions` (Matryoshka-trained models only)
    can_shorten: bool
    #: languages the vocabulary covers, e.g. "en" for all-MiniLM-L6-v2, "zh" for text2vec
    languages: str
    pooling: str  # "mean" | "cls" | ...


@dataclass(slots=True)
class EmbeddingResult:
    vectors: list[list[float]]  # one per input, float32 values
    num_tokens: int  # tokens actually fed to the model, all inputs together
    model: str


class EmbeddingClient(Protocol):
    """Embeds texts or token-id lists with one of the served models.

    Raises `glm_api.engine.errors.InvalidRequestError` for empty input, too many inputs, an
    over-long input without `truncate`, or `dimensions` the model cannot give, and
    `KeyError` naming the model when `model` is not served.
    """

    default_model: str

    def models(self) -> list[EmbeddingModelInfo]: ...

    async def embed(
        self,
        inputs: list[str] | list[list[int]],
        model: str | None = None,
        dimensions: int | None = None,
        truncate: bool = False,
    ) -> EmbeddingResult: ...
