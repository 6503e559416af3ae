"""POST /v1/embeddings and the legacy POST /embedding: inputs -> EmbeddingClient -> vectors.

base64 is what the `openai` client asks for by default: little-endian float32 bytes.
"""

from __future__ import annotations

import base64
import struct

from glm_api.embeddings.base import EmbeddingClient, EmbeddingResult
from glm_api.protocol.legacy import LegacyEmbeddingRequest, LegacyEmbeddingResponse
from glm_api.protocol.openai_misc import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from glm_api.serving.models import ModelNotFoundError


def encode_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


class EmbeddingService:
    def __init__(self, client: EmbeddingClient | None):
        self.client = client

    async def _embed(
        self,
        inputs: list[str] | list[list[int]],
        model: str | None,
        dimensions: int | None = None,
        truncate: bool = False,
    ) -> EmbeddingResult:
        if self.client is None:
            raise ModelNotFoundError(model)
        try:
            return await self.client.embed(inputs, model, dimensions=dimensions, truncate=truncate)
        except KeyError as exc:
            raise ModelNotFoundError(model) from exc

    async def create(self, request: EmbeddingRequest) -> EmbeddingResponse:
        result = await self._embed(
            request.input_items(), request.model, request.dimensions, request.truncate
        )
        data = [
            EmbeddingData(
                embedding=encode_base64(v) if request.encoding_format == "base64" else v,
                index=i,
            )
            for i, v in enumerate(result.vectors)
        ]
        usage = EmbeddingUsage(prompt_tokens=result.num_tokens, total_tokens=result.num_tokens)
        return EmbeddingResponse(data=data, model=result.model, usage=usage)

    async def create_legacy(self, request: LegacyEmbeddingRequest) -> LegacyEmbeddingResponse:
        result = await self._embed(request.texts(), request.model)
        return LegacyEmbeddingResponse(data=result.vectors, model=result.model)
