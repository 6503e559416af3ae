"""The non-CPU kernel paths' first-use checks, exercised with the CPU's own tensors.

CUDA and MPS are not on the test machine; what runs here is the logic that decides, per
layer, between a device's weight-only kernel and the dequantized fallback.
"""

from __future__ import annotations

import torch
from torch import nn

from glm_api.config import Quantize
from glm_api.quant import Int4Linear, Int8Linear, quantize_linear
from tests.quant.models import inputs, relative_error

CPU = torch.device("cpu")


def test_int8_weight_only_kernel_is_checked_then_used() -> None:
    torch.manual_seed(0)
    layer = Int8Linear.from_linear(nn.Linear(256, 96, bias=False), CPU)
    x = inputs(num_rows=3)
    with torch.no_grad():
        got = layer._forward_device(x)  # aten._weight_int8pack_mm exists on the CPU too
        expected = layer._forward_dequantized(x)
    assert layer._has_device_kernel is True
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
    layer.to(CPU)  # a move decides again on the next forward
    assert layer._has_device_kernel is None


def test_int4_kernel_check_rejects_a_wrong_layout() -> None:
    torch.manual_seed(0)
    layer = quantize_linear(nn.Linear(256, 128, bias=False), Quantize.INT4, CPU)
    assert isinstance(layer, Int4Linear)
    scale, zero, group = layer._scale_zero()
    packed = torch._convert_weight_to_int4pack_for_cpu(layer._codes(), 1)
    scale_zero = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()
    right = (packed, scale_zero.to(torch.bfloat16), group)
    assert layer._kernel_agrees(right)
    swapped = (packed, scale_zero.flip(-1).to(torch.bfloat16), group)  # zero read as scale
    assert not layer._kernel_agrees(swapped)
    x = inputs(num_rows=2)
    with torch.no_grad():
        reference = nn.functional.linear(x, layer._dequantized(torch.float32))
        assert relative_error(layer(x), reference) <= 0.01  # the CPU kernel, packed now
    assert layer._packed is not None and not layer._no_kernel
