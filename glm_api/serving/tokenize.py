"""POST /tokenize: a prompt's ids (with specials, cut at max_length) and its pieces.

With `messages` instead of `prompt` it answers the chat prompt ids /v1/chat/completions
would send, with each id's piece.
"""

from __future__ import annotations

from glm_api.engine.errors import InvalidRequestError
from glm_api.engine.protocol import EngineClient
from glm_api.protocol.legacy import TokenizeRequest, TokenizeResponse
from glm_api.serving.chat import render_chat


class TokenizeService:
    def __init__(self, engine: EngineClient, model_name: str):
        self.engine = engine
        self.model_name = model_name

    def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        fmt = self.engine.format
        if request.messages is not None:
            ids = render_chat(fmt, request.messages)
            pieces = [fmt.id_to_piece(i) for i in ids]
        elif request.prompt is not None:
            ids = fmt.encode(request.prompt, add_special_tokens=True)
            pieces = fmt.encode_pieces(request.prompt)
        else:
            raise InvalidRequestError("give either prompt or messages", param="prompt")
        if request.max_length is not None:
            ids = ids[: request.max_length]
            if request.messages is not None:
                pieces = pieces[: request.max_length]
        return TokenizeResponse(tokenIds=ids, tokens=pieces, model=self.model_name)
