"""RMSNorm, rotary, SwiGLU, INT8 row (de)scaling and argmax in one C pass each (cpu_ops.c).

In PyTorch these are 6 (RMSNorm), 10 (rotary, for q and k) and 3 (SwiGLU) kernels, each
with its own dispatch and a full pass over memory; `F.silu` on the gate half of the fused
gate/up output also takes a strided path (470 us for 16 rows of 2816 on the EPYC we measure
on). Together they were 30 ms of a 16-row decode step of the 24-layer benchmark model.

Every function here returns None where the kernel cannot take its inputs (no library, not
float32 on the CPU, a width that is not a multiple of 8, a non-contiguous row); the caller
then runs its PyTorch code, which computes the same function (tested within float32
rounding; the rotary embedding is bit-identical).
"""

from __future__ import annotations

import torch

from glm_api.models import cpu_kernels


def _plain(*tensors: torch.Tensor) -> bool:
    """All contiguous float32 on the CPU, and none tracked by autograd: what the kernels take.

    The kernels read and write through raw pointers, so never under autograd.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return all(
        t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor | None:
    """RMSNorm over the last dim of a contiguous `(..., dim)`; None: use PyTorch."""
    library = cpu_kernels.load()
    dim = x.shape[-1]
    if library is None or dim % 8 or not _plain(x, weight):
        return None
    out = torch.empty_like(x)
    library.glm_rms_norm_f32(
        x.data_ptr(), weight.data_ptr(), eps, x.numel() // dim, dim, out.data_ptr()
    )
    return out


def add_rms_norm(
    hidden: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(hidden + delta, RMSNorm(hidden + delta)) in one pass; None: use PyTorch."""
    library = cpu_kernels.load()
    dim = hidden.shape[-1]
    if library is None or dim % 8 or delta.shape != hidden.shape:
        return None
    if not _plain(hidden, delta, weight):
        return None
    total, out = torch.empty_like(hidden), torch.empty_like(hidden)
    library.glm_add_rms_norm_f32(
        hidden.data_ptr(),
        delta.data_ptr(),
        weight.data_ptr(),
        eps,
        hidden.numel() // dim,
        dim,
        total.data_ptr(),
        out.data_ptr(),
    )
    return total, out


def rotate_interleaved_(
    rows: torch.Tensor, num_heads: int, head_dim: int, cos: torch.Tensor, sin: torch.Tensor
) -> bool:
    """Rotate, in place, the first `num_heads` heads of every row of `rows` `(tokens, width)`.

    As layers.py's rotate_interleaved on `rows[:, :num_heads * head_dim]` viewed as heads;
    cos/sin `(tokens, rotary_dim // 2)`. False (nothing done): use PyTorch.
    """
    library = cpu_kernels.load()
    if library is None or rows.dim() != 2 or 2 * cos.shape[-1] > head_dim:
        return False
    if num_heads * head_dim > rows.shape[1]:
        return False
    if cos.shape != (rows.shape[0], cos.shape[-1]) or sin.shape != cos.shape:
        return False  # one cos/sin row per token (PyTorch's code would broadcast others)
    if not _plain(rows, cos, sin):
        return False
    library.glm_rotary_interleaved_f32(
        rows.data_ptr(),
        rows.shape[0],
        rows.stride(0),
        num_heads,
        head_dim,
        cos.shape[-1],
        cos.data_ptr(),
        sin.data_ptr(),
    )
    return True


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor | None:
    """`(..., 2 * inner)` -> `silu(gate) * up` `(..., inner)`; None: use PyTorch."""
    library = cpu_kernels.load()
    inner = gate_up.shape[-1] // 2
    if library is None or gate_up.shape[-1] % 16 or not _plain(gate_up):  # inner: 8k
        return None
    out = torch.empty(*gate_up.shape[:-1], inner, dtype=torch.float32)
    library.glm_silu_mul_f32(
        gate_up.data_ptr(), gate_up.numel() // (2 * inner), inner, out.data_ptr()
    )
    return out


def quantize_rows(
    x: torch.Tensor, levels: float, min_scale: float
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`(M, K)` float32 -> codes `(M + 1, K)` (row 0: the pin row of int8.py), scales `(M, 1)`.

    The same bits as int8.py's `quantize_rows_int8` behind its pin row; None: use PyTorch.
    """
    library = cpu_kernels.load()
    if library is None or x.dim() != 2 or x.shape[1] == 0 or not _plain(x):
        return None
    codes = torch.empty(x.shape[0] + 1, x.shape[1], dtype=torch.float32)
    scales = torch.empty(x.shape[0], 1, dtype=torch.float32)
    library.glm_quantize_rows_f32(
        x.data_ptr(), x.shape[0], x.shape[1], levels, min_scale, codes.data_ptr(),
        scales.data_ptr(),
    )  # fmt: skip
    return codes, scales


def scale_rows(
    acc: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor | None:
    """`acc[1:] * scales (+ bias)` for `acc` `(M + 1, N)` float32; None: use PyTorch."""
    library = cpu_kernels.load()
    if library is None or not _plain(acc, scales, *([] if bias is None else [bias])):
        return None
    out = torch.empty(acc.shape[0] - 1, acc.shape[1], dtype=torch.float32)
    library.glm_scale_rows_f32(
        acc.data_ptr(), out.shape[0], acc.shape[1], scales.data_ptr(),
        bias.data_ptr() if bias is not None else None, out.data_ptr(),
    )  # fmt: skip
    return out


def argmax_rows(x: torch.Tensor) -> torch.Tensor | None:
    """`(rows, dim)` float32 (rows may be strided) -> int64 `(rows,)`, as `x.argmax(dim=-1)`.

    torch.argmax took 2.8 ms for the 16 rows of 151,552 logits of a decode step; this takes
    a pass at memory speed. None: use PyTorch.
    """
    library = cpu_kernels.load()
    if library is None or x.dim() != 2 or x.shape[1] == 0 or x.stride(1) != 1:
        return None
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.requires_grad:
        return None
    out = torch.empty(x.shape[0], dtype=torch.long)
    library.glm_argmax_rows_f32(x.data_ptr(), x.shape[0], x.shape[1], x.stride(0), out.data_ptr())
    return out
