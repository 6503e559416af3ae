"""Engine throughput without HTTP: N concurrent requests straight into `AsyncEngine`.

    python -m bench.engine_throughput                     # the built-in demo model
    python -m bench.engine_throughput --model /path/to/chatglm3-6b --num-requests 16 \
        --prompt-len 128 --max-tokens 64 --threads 2

Prints one table: output tokens/s, total tokens/s, mean batch size, TTFT (time to first
token, measured at the client) and the per-request decode rate. ignore_eos is set, so every
request generates exactly --max-tokens ids and runs are comparable (greedy by default).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time

os.environ.setdefault("GOMP_SPINCOUNT", "3000000")  # before torch: as `glm-api` runs (cli.py)

from glm_api.config import DType, EngineConfig, Quantize  # noqa: E402
from glm_api.engine.async_engine import AsyncEngine  # noqa: E402
from glm_api.engine.request import SamplingParams  # noqa: E402
from glm_api.models.loader import load_model  # noqa: E402

WORDS = "the quick brown fox jumps over a lazy dog while GLM answers every question".split()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint folder or hub id (default: demo)")
    parser.add_argument("--num-requests", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=64, help="prompt ids per request")
    parser.add_argument("--max-tokens", type=int, default=64, help="generated ids per request")
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--max-num-batched-tokens", type=int, default=256)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", choices=[d.value for d in DType], default="auto")
    parser.add_argument("--quantize", choices=[q.value for q in Quantize], default="none")
    parser.add_argument("--batch-invariant", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument(
        "--no-gc-freeze", action="store_true", help="leave the loaded objects to gc"
    )
    return parser.parse_args()


def make_prompt(engine: AsyncEngine, index: int, length: int) -> list[int]:
    """Different text per request, cut or padded to exactly `length` ids."""
    words = [WORDS[(index + i) % len(WORDS)] for i in range(length)]
    ids = engine.format.encode(f"request {index}: " + " ".join(words))
    while len(ids) < length:
        ids = ids + ids
    return ids[:length]


async def one_request(
    engine: AsyncEngine, prompt: list[int], params: SamplingParams, request_id: str
) -> tuple[float, float, int]:
    """(seconds to first token, seconds in all, generated ids)."""
    start = time.perf_counter()
    first = 0.0
    num_generated = 0
    async for output in engine.generate(prompt, params, request_id):
        if not first and output.new_token_ids:
            first = time.perf_counter() - start
        num_generated = output.num_generated_tokens
    return first, time.perf_counter() - start, num_generated


async def run(args: argparse.Namespace) -> None:
    config = EngineConfig(
        model=args.model,
        dtype=DType(args.dtype),
        quantize=Quantize(args.quantize),
        batch_invariant=args.batch_invariant,
        threads=args.threads,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_queue_len=max(256, args.num_requests),
    )
    loaded = load_model(args.model, config)
    engine = AsyncEngine.from_loaded(loaded, config)
    params = SamplingParams(
        temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, ignore_eos=True
    )
    prompts = [make_prompt(engine, i, args.prompt_len) for i in range(args.num_requests)]
    async with engine:
        await one_request(
            engine, prompts[0][:8], SamplingParams(temperature=0, max_tokens=2), "warm"
        )
        engine.stats()  # drain the warm-up
        if not args.no_gc_freeze:  # as the server does once its model is loaded (server.py)
            gc.collect()
            gc.freeze()
        start = time.perf_counter()
        jobs = [one_request(engine, p, params, f"bench-{i}") for i, p in enumerate(prompts)]
        results = await asyncio.gather(*jobs)
        elapsed = time.perf_counter() - start
        stats = engine.stats()
    print_table(args, loaded.name, engine, results, elapsed, stats.batch_sizes)


def print_table(
    args: argparse.Namespace,
    name: str,
    engine: AsyncEngine,
    results: list[tuple[float, float, int]],
    elapsed: float,
    batch_sizes: list[int],
) -> None:
    num_out = sum(n for _, _, n in results)
    num_in = args.num_requests * args.prompt_len
    ttfts = [first for first, _, _ in results]
    decode_rates = [
        (n - 1) / (total - first) for first, total, n in results if n > 1 and total > first
    ]
    rows = [
        ("model", name),
        (
            "requests x prompt + output",
            f"{args.num_requests} x {args.prompt_len} + {args.max_tokens}",
        ),
        ("slots / max_num_batched_tokens", f"{engine.num_slots} / {args.max_num_batched_tokens}"),
        ("wall time (s)", f"{elapsed:.2f}"),
        ("output tokens/s", f"{num_out / elapsed:.1f}"),
        ("total tokens/s (prompt + output)", f"{(num_in + num_out) / elapsed:.1f}"),
        ("steps", f"{len(batch_sizes)}"),
        ("mean batch size (requests/step)", f"{statistics.fmean(batch_sizes):.2f}"),
        (
            "TTFT mean / p50 / max (s)",
            f"{statistics.fmean(ttfts):.3f} / {statistics.median(ttfts):.3f} / {max(ttfts):.3f}",
        ),
        (
            "decode tokens/s per request (mean)",
            f"{statistics.fmean(decode_rates):.1f}" if decode_rates else "-",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    asyncio.run(run(parse_args()))
