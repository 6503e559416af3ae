"""`glm-api`: serve | chat | tokenize | quantize | bench.

Parses flags, builds config objects and calls the library; no logic of its own beyond
printing. Heavy modules (torch) are imported inside the commands, after the OpenMP wait
policy is set. OpenMP threads that spin for long after a parallel region steal a core from
the HTTP thread on a 2-core machine (measured 3.3x slower decode under contention), while
threads that sleep at once (OMP_WAIT_POLICY=PASSIVE) pay a wake-up on each of the hundreds
of small parallel regions of a decode step (measured: per-sequence attention of 16 sequences
0.46 ms per layer with brief spinning, 1.28 ms passive). A short spin is the middle ground.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from glm_api.config import Device, DType, KVCacheDType, Quantize


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the HTTP server (default model: the demo model)")
    p.add_argument("--model", help="checkpoint folder or hub id (default: built-in demo model)")
    p.add_argument("--served-model-name")
    p.add_argument("--host", help="default 127.0.0.1")
    p.add_argument("--port", type=int, help="default 8000")
    p.add_argument("--device", choices=[d.value for d in Device])
    p.add_argument("--dtype", choices=[d.value for d in DType])
    p.add_argument("--quantize", choices=[q.value for q in Quantize])
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--max-num-seqs", type=int, help="requests decoded together (default 16)")
    p.add_argument("--max-model-len", type=int, help="context length (default: checkpoint's)")
    p.add_argument("--max-num-batched-tokens", type=int, help="tokens per step (default 256)")
    p.add_argument("--max-queue-len", type=int, help="waiting requests before 503 (default 256)")
    p.add_argument("--kv-cache-memory-gb", type=float, help="KV cache budget in GiB")
    p.add_argument(
        "--kv-cache-dtype",
        choices=[d.value for d in KVCacheDType],
        help="what the KV cache holds (default auto: the model's dtype); float16 halves its "
        "memory and the attention's reads, rounding each key and value to float16",
    )
    p.add_argument(
        "--batch-invariant",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a request's output never depends on its batch neighbours (default on; off: "
        "faster single stream where oneDNN serves float32)",
    )
    p.add_argument(
        "--prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="reuse the cached keys/values of a prompt prefix a finished request left in its "
        "slot (default on; the reply is the same, only its prefill shorter)",
    )
    p.add_argument("--prefix-checkpoint", help="P-tuning v2 prefix_encoder weights")
    p.add_argument(
        "--embedding-model",
        action="append",
        help="[NAME=]PATH_OR_ID, repeatable; first is the default (default: all-MiniLM-L6-v2)",
    )
    p.add_argument("--api-key", action="append", help="repeatable; @FILE reads one key a line")
    p.add_argument("--allowed-origins", action="append", help="CORS origins, repeatable")
    p.add_argument("--log-level")


def _flags_to_settings(args: argparse.Namespace) -> Any:
    from glm_api.config import ServerSettings

    given = {k: v for k, v in vars(args).items() if v is not None and k != "command"}
    return ServerSettings(**given)


def cmd_serve(args: argparse.Namespace) -> int:
    from glm_api.server import serve

    serve(_flags_to_settings(args))
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    from glm_api.formats import load_format

    fmt = load_format(args.model)
    if args.chat is not None:
        from glm_api.formats.base import ChatMessage

        messages = [
            ChatMessage(role=m["role"], content=m.get("content", "")) for m in json.loads(args.chat)
        ]
        print(json.dumps({"ids": fmt.chat_prompt(messages)}, ensure_ascii=False))
        return 0
    if args.text is None:
        print("glm-api tokenize: give TEXT or --chat MESSAGES_JSON", file=sys.stderr)
        return 2
    ids = fmt.encode(args.text)
    print(json.dumps({"ids": ids, "tokens": fmt.encode_pieces(args.text)}, ensure_ascii=False))
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from glm_api.quant import quantize_checkpoint

    quantize_checkpoint(args.model, args.output, Quantize(args.quantize))
    print(f"wrote {args.quantize} checkpoint to {args.output}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from glm_api.chat_cli import run_chat

    return run_chat(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from glm_api.bench import format_table, reports_to_json, run_bench

    levels = [int(x) for x in args.concurrency.split(",") if x]
    reports = run_bench(
        args.url,
        args.model,
        levels,
        args.requests,
        args.prompt_tokens,
        args.max_tokens,
        args.max_seconds,
        extras=not args.no_extras,
        api_key=args.api_key,
        seed=args.seed,
    )
    print(reports_to_json(reports) if args.json else format_table(reports))
    return 1 if any(r.num_errors for r in reports) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glm-api", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)

    chat = sub.add_parser("chat", help="interactive terminal chat (local model or --url)")
    chat.add_argument("--model", help="checkpoint folder or hub id (default: demo model)")
    chat.add_argument("--url", help="a running GLM API / OpenAI-compatible server")
    chat.add_argument("--api-key")
    chat.add_argument("--served-model-name", help="model name to ask the server for")
    chat.add_argument("--max-tokens", type=int, default=512)
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--threads", type=int)

    tok = sub.add_parser("tokenize", help="print token ids and pieces as JSON")
    tok.add_argument("--model", required=True, help="folder with config.json + tokenizer files")
    tok.add_argument("--chat", metavar="MESSAGES_JSON", help="print the chat prompt ids")
    tok.add_argument("text", nargs="?")

    quant = sub.add_parser("quantize", help="write a pre-quantized checkpoint")
    quant.add_argument("--model", required=True)
    quant.add_argument("--quantize", required=True, choices=["int8", "int4"])
    quant.add_argument("--output", required=True)

    bench = sub.add_parser("bench", help="load-test a running server (loopback only)")
    bench.add_argument("--url", default="http://127.0.0.1:8000")
    bench.add_argument("--model", required=True)
    bench.add_argument("--concurrency", default="1,4,16")
    bench.add_argument("--prompt-tokens", type=int, default=128)
    bench.add_argument("--max-tokens", type=int, default=128)
    bench.add_argument("--requests", type=int, help="per level (default: 2x the level)")
    bench.add_argument("--max-seconds", type=float, default=600.0, help="cap per level")
    bench.add_argument("--no-extras", action="store_true", help="don't send ignore_eos/min_tokens")
    bench.add_argument("--api-key")
    bench.add_argument(
        "--seed", type=int, default=0, help="picks the prompts: give each run on a server its own"
    )
    bench.add_argument("--json", action="store_true")
    return parser


COMMANDS = {
    "serve": cmd_serve,
    "chat": cmd_chat,
    "tokenize": cmd_tokenize,
    "quantize": cmd_quantize,
    "bench": cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    # before torch loads OpenMP: workers spin a few ms between a step's parallel regions, then
    # sleep (a 0.6B decode step on 2 cores: 81 ms at 3M spins, 102 ms at 10k: every op of a
    # step then pays a futex wake-up; measured through the server, bench/run_all.sh)
    os.environ.setdefault("GOMP_SPINCOUNT", "3000000")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line for anything the user can fix
        if not _is_user_error(exc):
            raise
        print(f"glm-api {args.command}: {exc}", file=sys.stderr)
        return 1


def _is_user_error(exc: Exception) -> bool:
    """A bad path, a bad file, an unloadable model: say it in one line, no stack trace."""
    from glm_api.engine.errors import EngineError
    from glm_api.models.errors import ModelLoadError

    return isinstance(exc, (ModelLoadError, EngineError, ValueError, OSError, json.JSONDecodeError))


if __name__ == "__main__":
    sys.exit(main())
