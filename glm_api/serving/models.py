"""Which models this server serves, and the 404 for any other name.

One chat model (the engine's) and any number of embedding models (the EmbeddingClient's).
"""

from __future__ import annotations

from glm_api.embeddings.base import EmbeddingClient
from glm_api.engine.errors import EngineError
from glm_api.engine.protocol import EngineClient
from glm_api.protocol.legacy import LegacyModelEntry, LegacyModelList
from glm_api.protocol.openai_misc import ModelCard, ModelList


class ModelNotFoundError(EngineError):
    """OpenAI answers an unknown model with 404 and code `model_not_found`."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str | None, param: str = "model"):
        super().__init__(f"The model `{model}` does not exist.")
        self.param = param


class ServedModels:
    """The names a request may ask for, and the listings of /v1/models and /models."""

    def __init__(
        self, model_name: str, engine: EngineClient | None, embeddings: EmbeddingClient | None
    ):
        self.chat_model = model_name if engine is not None else None
        self.engine = engine
        self.embeddings = embeddings

    def _max_model_len(self) -> int | None:
        """None while the engine cannot say yet (the model is still loading)."""
        try:
            return self.engine.max_model_len if self.engine is not None else None
        except EngineError:
            return None

    def check_chat(self, model: str) -> str:
        if self.chat_model is None or model != self.chat_model:
            raise ModelNotFoundError(model)
        return model

    def openai_list(self) -> ModelList:
        cards = []
        if self.chat_model is not None:
            cards.append(ModelCard(id=self.chat_model, max_model_len=self._max_model_len()))
        for info in self.embeddings.models() if self.embeddings else []:
            cards.append(
                ModelCard(id=info.name, type="embedding", max_model_len=info.max_input_tokens)
            )
        return ModelList(data=cards)

    def openai_card(self, model: str) -> ModelCard:
        for card in self.openai_list().data:
            if card.id == model:
                return card
        raise ModelNotFoundError(model)

    def legacy_list(self) -> LegacyModelList:
        entries = []
        if self.chat_model is not None:
            entries.append(
                LegacyModelEntry(id=self.chat_model, type="chat", max_length=self._max_model_len())
            )
        for info in self.embeddings.models() if self.embeddings else []:
            entries.append(
                LegacyModelEntry(
                    id=info.name,
                    type="embedding",
                    max_length=info.max_input_tokens,
                    dimension=info.dimension,
                    languages=info.languages,
                    pooling=info.pooling,
                    normalized=info.is_normalized,
                )
            )
        return LegacyModelList(data=entries)
