"""`glm-api bench`: a bounded load generator for any OpenAI-compatible chat server.

It streams chat completions at several concurrency levels and reports, per level, the
aggregate output tokens per second, time to first token, inter-token latency and request
latency. It only talks to loopback addresses and stops at a request cap and a time cap.

It does not start servers (bench/ scripts do) and does not know which server it measures.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlparse

import httpx

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
# Common English words: with the GLM-4 tokenizer (and most BPE vocabularies) each
# space-prefixed word is one token, so N words make a prompt of about N tokens.
WORDS = (
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea"
).split()


@dataclass(slots=True)
class RequestResult:
    ok: bool
    num_output_tokens: int = 0
    num_prompt_tokens: int = 0
    ttft: float = 0.0
    latency: float = 0.0
    gaps: list[float] = field(default_factory=list)
    error: str = ""


@dataclass(slots=True)
class LevelReport:
    concurrency: int
    num_requests: int
    num_errors: int
    duration_s: float
    output_tokens_per_s: float
    mean_prompt_tokens: float
    ttft_p50: float
    ttft_p90: float
    itl_p50: float
    itl_p90: float
    latency_p50: float
    latency_p90: float
    first_error: str = ""


def check_loopback(url: str) -> None:
    """Refuse to send load anywhere but this machine."""
    host = urlparse(url).hostname or ""
    if host not in LOOPBACK_HOSTS and not host.startswith("127."):
        raise ValueError(f"bench only targets loopback addresses, not {host!r}")


def make_prompt(num_tokens: int, seed: int, index: int = 0) -> str:
    """Request `index`'s prompt in a run seeded `seed`: random words, another text for every
    (seed, index), so that no prompt reaches a server twice (a server with a prefix cache,
    as vLLM's, would skip its prefill) as long as each run on a server has its own seed."""
    rng = random.Random(f"glm-api-bench:{seed}:{index}")
    return " ".join(rng.choice(WORDS) for _ in range(max(1, num_tokens)))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def one_request(
    client: httpx.AsyncClient, url: str, body: dict, deadline: float
) -> RequestResult:
    start = time.perf_counter()
    last = start
    result = RequestResult(ok=False)
    num_chunks = 0
    try:
        async with client.stream("POST", url, json=body, timeout=max(1.0, deadline - start)) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")
                result.error = f"HTTP {r.status_code}: {text[:200]}"
                return result
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    result.error = str(chunk["error"])[:200]
                    return result
                usage = chunk.get("usage")
                if usage:
                    result.num_output_tokens = usage.get("completion_tokens", 0)
                    result.num_prompt_tokens = usage.get("prompt_tokens", 0)
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        now = time.perf_counter()
                        if num_chunks == 0:
                            result.ttft = now - start
                        else:
                            result.gaps.append(now - last)
                        last = now
                        num_chunks += 1
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
        return result
    result.latency = time.perf_counter() - start
    result.num_output_tokens = result.num_output_tokens or num_chunks
    result.ok = True
    return result


async def run_level(
    url: str,
    model: str,
    concurrency: int,
    num_requests: int,
    prompt_tokens: int,
    max_tokens: int,
    max_seconds: float,
    extras: bool,
    api_key: str | None,
    seed: int = 0,
    first_prompt: int = 0,
) -> LevelReport:
    endpoint = url.rstrip("/") + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    start = time.perf_counter()
    deadline = start + max_seconds
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(num_requests):
        queue.put_nowait(i)
    results: list[RequestResult] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body: dict = {
                "model": model,
                "messages": [
                    {"role": "user", "content": make_prompt(prompt_tokens, seed, first_prompt + i)}
                ],
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            if extras:  # make every request produce exactly max_tokens
                body.update(ignore_eos=True, min_tokens=max_tokens)
            results.append(await one_request(client, endpoint, body, deadline))

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(headers=headers, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    duration = time.perf_counter() - start
    return summarize(concurrency, results, duration)


def summarize(concurrency: int, results: list[RequestResult], duration: float) -> LevelReport:
    ok = [r for r in results if r.ok]
    errors = [r for r in results if not r.ok]
    gaps = [g for r in ok for g in r.gaps]
    prompt_counts = [r.num_prompt_tokens for r in ok if r.num_prompt_tokens]
    return LevelReport(
        concurrency=concurrency,
        num_requests=len(results),
        num_errors=len(errors),
        duration_s=duration,
        output_tokens_per_s=sum(r.num_output_tokens for r in ok) / max(duration, 1e-9),
        mean_prompt_tokens=statistics.fmean(prompt_counts) if prompt_counts else float("nan"),
        ttft_p50=percentile([r.ttft for r in ok], 0.5),
        ttft_p90=percentile([r.ttft for r in ok], 0.9),
        itl_p50=percentile(gaps, 0.5),
        itl_p90=percentile(gaps, 0.9),
        latency_p50=percentile([r.latency for r in ok], 0.5),
        latency_p90=percentile([r.latency for r in ok], 0.9),
        first_error=errors[0].error if errors else "",
    )


def format_table(reports: list[LevelReport]) -> str:
    head = (
        "| concurrency | requests | errors | output tok/s | prompt tok | TTFT p50 s | TTFT p90 s "
        "| ITL p50 ms | ITL p90 ms | latency p50 s | latency p90 s |"
    )
    rows = [head, "|" + "---|" * 11]
    for r in reports:
        rows.append(
            f"| {r.concurrency} | {r.num_requests} | {r.num_errors} | {r.output_tokens_per_s:.1f} "
            f"| {r.mean_prompt_tokens:.0f} | {r.ttft_p50:.2f} | {r.ttft_p90:.2f} "
            f"| {r.itl_p50 * 1000:.0f} | {r.itl_p90 * 1000:.0f} "
            f"| {r.latency_p50:.2f} | {r.latency_p90:.2f} |"
        )
    return "\n".join(rows)


def run_bench(
    url: str,
    model: str,
    concurrency_levels: list[int],
    num_requests: int | None,
    prompt_tokens: int,
    max_tokens: int,
    max_seconds: float,
    extras: bool = True,
    api_key: str | None = None,
    seed: int = 0,
) -> list[LevelReport]:
    """Run every level one after another; each level sends `num_requests` (default: 2x level)
    prompts of its own (no prompt is sent twice in a run)."""
    check_loopback(url)
    reports = []
    first_prompt = 0
    for level in concurrency_levels:
        count = num_requests if num_requests is not None else 2 * level
        report = asyncio.run(
            run_level(
                url, model, level, count, prompt_tokens, max_tokens, max_seconds, extras,
                api_key, seed, first_prompt,
            )
        )  # fmt: skip
        reports.append(report)
        first_prompt += count
    return reports


def reports_to_json(reports: list[LevelReport]) -> str:
    return json.dumps([asdict(r) for r in reports], indent=2)
