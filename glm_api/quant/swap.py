"""Swapping `nn.Linear` layers for quantized ones, at runtime or before loading a checkpoint.

Which layers: every `nn.Linear` inside the module given (no size threshold: the loader
decides the scope by what it passes in, e.g. one decoder layer, or the output layer's
parent). INT8 quantizes all of them; INT4 those whose `in_features` is a multiple of the
group size, the rest get INT8. Checkpoint layouts are described in int8.py and int4.py.
Not here: kernels (int8.py, int4.py), writing files (checkpoint.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from glm_api.config import Quantize
from glm_api.quant.int4 import Int4Linear, ThudmInt4Linear
from glm_api.quant.int8 import Int8Linear

#: int4 group size when none is given: 32 keeps RTN error near 8% per gaussian layer (64: 9%)
DEFAULT_GROUP_SIZE = 32
#: config.json key written by `glm-api quantize`
CONFIG_KEY = "glm_api_quantization"
QUANTIZED_TYPES = (Int8Linear, Int4Linear, ThudmInt4Linear)
# THUDM's quantize() replaces exactly these four projections of every layer (v1 and v2+)
_THUDM_LAYERS = re.compile(
    r"(^|\.)layers\.\d+\.((self_)?attention\.(query_key_value|dense)|mlp\.(dense_h_to_4h|dense_4h_to_h))$"
)


def layer_kind(linear: nn.Linear, mode: Quantize, group_size: int) -> str:
    """ "int8" or "int4": what `mode` makes of this layer ("none" only for Quantize.NONE)."""
    if mode is Quantize.NONE:
        return "none"
    if mode is Quantize.INT4 and linear.in_features % group_size == 0:
        return "int4"
    return "int8"


def quantize_linear(
    linear: nn.Linear, mode: Quantize, device: torch.device, group_size: int = DEFAULT_GROUP_SIZE
) -> nn.Module:
    """One float `nn.Linear` -> its quantized replacement on `device`."""
    kind = layer_kind(linear, mode, group_size)
    if kind == "int4":
        return Int4Linear.from_linear(linear, group_size, device)
    if kind == "int8":
        return Int8Linear.from_linear(linear, device)
    return linear


def _replace_linears_(
    module: nn.Module, make: Callable[[str, nn.Linear], nn.Module | None]
) -> None:
    """Replace each `nn.Linear` under `module` (named relative to it) by `make(name, linear)`."""
    if isinstance(module, nn.Linear):
        raise TypeError("pass the module that holds the nn.Linear, not the nn.Linear itself")
    for parent_name, parent in list(module.named_modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                name = f"{parent_name}.{child_name}" if parent_name else child_name
                replacement = make(name, child)
                if replacement is not None:
                    setattr(parent, child_name, replacement)


def quantize_linears_(
    module: nn.Module,
    mode: Quantize,
    device: torch.device,
    group_size: int = DEFAULT_GROUP_SIZE,
) -> None:
    """In place: every `nn.Linear` inside `module` becomes a quantized layer on `device`."""
    if mode is Quantize.NONE:
        return
    _replace_linears_(module, lambda _, linear: quantize_linear(linear, mode, device, group_size))


def _empty_like(linear: nn.Linear, kind: str, group_size: int) -> nn.Module:
    device = linear.weight.device  # the loader builds on "meta": no memory until assigned
    shape = (linear.in_features, linear.out_features, linear.bias is not None)
    if kind == "int4":
        return Int4Linear(*shape, group_size=group_size, device=device)
    if kind == "thudm_int4":
        return ThudmInt4Linear(*shape, device=device)
    return Int8Linear(*shape, device=device)


def is_prequantized(config_json: Mapping[str, Any]) -> bool:
    """Whether a config.json describes quantized weights. THUDM's float chatglm-6b and
    chatglm2-6b configs carry `"quantization_bit": 0`, so the key alone says nothing."""
    return bool(config_json.get("quantization_bit")) or CONFIG_KEY in config_json


def prepare_for_checkpoint_(model: nn.Module, config_json: Mapping[str, Any]) -> None:
    """Swap Linear layers so `model.state_dict()` matches a pre-quantized checkpoint.

    Reads THUDM's `quantization_bit` (4 or 8; 0 or absent: float) or our `glm_api_quantization`
    entry; does nothing for a float checkpoint.
    """
    ours = config_json.get(CONFIG_KEY)
    if ours is not None:
        mode = Quantize(ours["mode"])
        group_size = int(ours.get("group_size") or DEFAULT_GROUP_SIZE)
        kinds: Mapping[str, str] | None = ours.get("modules")

        def make_ours(name: str, linear: nn.Linear) -> nn.Module | None:
            kind = layer_kind(linear, mode, group_size) if kinds is None else kinds.get(name)
            return None if kind in (None, "none") else _empty_like(linear, kind, group_size)

        _replace_linears_(model, make_ours)
        return
    bits = int(config_json.get("quantization_bit") or 0)
    if bits == 0:
        return
    if bits not in (4, 8):
        raise ValueError(f"quantization_bit {bits} is not supported (4 or 8)")
    if config_json.get("quantization_embeddings"):
        raise ValueError("THUDM checkpoints with quantized embeddings (-qe) are not supported")
    kind = "thudm_int4" if bits == 4 else "int8"

    def make_thudm(name: str, linear: nn.Linear) -> nn.Module | None:
        return _empty_like(linear, kind, 0) if _THUDM_LAYERS.search(name) else None

    _replace_linears_(model, make_thudm)


def quantized_layer_kinds(model: nn.Module) -> dict[str, str]:
    """Module name -> "int8" | "int4" for each quantized layer (recorded in config.json)."""
    kinds = {}
    for name, module in model.named_modules():
        if isinstance(module, Int4Linear):
            kinds[name] = "int4"
        elif isinstance(module, Int8Linear):
            kinds[name] = "int8"
    return kinds


def weight_bytes(module: nn.Module) -> int:
    """Bytes of parameters and buffers under `module` (tied tensors once), packed copies too."""
    total = 0
    seen: set[int] = set()
    for child in module.modules():
        if isinstance(child, QUANTIZED_TYPES):
            total += child.storage_bytes()
            continue
        for tensor in [*child.parameters(recurse=False), *child.buffers(recurse=False)]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.nbytes
    return total
