"""serving/tokenize.py and serving/embeddings.py against the fakes."""

from __future__ import annotations

import asyncio
import base64
import struct

import pytest

from glm_api.protocol.legacy import TokenizeRequest
from glm_api.protocol.openai_misc import EmbeddingRequest
from glm_api.serving.embeddings import EmbeddingService
from glm_api.serving.models import ModelNotFoundError
from glm_api.serving.tokenize import TokenizeService
from tests.fakes import FakeEmbeddingClient, FakeEngine, ids_of


def test_tokenize_prompt_truncates_ids_with_specials_not_pieces() -> None:
    service = TokenizeService(FakeEngine(), "m")
    response = service.tokenize(TokenizeRequest(prompt="abc", max_length=3))
    assert response.tokenIds == [1, 2, ids_of("a")[0]]
    assert response.tokens == ["a", "b", "c"]
    assert response.object == "tokenizer" and response.model == "m"


def test_tokenize_messages_gives_the_chat_prompt() -> None:
    request = TokenizeRequest.model_validate({"messages": [{"role": "user", "content": "x"}]})
    response = TokenizeService(FakeEngine(), "m").tokenize(request)
    assert response.tokenIds == [1, 2, 5, *ids_of("x"), 6]
    assert response.tokens == ["[gMASK]", "sop", "<|user|>", "x", "<|assistant|>"]


def test_embeddings_float_base64_dimensions() -> None:
    client = FakeEmbeddingClient()
    service = EmbeddingService(client)
    request = EmbeddingRequest(
        input=["ab", "c"], model="fake-zh", dimensions=2, encoding_format="base64"
    )
    response = asyncio.run(service.create(request))
    assert client.calls == [(["ab", "c"], "fake-zh", 2, False)]
    decoded = struct.unpack("<2f", base64.b64decode(response.data[1].embedding))  # type: ignore[arg-type]
    assert decoded == (1.0, 1.0)
    assert response.usage.prompt_tokens == 3
    response = asyncio.run(service.create(EmbeddingRequest(input="ab", model="fake-minilm")))
    assert response.data[0].embedding == [2.0, 0.0, 0.5, -0.25]


def test_embeddings_unknown_model_is_404() -> None:
    with pytest.raises(ModelNotFoundError):
        asyncio.run(
            EmbeddingService(FakeEmbeddingClient()).create(EmbeddingRequest(input="a", model="x"))
        )
