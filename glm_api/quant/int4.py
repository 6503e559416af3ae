"""4-bit weight-only linear layers: ours (`Int4Linear`) and THUDM's (`ThudmInt4Linear`).

Both hold 4-bit codes two per byte and compute with float activations. On CPU they run
`aten._weight_int4pack_mm_for_cpu` (bfloat16 activations, group-wise scale and zero; one
fixed reduction order per row, so batch invariant: tested); the kernel needs
`out % 16 == 0`. On CUDA they run PyTorch's tinygemm kernel `aten._weight_int4pack_mm`
(bfloat16, the same scale-and-zero layout; it needs an Ampere or newer GPU, `out % 8 == 0`
and `in % 32 == 0`). A kernel's first use on a layer is checked against the dequantized
weight; where there is no kernel, or it fails that check, the weight is dequantized per call
and a float matmul runs. The kernel's packed copy is made on the first forward and the plain
codes are then freed; `state_dict()` recovers them exactly by multiplying the packed weight
with an identity matrix (codes 0..15 are exact in bfloat16).

`Int4Linear` state dict: `weight` uint8 `(out, in / 2)` (low nibble = even input column),
`weight_scale` and `weight_zero` bfloat16 `(out, in / group_size)`;
`w[n, k] = (code - 8) * weight_scale[n, k // g] + weight_zero[n, k // g]`, codes 0..15.
`ThudmInt4Linear` reproduces THUDM chatglm-6b-int4 / chatglm2-6b-int4 `QuantizedLinear`:
`weight` int8 `(out, in / 2)`, high nibble = even column, signed two's complement,
`weight_scale` `(out,)`, `w = code * weight_scale[:, None]`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from glm_api.quant.int8 import row_blocks
from glm_api.quant.probe import kernel_agrees

_KERNEL_GROUPS = (256, 128, 64, 32)


def _int4_mm(
    rows: torch.Tensor, packed: torch.Tensor, group: int, scale_zero: torch.Tensor
) -> torch.Tensor:
    """bfloat16 `(M, in)` x a packed int4 weight -> `(M, out)`, with the device's kernel."""
    if packed.device.type == "cpu":
        return torch.ops.aten._weight_int4pack_mm_for_cpu(rows, packed, group, scale_zero)
    return torch.ops.aten._weight_int4pack_mm(rows, packed, group, scale_zero)


class _Int4Base(nn.Module):
    """Kernel packing and the forward shared by both layouts."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: bool, device: Any) -> None:
        super().__init__()
        if in_features % 2:
            raise ValueError(f"4-bit packing needs an even in_features, got {in_features}")
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)
        self._packed: tuple[torch.Tensor, torch.Tensor, int] | None = None
        self._no_kernel = False  # a device kernel failed its first-use check: dequantize

    # The layouts supply these three.
    def _codes(self) -> torch.Tensor:
        """Unsigned codes 0..15, int32 `(out, in)`."""
        raise NotImplementedError

    def _scale_zero(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Per-group scale and zero `(out, in / g)` and g, so `w = (code - 8) * s + z`."""
        raise NotImplementedError

    def _packed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `(out, in)` -> the `weight` buffer of this layout `(out, in / 2)`."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4"

    def _dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        scale, zero, group = self._scale_zero()
        codes = self._codes().float() - 8.0  # (out, in)
        weight = codes * scale.float().repeat_interleave(group, 1)
        return (weight + zero.float().repeat_interleave(group, 1)).to(dtype)

    def _can_pack(self, device: torch.device) -> bool:
        group = self._scale_zero()[2]
        if self._no_kernel or group not in _KERNEL_GROUPS:
            return False
        if device.type == "cpu":  # torch >= 2.6
            return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and (
                self.out_features % 16 == 0
            )
        if device.type == "cuda":
            return (
                hasattr(torch.ops.aten, "_weight_int4pack_mm")
                and torch.cuda.get_device_capability(device)[0] >= 8
                and self.out_features % 8 == 0
                and self.in_features % 32 == 0
            )
        return False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # (M, in)
        if self._packed is None and self._can_pack(x.device):
            self._pack(x.device)
        if self._packed is not None:
            packed, scale_zero, group = self._packed
            out = _int4_mm(rows.to(torch.bfloat16), packed, group, scale_zero)
        else:
            out = F.linear(rows, self._dequantized(x.dtype))
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def _pack(self, device: torch.device) -> None:
        scale, zero, group = self._scale_zero()
        codes = self._codes()  # (out, in) int32
        if device.type == "cpu":
            packed = torch._convert_weight_to_int4pack_for_cpu(codes, 1)
        else:  # tinygemm takes (out, in / 2) uint8, the even column in the high nibble
            nibbles = (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8)
            inner_k_tiles = next(t for t in (8, 4, 2) if self.in_features % (16 * t) == 0)
            packed = torch._convert_weight_to_int4pack(nibbles, inner_k_tiles)
        # (in / g, out, 2): the kernels' scale-and-zero layout
        scale_zero = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()
        candidate = (packed, scale_zero.to(torch.bfloat16), group)
        if device.type != "cpu" and not self._kernel_agrees(candidate):
            self._no_kernel = True  # the CPU kernel is tested; a device kernel is checked
            return
        self._packed = candidate
        self.weight = torch.empty(0, dtype=self.weight.dtype, device=self.weight.device)

    def _kernel_agrees(self, candidate: tuple[torch.Tensor, torch.Tensor, int]) -> bool:
        """The kernel (bfloat16 activations) against the dequantized weight (probe.py)."""
        packed, scale_zero, group = candidate
        weight = self._dequantized(torch.float32)  # (out, in)
        return kernel_agrees(
            lambda probe: _int4_mm(probe, packed, group, scale_zero),
            lambda probe: F.linear(probe, weight),
            self.in_features,
            self.weight.device,
            torch.bfloat16,
        )

    def _unpacked_codes(self) -> torch.Tensor:
        """Read the codes back out of the kernel's layout: identity @ w^T with s = 1, z = 8."""
        assert self._packed is not None
        packed, scale_zero, group = self._packed
        ones = torch.stack(
            [torch.ones_like(scale_zero[..., 0]), torch.full_like(scale_zero[..., 0], 8.0)], -1
        )
        eye = torch.eye(self.in_features, dtype=torch.bfloat16, device=packed.device)
        chunks = [
            _int4_mm(eye[i : i + 256], packed, group, ones) for i in range(0, self.in_features, 256)
        ]
        return torch.cat(chunks).t().to(torch.int32)  # (out, in)

    def _unpack(self) -> None:
        if self._packed is not None:
            codes = self._unpacked_codes()
            self._packed = None
            self.weight = self._packed_codes(codes)

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._packed is not None:
            destination[prefix + "weight"] = self._packed_codes(self._unpacked_codes())

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        if self._packed is not None:  # restore the plain buffer shape load checks against
            self._packed = None
            self.weight = torch.zeros(self.out_features, self.in_features // 2).to(
                self.weight.dtype
            )
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        self._unpack()
        return super()._apply(fn, recurse)

    def storage_bytes(self) -> int:
        """Bytes this layer holds: half a byte per weight plus scales, zeros and bias."""
        small = sum(
            b.nbytes for name, b in self._buffers.items() if b is not None and name != "weight"
        )
        return small + self.out_features * self.in_features // 2


class Int4Linear(_Int4Base):
    """Group-wise asymmetric 4-bit weights (our layout, see the module docstring)."""

    weight_scale: torch.Tensor
    weight_zero: torch.Tensor

    def __init__(
        self, in_features: int, out_features: int, bias: bool, group_size: int, device: Any = None
    ) -> None:
        super().__init__(in_features, out_features, bias, device)
        if in_features % group_size:
            raise ValueError(f"in_features {in_features} is not a multiple of {group_size}")
        self.group_size = group_size
        num_groups = in_features // group_size
        self.register_buffer(
            "weight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8, device=device)
        )
        shape = (out_features, num_groups)
        self.register_buffer("weight_scale", torch.ones(shape, dtype=torch.bfloat16, device=device))
        self.register_buffer("weight_zero", torch.zeros(shape, dtype=torch.bfloat16, device=device))

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int, device: torch.device) -> Int4Linear:
        module = cls(
            linear.in_features, linear.out_features, linear.bias is not None, group_size, device
        )
        for rows in row_blocks(linear):  # small temporaries
            weight = linear.weight.detach()[rows].to(device=device, dtype=torch.float32)
            groups = weight.reshape(weight.shape[0], -1, group_size)  # (rows, in / g, g)
            low, high = groups.amin(dim=-1), groups.amax(dim=-1)
            scale = ((high - low) / 15.0).clamp(min=1e-12).to(torch.bfloat16)
            # the zero is stored in bfloat16 too, so round codes against the stored values
            zero = (low + 8.0 * scale.float()).to(torch.bfloat16)
            codes = (groups - zero.float()[..., None]) / scale.float()[..., None] + 8.0
            codes = torch.round(codes).clamp(0, 15).reshape(weight.shape)
            module.weight[rows] = module._packed_codes(codes)
            module.weight_scale[rows] = scale
            module.weight_zero[rows] = zero
        if linear.bias is not None and module.bias is not None:
            module.bias.copy_(linear.bias.detach())
        return module

    def _codes(self) -> torch.Tensor:
        packed = self.weight.to(torch.int32)
        return torch.stack([packed & 15, packed >> 4], dim=-1).reshape(self.out_features, -1)

    def _scale_zero(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.weight_scale, self.weight_zero, self.group_size

    def _packed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        pairs = codes.to(torch.int32).reshape(codes.shape[0], -1, 2)  # all rows, or a block
        return (pairs[..., 0] | (pairs[..., 1] << 4)).to(torch.uint8)


class ThudmInt4Linear(_Int4Base):
    """THUDM's 4-bit `QuantizedLinear`: symmetric, one scale per output row."""

    weight_scale: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool, device: Any = None) -> None:
        super().__init__(in_features, out_features, bias, device)
        self.register_buffer(
            "weight", torch.zeros(out_features, in_features // 2, dtype=torch.int8, device=device)
        )
        self.register_buffer("weight_scale", torch.ones(out_features, device=device))

    def _codes(self) -> torch.Tensor:
        packed = self.weight.to(torch.int32)
        high = packed >> 4  # arithmetic shift keeps the sign of the high nibble
        low = ((packed & 15) ^ 8) - 8  # sign-extend the low nibble
        signed = torch.stack([high, low], dim=-1).reshape(self.out_features, -1)
        return signed + 8

    def _scale_zero(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        group = next((g for g in _KERNEL_GROUPS if self.in_features % g == 0), self.in_features)
        scale = self.weight_scale[:, None].expand(-1, self.in_features // group)
        return scale, torch.zeros_like(scale), group

    def _packed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        pairs = (codes.to(torch.int32) - 8).reshape(self.out_features, -1, 2)
        nibbles = ((pairs[..., 0] & 15) << 4) | (pairs[..., 1] & 15)  # 0..255
        return nibbles.to(torch.uint8).view(torch.int8)
