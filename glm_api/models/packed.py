"""Float32 linears on the CPU with each weight reordered once at load: our kernel or oneDNN.

PyTorch's float32 `F.linear` on the CPU calls MKL's sgemm, which is slow for the few rows of
a decode step and gives a row different bits for different row counts. So every float32
`nn.Linear` is swapped at load for a `PackedLinear`, which holds its weight in a kernel's
layout and runs

- our kernel (cpu_gemm.c, built on first use where the CPU has AVX2/FMA and a C compiler is
  found): the fastest at every row count we measured (see cpu_gemm.py), and a row's bits are
  the same for any number of rows, including one;
- else oneDNN over a weight in its own format. oneDNN runs one kernel for a single row and
  another for two or more, and with two or more rows a row's result is bit-identical
  whatever the other rows are (measured up to 512 rows). So with `pad_single_row` a single
  row is computed as two, which costs single-stream speed (2.2x on the linears of the 0.6B
  model on an AVX2 EPYC); it is only done where a row can have neighbours.

Quantized layers (glm_api/quant) and other devices do not come here.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from glm_api.models import cpu_gemm
from glm_api.models.greedy_screen import MAX_ROWS, GreedyScreen


def can_pack(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available()


class PackedLinear(nn.Module):
    """`nn.Linear` whose weight lives in a kernel's layout; its state dict stays the plain one."""

    def __init__(self, linear: nn.Linear, pad_single_row: bool = True) -> None:
        super().__init__()
        self.pad_single_row = pad_single_row
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        weight = linear.weight.detach()
        self.uses_cpu_gemm = cpu_gemm.load() is not None
        # ours: (ceil(out / 16), in, 16) panels; oneDNN: (out, in) in its own format.
        # Not parameters (never trained), not persistent (the state dict is the plain weight).
        self.packed_weight: torch.Tensor
        packed = cpu_gemm.to_panels(weight) if self.uses_cpu_gemm else weight.to_mkldnn()
        self.register_buffer("packed_weight", packed, persistent=False)
        self.bias = linear.bias
        self.greedy_screen: GreedyScreen | None = None  # add_greedy_screen: output layers

    def add_greedy_screen(self) -> bool:
        """Keep an INT8 copy that finds greedy rows' argmax exactly (greedy_screen.py), for an
        output layer on our kernel without a bias; False where it cannot be used."""
        if not self.uses_cpu_gemm or self.bias is not None:
            return False
        if not GreedyScreen.usable(self.packed_weight):
            return False
        if self.greedy_screen is None:
            screen = GreedyScreen(self.packed_weight)
            for name, tensor in screen.tensors().items():  # counted with the weights, not saved
                self.register_buffer(f"screen_{name}", tensor, persistent=False)
            self.greedy_screen = screen
        return True

    def greedy_argmax(self, x: torch.Tensor, limit: int) -> list[int | None] | None:
        """Each row's argmax of its first `limit` outputs (None: compute that row's logits),
        or None where the screen does not serve these rows."""
        screen, library = self.greedy_screen, cpu_gemm.load()
        rows = x.reshape(-1, self.in_features)
        if screen is None or not screen.enabled or library is None:
            return None
        if rows.shape[0] == 0 or rows.dtype != torch.float32:
            return None
        limit = min(limit, self.out_features)
        found: list[int | None] = []
        for start in range(0, rows.shape[0], MAX_ROWS):  # rows at a time: the scratch's size
            group = rows[start : start + MAX_ROWS]
            found += screen.argmax(library, group, self.packed_weight, limit)
        return found

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # (num_rows, in_features)
        library = cpu_gemm.load() if self.uses_cpu_gemm else None
        if library is not None:
            out = cpu_gemm.linear(library, rows, self.packed_weight, self.out_features, self.bias)
            return out.reshape(*x.shape[:-1], self.out_features)
        num_rows = rows.shape[0]
        if num_rows == 1 and self.pad_single_row:  # the bits a row gets among others
            rows = torch.cat([rows, rows])
        out = torch.ops.mkldnn._linear_pointwise(
            rows.contiguous(), self.packed_weight, self.bias, "none", [], ""
        )  # (num_rows, out_features)
        return out[:num_rows].reshape(*x.shape[:-1], self.out_features)

    def plain_weight(self) -> torch.Tensor:
        """The `(out, in)` float32 weight, as the checkpoint held it."""
        if self.uses_cpu_gemm:
            return cpu_gemm.from_panels(self.packed_weight, self.out_features)
        return self.packed_weight.to_dense()

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.plain_weight()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def extra_repr(self) -> str:
        kernel = "cpu_gemm" if self.uses_cpu_gemm else "oneDNN"
        return f"in_features={self.in_features}, out_features={self.out_features}, {kernel}"


def greedy_ids(layer: nn.Module, hidden: torch.Tensor, limit: int) -> list[int | None] | None:
    """An output layer's greedy argmax per row of `hidden` where its screen serves them."""
    return layer.greedy_argmax(hidden, limit) if isinstance(layer, PackedLinear) else None


def add_greedy_screen(layer: nn.Module) -> bool:
    """Give a float32 output layer its greedy screen (PackedLinear.add_greedy_screen)."""
    if os.environ.get("GLM_API_GREEDY_SCREEN", "1") == "0":
        return False
    return isinstance(layer, PackedLinear) and layer.add_greedy_screen()


def pack_linears_(model: nn.Module, pad_single_row: bool = True) -> int:
    """Swap every float32 `nn.Linear` of `model` for a `PackedLinear`, one at a time.

    A Linear sharing its weight with an embedding (tied output layer) stays as it is: packing
    would keep a second copy. Returns how many layers were packed.
    """
    shared = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    # names, not modules: a list of modules would keep every float weight alive until the
    # end, so loading would peak at the float copies plus all the packed ones
    names = [
        name
        for name, module in model.named_modules()
        if type(module) is nn.Linear
        and module.weight.dtype == torch.float32
        and id(module.weight) not in shared
    ]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        packed = PackedLinear(getattr(parent, child), pad_single_row)
        setattr(parent, child, packed)  # the float weight is freed here
    return len(names)
