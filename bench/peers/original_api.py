"""Peer server: GLM API as the original served, one request at a time through `generate`.

    python bench/peers/original_api.py --model CKPT_HF_DIR --port 8101

What the seed project did, reduced to the OpenAI streaming route the benchmark uses: a
FastAPI app whose /v1/chat/completions renders the chat template, runs transformers
`model.generate` in a thread with a `TextIteratorStreamer`, and forwards each text piece as
an SSE chunk. One lock around the whole generation, as the original (one model, one
`generate` at a time), so concurrent clients queue. Runs in its own venv (bench/.venvs/
original-api: torch, transformers, fastapi, uvicorn); imports nothing from glm_api.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import iterate_in_threadpool
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer


class ChatMessage(BaseModel):
    role: str
    content: str = ""


class ChatCompletionRequest(BaseModel):
    model: str = ""
    messages: list[ChatMessage]
    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.8
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    # extras the benchmark sends; the original had no such fields, honoured here so every
    # server does the same work per request
    ignore_eos: bool = False
    min_tokens: int = 0


class Generation:
    """One model; `generate` runs in a worker thread and feeds a streamer."""

    def __init__(self, path: str) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.lock = asyncio.Lock()

    def start(self, req: ChatCompletionRequest) -> tuple[TextIteratorStreamer, dict[str, Any]]:
        messages = [m.model_dump() for m in req.messages]
        encoded: Any = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        prompt_ids: list[int] = list(encoded["input_ids"])
        input_ids = torch.tensor([prompt_ids])  # (1, num_prompt_ids)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": req.max_tokens,
            "streamer": streamer,
            "do_sample": req.temperature > 0,
        }
        if req.temperature > 0:
            kwargs.update(temperature=req.temperature, top_p=req.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if req.ignore_eos:
            kwargs["min_new_tokens"] = req.max_tokens
        elif req.min_tokens:
            kwargs["min_new_tokens"] = req.min_tokens
        result: dict[str, Any] = {"num_prompt_ids": len(prompt_ids)}

        def run() -> None:
            with torch.inference_mode():
                output = self.model.generate(**kwargs)  # (1, num_prompt_ids + num_new)
            result["num_output_ids"] = output.shape[1] - len(prompt_ids)

        result["thread"] = threading.Thread(target=run, daemon=True)
        result["thread"].start()
        return streamer, result


def chunk(request_id: str, model: str, delta: dict[str, Any], finish: str | None) -> str:
    body = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def usage(result: dict[str, Any]) -> dict[str, int]:
    num_prompt, num_output = result["num_prompt_ids"], result.get("num_output_ids", 0)
    return {
        "prompt_tokens": num_prompt,
        "completion_tokens": num_output,
        "total_tokens": num_prompt + num_output,
    }


async def stream_reply(
    gen: Generation, req: ChatCompletionRequest, model: str
) -> AsyncIterator[str]:
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    async with gen.lock:
        streamer, result = gen.start(req)
        yield chunk(request_id, model, {"role": "assistant", "content": ""}, None)
        async for text in iterate_in_threadpool(streamer):
            if text:
                yield chunk(request_id, model, {"content": text}, None)
        await asyncio.to_thread(result["thread"].join)
    finish = "length" if result.get("num_output_ids", 0) >= req.max_tokens else "stop"
    yield chunk(request_id, model, {}, finish)
    if req.stream_options and req.stream_options.get("include_usage"):
        body = {"id": request_id, "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "choices": [], "usage": usage(result)}  # fmt: skip
        yield f"data: {json.dumps(body)}\n\n"
    yield "data: [DONE]\n\n"


def build_app(gen: Generation, served_name: str) -> FastAPI:
    app = FastAPI(title="original GLM API (benchmark peer)")

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served_name, "object": "model"}]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(req: ChatCompletionRequest) -> StreamingResponse | JSONResponse:
        if req.stream:
            return StreamingResponse(
                stream_reply(gen, req, served_name), media_type="text/event-stream"
            )
        async with gen.lock:
            streamer, result = gen.start(req)
            text = "".join([piece async for piece in iterate_in_threadpool(streamer)])
            await asyncio.to_thread(result["thread"].join)
        message = {"role": "assistant", "content": text}
        body = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": served_name,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage(result),
        }
        return JSONResponse(body)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint folder in the -hf layout")
    parser.add_argument("--served-model-name", default="glm-4")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    args = parser.parse_args()
    gen = Generation(args.model)
    uvicorn.run(build_app(gen, args.served_model_name), host=args.host, port=args.port,
                log_level="warning")  # fmt: skip


if __name__ == "__main__":
    main()
