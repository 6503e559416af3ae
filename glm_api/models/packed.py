"""Float32 linears on the CPU through oneDNN, with each weight reordered once at load.

PyTorch's float32 `F.linear` on the CPU calls MKL's sgemm. On the machine we measure on (AMD
EPYC, Zen 5, 2 cores, torch 2.13) oneDNN's kernels over a weight reordered once are much
faster; the linears of one decode step of the 0.6B GLM-4 benchmark model took:

| rows | MKL sgemm | oneDNN, reordered weight |
| ---: | ---: | ---: |
| 1 | 92 ms | 58 ms |
| 16 | 178 ms | 77 ms |
| 128 | 794 ms | 357 ms |

They also make batch invariance exact: oneDNN runs one kernel for a single row and another
for two or more, and with two or more rows a row's result is bit-identical whatever the other
rows are (measured up to 512 rows; MKL's sgemm gives different bits for different row counts).
So with `pad_single_row` a single row is computed as two. That costs single-stream speed (all
linears of the 0.6B model for one row: 37.5 ms with the one-row kernel, 63 ms as two rows),
so it is only done where a row can have neighbours (an engine batching several requests).

Quantized layers (glm_api/quant) and other devices do not come here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def can_pack(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available()


class PackedLinear(nn.Module):
    """`nn.Linear` whose weight lives in oneDNN's format; its state dict stays the plain one."""

    def __init__(self, linear: nn.Linear, pad_single_row: bool = True) -> None:
        super().__init__()
        self.pad_single_row = pad_single_row
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        weight = linear.weight.detach()
        # (out_features, in_features) in oneDNN's layout; not a parameter, never trained
        self.packed_weight: torch.Tensor
        self.register_buffer("packed_weight", weight.to_mkldnn(), persistent=False)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # (num_rows, in_features)
        num_rows = rows.shape[0]
        if num_rows == 1 and self.pad_single_row:  # the bits a row gets among others
            rows = torch.cat([rows, rows])
        out = torch.ops.mkldnn._linear_pointwise(
            rows.contiguous(), self.packed_weight, self.bias, "none", [], ""
        )  # (num_rows, out_features)
        return out[:num_rows].reshape(*x.shape[:-1], self.out_features)

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.packed_weight.to_dense()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN"


def pack_linears_(model: nn.Module, pad_single_row: bool = True) -> int:
    """Swap every float32 `nn.Linear` of `model` for a `PackedLinear`, one at a time.

    A Linear sharing its weight with an embedding (tied output layer) stays as it is: packing
    would keep a second copy. Returns how many layers were packed.
    """
    shared = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) is nn.Linear
        and module.weight.dtype == torch.float32
        and id(module.weight) not in shared
    ]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, PackedLinear(module, pad_single_row))  # the float copy is freed here
    return len(targets)
