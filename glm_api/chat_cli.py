"""`glm-api chat`: ChatGLM's cli_demo, streaming, against a local model or a running server.

`clear` empties the history, `stop` exits. The answer is printed as it is generated. The
local backend drives the same AsyncEngine the server uses; the remote one streams
`/v1/chat/completions` from `--url`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx

WELCOME = "欢迎使用 GLM API 对话，输入内容即可进行对话，clear 清空对话历史，stop 终止程序"


class ChatBackend(Protocol):
    name: str

    def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]: ...

    async def close(self) -> None: ...


class RemoteBackend:
    """Streams from an OpenAI-compatible server."""

    def __init__(self, url: str, model: str | None, api_key: str | None, params: dict) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=600)
        self.name = model or ""
        self._params = params

    async def _model_name(self) -> str:
        if not self.name:
            r = await self._client.get("/v1/models")
            r.raise_for_status()
            self.name = r.json()["data"][0]["id"]
        return self.name

    async def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        body = {"model": await self._model_name(), "messages": messages, "stream": True}
        body.update(self._params)
        async with self._client.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                detail = json.loads(await r.aread()).get("error", {}).get("message", "")
                raise RuntimeError(f"server answered {r.status_code}: {detail}")
            async for line in r.aiter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                if "error" in chunk:
                    raise RuntimeError(chunk["error"].get("message", "stream error"))
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text

    async def close(self) -> None:
        await self._client.aclose()


class LocalBackend:
    """Runs the model in this process with the server's engine."""

    def __init__(self, args: argparse.Namespace, params: dict) -> None:
        from glm_api.config import EngineConfig
        from glm_api.server import load_engine

        config = EngineConfig(model=args.model, threads=args.threads, max_num_seqs=1)
        self._engine, self.name = load_engine(config)
        self._params = params

    async def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        from glm_api.engine.request import SamplingParams
        from glm_api.formats.base import ChatMessage

        fmt = self._engine.format
        prompt = fmt.chat_prompt(
            [ChatMessage(role=m["role"], content=m["content"]) for m in messages]
        )
        params = SamplingParams(
            temperature=self._params.get("temperature"), max_tokens=self._params["max_tokens"]
        )
        async for out in self._engine.generate(prompt, params, uuid.uuid4().hex):
            if out.new_text:
                yield out.new_text

    async def close(self) -> None:
        await asyncio.to_thread(self._engine.shutdown)


async def _read_line(prompt: str) -> str | None:
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, input, prompt)
    except EOFError:
        return None


async def chat_loop(backend: ChatBackend) -> int:
    print(WELCOME, flush=True)
    messages: list[dict[str, str]] = []
    while True:
        query = await _read_line("\n用户：")
        if query is None or query.strip() == "stop":
            return 0
        if query.strip() == "clear":
            messages.clear()
            print(WELCOME, flush=True)
            continue
        if not query.strip():
            continue
        messages.append({"role": "user", "content": query})
        print(f"\n{backend.name or 'GLM'}：", end="", flush=True)
        answer = []
        try:
            async for delta in backend.stream(messages):
                answer.append(delta)
                print(delta, end="", flush=True)
        except (RuntimeError, httpx.HTTPError) as exc:
            messages.pop()
            print(f"\n[error] {exc}", file=sys.stderr, flush=True)
            continue
        print(flush=True)
        messages.append({"role": "assistant", "content": "".join(answer)})


async def _run(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"max_tokens": args.max_tokens}
    if args.temperature is not None:
        params["temperature"] = args.temperature
    backend: ChatBackend
    if args.url:
        backend = RemoteBackend(args.url, args.served_model_name, args.api_key, params)
    else:
        backend = LocalBackend(args, params)
    try:
        return await chat_loop(backend)
    finally:
        await backend.close()


def run_chat(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))
