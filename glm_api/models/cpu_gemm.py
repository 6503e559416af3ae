"""Our float32 CPU linear kernel (cpu_gemm.c): built once with the system's C compiler.

Why a kernel of our own: on the AVX2 (Zen 3) EPYC of the earlier benchmarks, the linears of
one decode step of the 0.6B GLM-4 benchmark model took (ms, 2 threads; oneDNN over a weight
reordered once):

| rows | oneDNN | oneDNN, 1 row computed as 2 | cpu_gemm.c |
| ---: | ---: | ---: | ---: |
| 1 | 45 | 97-100 | 45 |
| 16 | 194-199 | | 127 |
| 128 | 939-990 | | 792 |

(one run, side by side). Measured again alone in a later session, in a fast phase of the
machine, whose speed drifts by about 20%: 41 ms for 1 row, 73 ms for 16 rows, 439 ms for
128, before the next-panel prefetch (cpu_gemm.c) took 15-20% more off 8 and 16 rows.

And, unlike oneDNN (one kernel for one row, another for two or more), every row's result is
bit-identical for any number of rows, so batch invariance costs a single stream nothing.

The kernel is built and loaded with the others by cpu_kernels.py.
"""

from __future__ import annotations

import ctypes

import torch

from glm_api.models import cpu_kernels, hugepages

PANEL = 16  # outputs per weight panel (cpu_gemm.c)
#: what a weight is reordered or quantized in at a time: temporaries of about 16 MiB, not
#: whole copies of the weight (GLM-4-9B's output layer is 2.5 GB in float32)
BLOCK_BYTES = 1 << 24


def blocks(count: int, item_bytes: int) -> list[slice]:
    """Slices covering `count` items (rows, panels) of `item_bytes`, about `BLOCK_BYTES` each."""
    step = max(1, BLOCK_BYTES // max(1, item_bytes))
    return [slice(start, min(start + step, count)) for start in range(0, count, step)]


def load() -> ctypes.CDLL | None:
    """The kernel library for linears, or None where it cannot run (callers keep oneDNN)."""
    return cpu_kernels.load()


def to_panels(weight: torch.Tensor) -> torch.Tensor:
    """`(N, K)` float32 -> `(ceil(N / 16), K, 16)` panels, zero-padded (the kernel's layout)."""
    num_out, num_in = weight.shape
    num_panels = -(-num_out // PANEL)
    panels = hugepages.empty((num_panels, num_in, PANEL))  # streamed every step
    for part in blocks(num_panels, PANEL * num_in * 4):
        num = part.stop - part.start
        rows = weight[part.start * PANEL : part.stop * PANEL]  # the last may lack rows: zeros
        block = torch.zeros(num * PANEL, num_in, dtype=torch.float32)
        block[: rows.shape[0]] = rows
        panels[part] = block.reshape(num, PANEL, num_in).transpose(1, 2)
    return panels


def from_panels(panels: torch.Tensor, num_out: int) -> torch.Tensor:
    """The inverse of `to_panels`: the plain `(N, K)` weight."""
    num_panels, num_in, _ = panels.shape
    return panels.transpose(1, 2).reshape(num_panels * PANEL, num_in)[:num_out].contiguous()


def linear(
    library: ctypes.CDLL,
    rows: torch.Tensor,
    panels: torch.Tensor,
    num_out: int,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """`(M, K)` float32 rows -> `(M, N)`; every row computed the same way for any M."""
    rows = rows.contiguous()  # raw pointers below: no-ops for the contiguous tensors we get
    bias = bias.contiguous() if bias is not None else None
    out = torch.empty(rows.shape[0], num_out, dtype=torch.float32)  # (M, N)
    library.glm_linear_f32(
        rows.data_ptr(),
        rows.shape[0],
        rows.shape[1],
        panels.data_ptr(),
        num_out,
        bias.data_ptr() if bias is not None else None,
        out.data_ptr(),
        torch.get_num_threads(),
    )
    return out
