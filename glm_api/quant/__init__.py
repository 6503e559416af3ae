"""Weight quantization: swap `nn.Linear` layers for INT8 / INT4 ones; write quantized files.

API used by the loader and the CLI: `quantize_linears_` (runtime, per decoder layer),
`prepare_for_checkpoint_` (before loading THUDM's or our pre-quantized files),
`quantize_checkpoint` (`glm-api quantize`), `weight_bytes` (start-up report).

Kernels, chosen by measurement on the 2-core AVX-512 (VNNI, BF16) CPU of the development
machine, torch 2.13, ms per call of one layer (median of 30, other jobs running):

| layer (in -> out)    | M  | float32 | fbgemm per-tensor | ours INT8 | INT4 g32 (bf16) |
|----------------------|----|---------|-------------------|-----------|-----------------|
| 1024 -> 5632         | 1  | 0.46    | 0.05              | 0.06      | 0.12            |
| 1024 -> 5632         | 8  | 1.52    | 0.07              | 0.11      | 0.31            |
| 2816 -> 1024         | 8  | 0.49    | 0.05              | 0.08      | -               |
| 1024 -> 151552 (lm)  | 1  | 29      | 2.9               | 3.6       | -               |

INT8 must be batch invariant, and fbgemm's dynamic linear picks one activation scale for the
whole batch, so a row's result changed with its neighbours (measured: up to 0.09 absolute).
Ours quantizes each row itself to exact integers and pins fbgemm's scale to 1 with one constant
extra row (int8.py): identical bits whatever the batch, 1.2-1.7x the per-tensor call, still
3-14x faster than float32. Other batch-invariant options measured at M=8 on 1024 -> 5632:
per-row `torch._int_mm` 0.34 ms (kept as the fallback when fbgemm is missing),
`_weight_int8pack_mm` 0.35 ms with bfloat16 activations and 15.7 ms with float32, one
fbgemm call per row 0.42 ms. INT4 runs `_weight_int4pack_mm_for_cpu` (float32 activations:
4 ms, so bfloat16); group 128 is 30% faster than 32 at M=1 but its error is 10% instead of 8%
per random-gaussian layer, so the default group is 32. On CPUs without VNNI (AVX2) fbgemm
sums u8 x s8 pairs in int16, which saturates for 8-bit activations, so activations are 7-bit
(int8.py). CUDA runs PyTorch's tinygemm INT4 kernel and `_weight_int8pack_mm` where the
device has them, each checked once against the dequantized weight; else the weight is
dequantized per call (not measured: no GPU on the development machines).

Whole-model decode (bench/quant_decode.py: GLM-4 shapes, 0.58B parameters, 2 threads on
the AVX2 (Zen 3) EPYC of an earlier docs/benchmarks.md; "+ out" also quantizes the 151552 x
1024 output layer, which is a third of the weights; float32 is as served, through cpu_gemm.c):

| weights    | MiB  | batch 1 tok/s | batch 8 tok/s |
|------------|------|---------------|---------------|
| float32    | 2216 | 11.8          | 58.8          |
| int8       | 1443 | 15.3          | 40.6          |
| int8 + out | 1000 | 20.2          | 103.0         |
| int4       | 1346 | 13.4          | 34.4          |
| int4 + out | 846  | 18.3          | 45.0          |

`--quantize int8|int4` quantizes the output layer to INT8 too (the "+ out" rows); the
embedding table stays float (one row is read per token).
"""

from __future__ import annotations

from glm_api.quant.checkpoint import quantize_checkpoint
from glm_api.quant.int4 import Int4Linear, ThudmInt4Linear
from glm_api.quant.int8 import Int8Linear
from glm_api.quant.swap import (
    DEFAULT_GROUP_SIZE,
    is_prequantized,
    prepare_for_checkpoint_,
    quantize_linear,
    quantize_linears_,
    weight_bytes,
)

__all__ = [
    "DEFAULT_GROUP_SIZE",
    "Int4Linear",
    "Int8Linear",
    "ThudmInt4Linear",
    "is_prequantized",
    "prepare_for_checkpoint_",
    "quantize_checkpoint",
    "quantize_linear",
    "quantize_linears_",
    "weight_bytes",
]
