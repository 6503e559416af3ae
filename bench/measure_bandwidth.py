"""Measure this machine's memory bandwidth, the bound on single-stream decode speed.

    python bench/measure_bandwidth.py [--gb 1.0] [--repeats 5] [--threads N] [--json]
                                      [--read-only]

Decoding one sequence reads every weight once per token, so tokens/s <= bandwidth / weight
bytes. Two numbers, best of --repeats each: `read` (a float32 sum over a --gb array: what a
matrix-vector product does) and `copy` (read + write of the same array, counted as 2x bytes).
Uses torch with all cores unless --threads is given. Prints GB/s (1e9 bytes per second).
--read-only: only those two, as one JSON object (run_all.sh measures them around each run).
Also `matmul_gflops`: a float32 (16 x 1024) @ (1024 x 5632) product through torch, the shape
of a decode step at 16 sequences; `sgemm_gflops`: a 2048^3 float32 product through torch
(MKL or oneDNN at their best shape; our kernel runs at twice that on the Zen 5 EPYC); and,
where our CPU kernel builds (glm_api/models/cpu_gemm.c),
`kernel_gflops_16` / `kernel_gflops_128`: its rate on 16 and 128 rows against an 8 MB weight
that stays in cache (L3), i.e. the arithmetic alone: the compute bound on batched decode and on
prefill as GLM API runs them; `int8_kernel_gops_16` / `_128`: the same for our INT8 kernel
(cpu_gemm_int8.c), the bound on `--quantize int8`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

os.environ.setdefault("GOMP_SPINCOUNT", "3000000")  # before torch: as `glm-api` runs (cli.py)

import torch  # noqa: E402


def best_seconds(fn: object, repeats: int) -> float:
    assert callable(fn)
    fn()  # warm-up: page faults and thread start-up are not bandwidth
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_memory(num_bytes: int, repeats: int) -> dict[str, float]:
    num_floats = num_bytes // 4
    src = torch.ones(num_floats, dtype=torch.float32)  # (num_floats,)
    dst = torch.empty_like(src)
    read_s = best_seconds(lambda: src.sum(), repeats)
    copy_s = best_seconds(lambda: dst.copy_(src), repeats)
    return {
        "array_gb": num_floats * 4 / 1e9,
        "read_gb_s": num_floats * 4 / read_s / 1e9,
        "copy_gb_s": 2 * num_floats * 4 / copy_s / 1e9,
        "threads": float(torch.get_num_threads()),
    }


def measure(num_bytes: int, repeats: int) -> dict[str, float]:
    result = measure_memory(num_bytes, repeats)
    acts = torch.randn(16, 1024)  # (batch, hidden)
    weight = torch.randn(1024, 5632)  # (hidden, 2 * ffn): GLM's gate_up projection
    num_calls = 50  # one call is ~0.1 ms: time a run of them
    matmul_s = best_seconds(lambda: [acts @ weight for _ in range(num_calls)], repeats)
    square = torch.randn(2048, 2048)
    sgemm_s = best_seconds(lambda: square @ square, repeats)
    return {
        **result,
        "matmul_gflops": num_calls * 2 * 16 * 1024 * 5632 / matmul_s / 1e9,
        "sgemm_gflops": 2 * 2048**3 / sgemm_s / 1e9,
    }


def rate(
    linear: Callable[[torch.Tensor], object], rows: int, shape: tuple[int, int], repeats: int
) -> float:
    """G(FL)OP/s of `linear` on `rows` rows of a `(num_in, num_out)` layer, ~1 M row-calls' worth."""
    num_in, num_out = shape
    x = torch.randn(rows, num_in)
    num_calls = 8192 // rows
    seconds = best_seconds(lambda: [linear(x) for _ in range(num_calls)], repeats)
    return num_calls * 2 * rows * num_in * num_out / seconds / 1e9


def kernel_rates(repeats: int) -> dict[str, float]:
    """Our float32 kernel's GFLOP/s and our INT8 kernel's GOP/s on 16 and 128 rows, weights
    in cache (8 MB of float32, 4 MB of int8); a kernel that cannot run here is left out.

    The weights have 128 and 256 panels of 16 outputs: threads take 16 panels at a time, so the
    1 MB weights measured before (16 float32 panels) kept one of the two threads idle and
    halved the float32 figures (16 rows 158 -> 404 GFLOP/s on the Zen 5 EPYC; INT8
    1113 -> 1408 GOP/s, 64 -> 256 panels)."""
    from glm_api.models import cpu_gemm, cpu_gemm_int8

    rates = {}
    library = cpu_gemm.load()
    if library is not None:
        panels = cpu_gemm.to_panels(torch.randn(2048, 1024))  # 8 MB of float32
        for rows in (16, 128):
            rates[f"kernel_gflops_{rows}"] = rate(
                lambda x: cpu_gemm.linear(library, x, panels, 2048, None), rows, (1024, 2048),
                repeats,
            )  # fmt: skip
    int8_library = cpu_gemm_int8.load()
    if int8_library is not None:
        weight = torch.randint(-127, 128, (4096, 1024), dtype=torch.int8)  # 4 MB of int8
        packed = cpu_gemm_int8.pack(weight, torch.full((4096,), 0.01))
        for rows in (16, 128):
            rates[f"int8_kernel_gops_{rows}"] = rate(
                lambda x: cpu_gemm_int8.linear(int8_library, x, packed, 4096, None),
                rows, (1024, 4096), repeats,
            )  # fmt: skip
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="array size in GB (default 1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--read-only", action="store_true", help="only read and copy (a second, between runs)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.read_only:
        result = measure_memory(int(args.gb * 1e9), args.repeats)
    else:
        result = measure(int(args.gb * 1e9), args.repeats)
        result.update(kernel_rates(args.repeats))
    if args.json or args.read_only:
        print(json.dumps(result))
        return
    print(
        f"read {result['read_gb_s']:.1f} GB/s, copy {result['copy_gb_s']:.1f} GB/s, "
        f"matmul {result['matmul_gflops']:.0f} GFLOP/s (2048^3: "
        f"{result['sgemm_gflops']:.0f}), our kernel "
        f"{result.get('kernel_gflops_16', float('nan')):.0f} (16 rows) / "
        f"{result.get('kernel_gflops_128', float('nan')):.0f} (128 rows) GFLOP/s, INT8 "
        f"{result.get('int8_kernel_gops_16', float('nan')):.0f} / "
        f"{result.get('int8_kernel_gops_128', float('nan')):.0f} GOP/s "
        f"({result['array_gb']:.2f} GB array, {int(result['threads'])} threads, "
        f"best of {args.repeats})"
    )


if __name__ == "__main__":
    main()
