"""The first-use check of a device's quantized kernel: it must agree with the dequantized weight.

CPU kernels are tested; device kernels (CUDA, MPS) cannot be, on the machines we develop on,
so each layer runs its kernel once on a few random rows and keeps it only if the result is
within 2% of the float matmul with the dequantized weight. Used by int8.py and int4.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_NUM_PROBE_ROWS = 4
_MAX_RELATIVE_ERROR = 0.02


def kernel_agrees(
    kernel: Callable[[torch.Tensor], torch.Tensor],
    reference: Callable[[torch.Tensor], torch.Tensor],
    num_in: int,
    device: torch.device,
    dtype: torch.dtype,
) -> bool:
    """Whether `kernel(probe)` is close to `reference(probe)` on seeded rows `(4, num_in)`.

    `kernel` gets the probe in `dtype`, `reference` in float32; a kernel that raises (none
    for this device or dtype) does not agree.
    """
    generator = torch.Generator(device=device).manual_seed(0)
    probe = torch.randn(_NUM_PROBE_ROWS, num_in, generator=generator, device=device).to(dtype)
    try:
        got = kernel(probe).float()
    except (RuntimeError, NotImplementedError):
        return False
    expected = reference(probe.float())
    return bool((got - expected).norm() <= _MAX_RELATIVE_ERROR * expected.norm())
