"""The whole product: real app, real engine on the demo model, real embeddings, over TCP.

Driven with the official `openai` client for the OpenAI routes and plain HTTP for the
original GLM API routes.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest


@pytest.fixture(scope="module")
def client(server_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server_url + "/v1", api_key="none", max_retries=0)


def test_models_lists_chat_and_embedding_models(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list().data}
    assert {"glm-demo", "all-MiniLM-L6-v2"} <= ids


def test_chat_greedy_is_deterministic_and_counts_tokens(client: openai.OpenAI) -> None:
    kwargs = dict(
        model="glm-demo",
        messages=[{"role": "user", "content": "你好"}],
        max_tokens=12,
        temperature=0,
    )
    first = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    second = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage is not None and first.usage.completion_tokens <= 12
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert first.choices[0].finish_reason in {"stop", "length"}


def test_stream_with_usage_matches_non_stream(client: openai.OpenAI) -> None:
    kwargs = dict(
        model="glm-demo", messages=[{"role": "user", "content": "Hi"}], max_tokens=10, temperature=0
    )
    whole = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(
        client.chat.completions.create(  # type: ignore[call-overload]
            stream=True, stream_options={"include_usage": True}, **kwargs
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    usage, expected = chunks[-1].usage, whole.usage
    assert usage is not None and expected is not None
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")
    assert [getattr(usage, k) for k in counts] == [getattr(expected, k) for k in counts]
    # the same prompt right after: prefix caching reused all of it but its last id, and the
    # openai client reads that where OpenAI puts it
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == expected.prompt_tokens - 1


def test_concurrent_requests_all_finish(client: openai.OpenAI) -> None:
    def ask(i: int) -> int:
        reply = client.completions.create(
            model="glm-demo",
            prompt="x" * (i + 1),
            max_tokens=8,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        assert reply.choices[0].finish_reason == "length"
        return reply.usage.completion_tokens if reply.usage else -1

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(ask, range(8))) == [8] * 8


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    texts = ["How do I bake bread?", "a simple bread recipe", "stock market news"]
    result = client.embeddings.create(
        model="all-MiniLM-L6-v2", input=texts, encoding_format="float"
    )
    vectors = [d.embedding for d in result.data]
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert result.usage.prompt_tokens > len(texts)
    dot = [sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:]]
    assert dot[0] > dot[1]  # unit vectors: bread is closer to bread than to stocks
    packed = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # base64 on the wire
    for plain, encoded in zip(vectors, packed.data, strict=True):
        assert max(abs(a - b) for a, b in zip(plain, encoded.embedding, strict=True)) < 1e-6


def test_legacy_chat_and_stream(server_url: str) -> None:
    body = {"prompt": "你好", "history": [["a", "b"]], "max_length": 64, "temperature": 0.01}
    reply = httpx.post(server_url + "/chat", json=body, timeout=60).json()
    assert reply["object"] == "chat.completion" and reply["model"] == "glm-demo"
    assert reply["total_tokens"] == reply["prompt_tokens"] + reply["completion_tokens"] <= 64
    with httpx.stream("POST", server_url + "/chat-stream", json=body, timeout=60) as r:
        events = [
            json.loads(line[5:])
            for line in r.iter_lines()
            if line.startswith("data:") and line[5:].strip().startswith("{")
        ]
    assert events and "finish_reason" in events[-1]
    answers = [e["content"] for e in events]
    assert all(b.startswith(a) for a, b in zip(answers, answers[1:], strict=False))


def test_legacy_root_route(server_url: str) -> None:
    reply = httpx.post(server_url + "/", json={"prompt": "hi", "history": []}, timeout=60).json()
    assert reply["status"] == 200 and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", reply["time"])
    assert reply["history"] == [["hi", reply["response"]]]


def test_prompt_too_long_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="glm-demo", prompt="x" * 2000, max_tokens=4)
    assert info.value.status_code == 400


def test_metrics_show_batching(server_url: str) -> None:
    text = httpx.get(server_url + "/metrics").text
    for name in (
        "glm_api_requests_running",
        "glm_api_requests_waiting",
        "glm_api_prompt_tokens_total",
        "glm_api_generation_tokens_total",
        "glm_api_batch_size_bucket",
        "glm_api_time_to_first_token_seconds_bucket",
        "glm_api_kv_cache_usage_ratio",
    ):
        assert name in text


def test_legacy_embedding_and_tokenize_shapes(server_url: str) -> None:
    texts = {"prompt": ["How do I bake bread?", "stock market news"]}
    reply = httpx.post(server_url + "/embedding", json=texts, timeout=60).json()
    assert set(reply) == {"data", "model", "object"}
    assert (reply["model"], reply["object"]) == ("all-MiniLM-L6-v2", "embedding")
    assert [len(v) for v in reply["data"]] == [384, 384]
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-4 for v in reply["data"])  # normalised
    body = {"prompt": "hello", "max_length": 3}
    tokens = httpx.post(server_url + "/tokenize", json=body, timeout=60).json()
    assert set(tokens) == {"tokenIds", "tokens", "model", "object"}
    assert len(tokens["tokenIds"]) == 3 and tokens["object"] == "tokenizer"


def test_embedding_burst_beside_a_chat_stream(client: openai.OpenAI) -> None:
    def stream() -> int:
        chunks = client.chat.completions.create(
            model="glm-demo",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        usage = [c.usage for c in chunks if c.usage is not None]
        return usage[-1].completion_tokens

    def embed(i: int) -> int:
        inputs = [f"sentence {i} {j}" for j in range(4)]
        return len(client.embeddings.create(model="all-MiniLM-L6-v2", input=inputs).data)

    with ThreadPoolExecutor(max_workers=9) as pool:
        chat = pool.submit(stream)
        assert list(pool.map(embed, range(8))) == [4] * 8
        assert chat.result(timeout=120) == 24
