"""A whole decode step of glm.py's decoder in one C call (cpu_decoder.c), float32 on the CPU.

glm.py's Python code calls our kernels (cpu_gemm, cpu_attention, cpu_ops) about 40 times a
layer, and each call pays its Python: module calls, shape checks, views, new tensors. On the
2-core EPYC we measure on that was 10-15 ms of a 24-layer decode step, as much at 1 row as at
16: 15-20% of a single stream's time per token. The C loop calls the same kernels in the same
order on the same values, so its outputs are the Python path's to the bit (tested), and a
request's ids do not depend on which path a step took.

It runs a step when every row of it decodes (one new token per sequence) and the model is
what the kernels take: float32 activations, a float32, float16 or bfloat16 KV cache, linears
that are float32 `PackedLinear`s or INT8 `Int8Linear`s on our kernels (cpu_gemm.c,
cpu_gemm_int8.c), RMSNorm weights on the CPU, widths the kernels support. Everything else
(prefill chunks, other dtypes, INT4, autograd) keeps glm.py's Python path. The plan (a C
array of the layers' weight pointers) is made once per model and holds its tensors, so the
pointers stay valid while it lives; an inference model's weights do not change after loading.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch

from glm_api.models import cpu_attention, cpu_kernels
from glm_api.models.packed import PackedLinear

if TYPE_CHECKING:
    from glm_api.models.attention import AttentionBatch, LayerCache
    from glm_api.models.glm import GLMBlock, GLMForCausalLM

_P, _I64, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
#: the C struct's fields -> where glm.py's GLMBlock holds them
_LINEAR_MODULES = {
    "qkv": ("self_attention", "query_key_value"),
    "dense": ("self_attention", "dense"),
    "gate_up": ("mlp", "dense_h_to_4h"),
    "down": ("mlp", "dense_4h_to_h"),
}
_NORM_MODULES = {
    "input_norm": "input_layernorm",
    "post_self_attn_norm": "post_self_attn_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_mlp_norm": "post_mlp_layernorm",
}


class _Linear(ctypes.Structure):  # cpu_decoder.c's glm_linear
    _fields_ = [(name, _P) for name in ("panels", "col_sums", "scales", "bias")]


class _Layer(ctypes.Structure):  # cpu_decoder.c's glm_layer
    _fields_ = [
        *((name, _Linear) for name in _LINEAR_MODULES),
        *((name, _P) for name in _NORM_MODULES),
    ]


class _Decoder(ctypes.Structure):  # cpu_decoder.c's glm_decoder
    _fields_ = [
        *((name, _I64) for name in ("num_layers", "hidden", "num_heads", "num_kv_heads")),
        *((name, _I64) for name in ("head_dim", "intermediate", "rotary_half")),
        ("eps", _F32),
        ("scale", _F32),
        ("layers", ctypes.POINTER(_Layer)),
        ("final_norm", _P),
    ]


@dataclass(slots=True)
class DecoderPlan:
    """The C view of one model's decoder; `tensors` keeps every pointed-to tensor alive."""

    decoder: _Decoder
    layers: ctypes.Array[_Layer]
    tensors: list[torch.Tensor]
    #: floats of scratch per row: normed, delta, spare (hidden each), qkv, attention, 3x ffn
    work_per_row: int


def _ptr(tensor: torch.Tensor | None, tensors: list[torch.Tensor]) -> int | None:
    if tensor is None:
        return None
    tensors.append(tensor)
    return tensor.data_ptr()


def _usable(tensor: torch.Tensor | None) -> bool:
    return tensor is None or (
        tensor.device.type == "cpu" and tensor.dtype == torch.float32 and tensor.is_contiguous()
    )


def _linear(
    module: torch.nn.Module, shape: tuple[int, int], tensors: list[torch.Tensor]
) -> _Linear | None:
    """The C view of a float32 `PackedLinear` on our kernel, or of a linear whose
    `int8_panels()` gives cpu_gemm_int8's (panels, column sums, scales): quant's Int8Linear."""
    if (getattr(module, "in_features", None), getattr(module, "out_features", None)) != shape:
        return None
    int8_panels = getattr(module, "int8_panels", None)
    parts: tuple[torch.Tensor | None, ...]
    if isinstance(module, PackedLinear) and module.uses_cpu_gemm:
        panels, parts = module.packed_weight, (None, None)
    elif callable(int8_panels) and (packed := int8_panels()) is not None:
        panels, parts = packed[0], packed[1:]
    else:
        return None
    bias = getattr(module, "bias", None)
    if not all(
        t is None or (t.device.type == "cpu" and t.is_contiguous()) for t in (panels, *parts)
    ):
        return None
    if not _usable(bias):
        return None
    return _Linear(*(_ptr(t, tensors) for t in (panels, *parts, bias)))


def make_plan(model: GLMForCausalLM) -> DecoderPlan | None:
    """The plan, or None where a layer is not what the kernels take (Python path then)."""
    config = model.config
    rotary_half = model.rotary_dim // 2
    if cpu_kernels.load() is None or config.head_dim % 8 or config.hidden_size % 8:
        return None
    if config.intermediate_size % 8 or 2 * rotary_half > config.head_dim:
        return None
    if config.num_layers < 1 or config.num_attention_heads % config.num_kv_heads:
        return None  # the Python path refuses such heads with an error; C would skip some
    hidden, inner = config.hidden_size, config.intermediate_size
    q_width, kv_width = (
        config.num_attention_heads * config.head_dim,
        config.num_kv_heads * config.head_dim,
    )
    shapes = {"qkv": (hidden, q_width + 2 * kv_width), "dense": (q_width, hidden),
              "gate_up": (hidden, 2 * inner), "down": (inner, hidden)}  # fmt: skip
    layers = [cast("GLMBlock", layer) for layer in model.decoder_layers()]
    tensors: list[torch.Tensor] = []
    array = (_Layer * len(layers))()
    for entry, layer in zip(array, layers, strict=True):
        for name, (part, attribute) in _LINEAR_MODULES.items():
            view = _linear(getattr(getattr(layer, part), attribute), shapes[name], tensors)
            if view is None:
                return None
            setattr(entry, name, view)
        norms = {name: getattr(layer, attribute) for name, attribute in _NORM_MODULES.items()}
        for name, norm in norms.items():
            weight = None if norm is None else norm.weight.detach()
            if not _usable(weight) or (weight is not None and weight.numel() != hidden):
                return None
            setattr(entry, name, _ptr(weight, tensors))
    final_norm = model.transformer.encoder.final_layernorm.weight.detach()
    if not _usable(final_norm) or final_norm.numel() != hidden:
        return None
    decoder = _Decoder(
        num_layers=len(layers),
        hidden=hidden,
        num_heads=config.num_attention_heads,
        num_kv_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        intermediate=inner,
        rotary_half=rotary_half,
        eps=config.layernorm_epsilon,
        scale=config.head_dim**-0.5,
        layers=array,
        final_norm=_ptr(final_norm, tensors),
    )
    work = 3 * hidden + q_width + 2 * kv_width + q_width + 3 * inner
    return DecoderPlan(decoder, array, tensors, work)


def decode_step(
    plan: DecoderPlan,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    batch: AttentionBatch,
    caches: list[LayerCache],
    num_prefix: int,
) -> torch.Tensor | None:
    """The final-normed hidden states `(M, hidden)` of an all-decode step; None: not one.

    hidden `(M, hidden)` (the embeddings, overwritten), cos/sin `(M, rotary_half)`.
    """
    num_rows = hidden.shape[0]
    if num_rows == 0 or hidden.dim() != 2 or hidden.shape[1] != plan.decoder.hidden:
        return None
    if torch.is_grad_enabled() or len(caches) != plan.decoder.num_layers:
        return None  # the kernels write through raw pointers: never under autograd
    if batch.num_seqs != num_rows or any(n != 1 for n in batch.query_lens):
        return None
    rows = batch.decode_rows(num_prefix)
    if len(rows.seqs) != num_rows or not all(_usable(t) for t in (hidden, cos, sin)):
        return None
    if cos.shape != (num_rows, plan.decoder.rotary_half) or sin.shape != cos.shape:
        return None
    shape = caches[0].keys.shape  # (num_slots, num_kv_heads, cache_len, head_dim)
    expected = (plan.decoder.num_kv_heads, plan.decoder.head_dim)
    if shape[1] != expected[0] or shape[3] != expected[1]:
        return None
    kv_dtype = caches[0].keys.dtype  # float32, or 16 bits (--kv-cache-dtype)
    if kv_dtype not in cpu_attention.CACHE_KINDS:
        return None
    for cache in caches:
        if cache.keys.shape != shape or cache.values.shape != shape:
            return None
        for tensor in (cache.keys, cache.values):
            if tensor.device.type != "cpu" or tensor.dtype != kv_dtype:
                return None
            if not tensor.is_contiguous():
                return None
    if rows.max_slot >= shape[0] or rows.max_length >= shape[2]:
        raise IndexError(
            f"decode step: slot {rows.max_slot} / position {rows.max_length} outside a "
            f"cache of {shape[0]} slots x {shape[2]} rows"
        )
    key_caches = (_P * len(caches))(*(cache.keys.data_ptr() for cache in caches))
    value_caches = (_P * len(caches))(*(cache.values.data_ptr() for cache in caches))
    work = torch.empty(num_rows * plan.work_per_row, dtype=torch.float32)
    library = cpu_kernels.load()
    assert library is not None, "a plan exists only where the kernels loaded"
    undone = library.glm_decode_step_f32(
        ctypes.byref(plan.decoder), hidden.data_ptr(), num_rows, cos.data_ptr(), sin.data_ptr(),
        rows.slots.data_ptr(), rows.lengths.data_ptr(), key_caches, value_caches, shape[2],
        rows.rows.data_ptr(), work.data_ptr(), torch.get_num_threads(),
        cpu_attention.CACHE_KINDS[kv_dtype],
    )  # fmt: skip
    if undone < 0:
        raise MemoryError(f"decode step: no memory for the INT8 codes of {num_rows} rows")
    if undone:
        raise MemoryError(f"decode step: no scratch memory for {undone} attention heads")
    return hidden
