"""`Int8Linear`: int8 weights with one scale per output channel, int8 activations per row.

State dict (the same as THUDM's 8-bit layout, so one class loads both): `weight` int8
`(out, in)`, `weight_scale` `(out,)` with `w = weight * weight_scale[:, None]`, optional `bias`.

Batch invariance: each row of the input is quantized with its own scale to exact integers in
[-63, 63]; the integer products are summed in int32, which is exact in any order, so a row's
output never depends on the other rows. On a CPU where our kernels build, the whole linear is
one call to glm_api/models/cpu_gemm_int8.c (quantize, exact sums, rescale: fbgemm's bits,
faster; the plain weight is replaced by its panels at the first forward). Otherwise the sums
run in PyTorch's fbgemm dynamic linear with `reduce_range` (7-bit activations): on CPUs
without VNNI (AVX2, AVX-512 before VNNI)
fbgemm adds pairs of u8 x s8 products in int16, which saturates for 8-bit activations (measured
on an AVX2 EPYC: errors of 20% of the output) and never for 7-bit ones (2 x 127 x 127 < 2^15).
fbgemm computes its activation scale over the whole tensor, so one constant row (64 and -63s)
is put in front of every call to pin that scale to exactly 1 and the zero point to 63; the
integer rows then pass through unchanged. Without fbgemm, `torch._int_mm` does the same sums
(exact too, but 15-50x slower than fbgemm on the CPU, measured). Other devices run PyTorch's
weight-only kernel `aten._weight_int8pack_mm` (float activations, int8 weight, per-channel
scales) where the device has it and it agrees with the dequantized weight on its first use
(probe.py); else the weight is dequantized per call and a float matmul runs (a memory saving
only).
Around the fbgemm call, the rows are quantized (pin row in front) and scaled back in one C
pass each where our CPU kernels run (glm_api/models/cpu_ops.py): the same bits as the PyTorch
code here, which stays the fallback.

The weight is packed (our panels, else fbgemm's) on the first CPU forward and the plain int8
copy is then freed; `state_dict()` unpacks it again. Not here: choosing layers (swap.py),
files (checkpoint.py).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from glm_api.models import cpu_gemm, cpu_gemm_int8, cpu_ops
from glm_api.quant.probe import kernel_agrees

_MIN_SCALE = 1e-12
_ACT_LEVELS = 63  # activation codes in [-63, 63]: 7 bits, safe from fbgemm's int16 saturation


def row_blocks(linear: nn.Linear) -> list[slice]:
    """Blocks of the layer's output rows, about 16 MiB of float32 each (cpu_gemm.blocks):
    quantizing is per output row, so blocks give the same codes with temporaries this small
    instead of several copies of the layer."""
    return cpu_gemm.blocks(linear.out_features, 4 * linear.in_features)


def _has_fbgemm() -> bool:
    ops = torch.ops.quantized
    return hasattr(ops, "linear_dynamic") and hasattr(ops, "linear_prepack")


def quantize_rows_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(M, K)` float -> integer-valued float32 `(M, K)` in [-63, 63], scales `(M, 1)`."""
    x = x.float()
    scale = x.abs().amax(dim=1, keepdim=True).clamp(min=_MIN_SCALE) / _ACT_LEVELS
    return torch.round(x / scale), scale


class Int8Linear(nn.Module):
    """A `nn.Linear` whose weight is int8 per output channel (see the module docstring)."""

    weight: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self, in_features: int, out_features: int, bias: bool, device: torch.device | None = None
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer(
            "weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("weight_scale", torch.ones(out_features, device=device))
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)
        self._packed: Any = None  # fbgemm LinearPackedParams once packed (CPU only)
        #: our kernel's (panels, column sums, scales) once packed, in place of fbgemm's
        self._panels: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._pin: torch.Tensor | None = None  # (1, in): fixes fbgemm's activation scale to 1
        self._has_device_kernel: bool | None = None  # non-CPU: decided on the first forward

    @classmethod
    def from_linear(cls, linear: nn.Linear, device: torch.device) -> Int8Linear:
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, device)
        for rows in row_blocks(linear):
            weight = linear.weight.detach()[rows].to(device=device, dtype=torch.float32)
            # (rows,); floored where fbgemm's packing floors it too: every path sees one scale
            scale = (weight.abs().amax(dim=1) / 127.0).clamp(min=_MIN_SCALE)
            module.weight[rows] = torch.round(weight / scale[:, None]).clamp(-127, 127)
            module.weight_scale[rows] = scale
        if linear.bias is not None and module.bias is not None:
            module.bias.copy_(linear.bias.detach())
        return module

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"

    def storage_bytes(self) -> int:
        """Bytes this layer holds: the int8 weight (plain or packed), scales and bias."""
        small = self.weight_scale.nbytes + (self.bias.nbytes if self.bias is not None else 0)
        return small + self.in_features * self.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # (M, in)
        if x.device.type != "cpu":
            out = self._add_bias(self._forward_device(rows))
        elif _has_fbgemm() or cpu_gemm_int8.load() is not None:
            out = self._forward_cpu(rows)  # adds the bias with the rescale
        else:
            out = self._add_bias(self._forward_int_mm(rows))
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def _add_bias(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def _forward_dequantized(self, rows: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(rows.dtype) * self.weight_scale[:, None].to(rows.dtype)
        return F.linear(rows, weight)  # (M, out)

    def _forward_device(self, rows: torch.Tensor) -> torch.Tensor:
        if self._has_device_kernel is None:
            self._has_device_kernel = self._device_kernel_agrees(rows.dtype)
        if self._has_device_kernel:
            scale = self.weight_scale.to(rows.dtype)
            return torch.ops.aten._weight_int8pack_mm(rows, self.weight, scale)  # (M, out)
        return self._forward_dequantized(rows)

    def _device_kernel_agrees(self, dtype: torch.dtype) -> bool:
        """Whether the device runs `_weight_int8pack_mm`, and gives the dequantized result."""
        if not hasattr(torch.ops.aten, "_weight_int8pack_mm"):
            return False
        scale = self.weight_scale.to(dtype)
        return kernel_agrees(
            lambda probe: torch.ops.aten._weight_int8pack_mm(probe, self.weight, scale),
            self._forward_dequantized,
            self.in_features,
            self.weight.device,
            dtype,
        )

    def _forward_cpu(self, rows: torch.Tensor) -> torch.Tensor:
        if self._packed is None and self._panels is None:
            self._pack()
        library = cpu_gemm_int8.load()
        if self._panels is not None and library is not None:
            rows = rows.float()
            return cpu_gemm_int8.linear(library, rows, self._panels, self.out_features, self.bias)
        assert self._pin is not None
        # the pin row, then each row's codes: one C pass where our kernels run (same bits)
        fused = cpu_ops.quantize_rows(rows, float(_ACT_LEVELS), _MIN_SCALE)
        if fused is not None:
            pinned, scale = fused
        else:
            codes, scale = quantize_rows_int8(rows)
            pinned = torch.cat([self._pin, codes])
        acc = torch.ops.quantized.linear_dynamic(pinned, self._packed, True)  # reduce_range
        out = cpu_ops.scale_rows(acc, scale, self.bias)
        return out if out is not None else self._add_bias(acc[1:] * scale)  # (M, out)

    def _forward_int_mm(self, rows: torch.Tensor) -> torch.Tensor:
        codes, scale = quantize_rows_int8(rows)
        acc = torch._int_mm(codes.to(torch.int8), self.weight.t())  # (M, out) int32, exact
        return acc.float() * scale * self.weight_scale.float()

    def _pack(self) -> None:
        if cpu_gemm_int8.load() is not None:  # ours: the same bits, faster (cpu_gemm_int8.py)
            # the floor fbgemm's packing applies below, so both paths scale alike
            scale = self.weight_scale.float().clamp(min=_MIN_SCALE)
            self._panels = cpu_gemm_int8.pack(self.weight, scale)
            self.weight = torch.empty(0, dtype=torch.int8)
            return
        num_out = self.out_features
        with warnings.catch_warnings():  # the quantized-tensor API warns it is deprecated
            warnings.simplefilter("ignore")
            qweight = torch._make_per_channel_quantized_tensor(
                self.weight,
                self.weight_scale.double().clamp(min=_MIN_SCALE),
                torch.zeros(num_out, dtype=torch.long),
                0,
            )
            self._packed = torch.ops.quantized.linear_prepack(qweight, None)
        pin = torch.full((1, self.in_features), -float(_ACT_LEVELS))
        pin[0, 0] = _ACT_LEVELS + 1.0  # min -63, max 64: scale 127 / 127 = 1, zero point 63
        self._pin = pin
        self.weight = torch.empty(0, dtype=torch.int8)  # the packed copy replaces it

    def int8_panels(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """cpu_gemm_int8's (panels, column sums, scales), packed now if not yet; None where
        our kernel does not run (models/cpu_decoder.py then leaves this model to Python)."""
        if self.weight_scale.device.type != "cpu" or cpu_gemm_int8.load() is None:
            return None
        if self._panels is None and self._packed is None:
            self._pack()
        return self._panels

    def _unpacked_weight(self) -> torch.Tensor:
        if self._panels is not None:
            return cpu_gemm_int8.unpack(self._panels[0], self.out_features, self.in_features)
        if self._packed is None:
            return self.weight
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qweight, _ = torch.ops.quantized.linear_unpack(self._packed)
            return qweight.int_repr().clone()  # (out, in) int8

    def _unpack(self) -> None:
        if self._packed is not None or self._panels is not None:
            self.weight = self._unpacked_weight()
            self._packed, self._panels = None, None
            self._pin = None

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = self._unpacked_weight()

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        self._packed, self._pin, self._panels = None, None, None
        if self.weight.numel() == 0:  # packed before: restore the shape load checks against
            self.weight = torch.zeros(self.out_features, self.in_features, dtype=torch.int8)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        self._unpack()  # moving or casting works on the plain int8 weight
        self._has_device_kernel = None
        return super()._apply(fn, recurse)
