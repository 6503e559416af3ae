"""`quantize_checkpoint`: a float checkpoint folder -> a quantized one that `serve` loads.

The output holds `model.safetensors` (the quantized state dict, names as the model keeps
them), `config.json` with a `glm_api_quantization` entry (mode, group size, and which modules
are quantized, so `prepare_for_checkpoint_` rebuilds exactly those), and every other non-weight
file of the source (tokenizer, generation_config.json, ...) copied unchanged.
Not here: the quantization itself (swap.py, int8.py, int4.py).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from glm_api.config import EngineConfig, Quantize
from glm_api.quant.swap import (
    CONFIG_KEY,
    DEFAULT_GROUP_SIZE,
    QUANTIZED_TYPES,
    is_prequantized,
    quantized_layer_kinds,
)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def quantize_checkpoint(source: str, output: str | os.PathLike[str], mode: Quantize) -> None:
    """Load `source` quantized as `mode` and write it to the folder `output`."""
    from glm_api.models.loader import load_model, read_json, resolve_source

    if mode is Quantize.NONE:
        raise ValueError("choose --quantize int8 or int4")
    folder = resolve_source(source)
    raw = read_json(folder / "config.json")
    if is_prequantized(raw):
        raise ValueError(f"{source} is already quantized; start from the float checkpoint")
    model = load_model(source, EngineConfig(model=source, quantize=mode)).model
    assert isinstance(model, nn.Module)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        _tensors_to_save(model, _DTYPES.get(str(raw.get("torch_dtype")))),
        out / "model.safetensors",
        metadata={"format": "pt"},
    )
    raw[CONFIG_KEY] = {
        "mode": mode.value,
        "group_size": DEFAULT_GROUP_SIZE,
        "modules": quantized_layer_kinds(model),
    }
    (out / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    for path in sorted(folder.iterdir()):
        if (
            path.is_file()
            and path.name != "config.json"
            and not path.name.endswith(_WEIGHT_SUFFIXES)
        ):
            shutil.copy2(path, out / path.name)


def _tensors_to_save(model: nn.Module, float_dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The state dict on CPU, tied tensors once. Float tensors outside quantized layers go back
    to the checkpoint's `torch_dtype` where that loses nothing (the loader upcast them)."""
    quantized = tuple(
        name + "." for name, module in model.named_modules() if isinstance(module, QUANTIZED_TYPES)
    )
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            continue  # a tied weight: the loader skips the alias
        seen.add(id(tensor))
        tensor = tensor.detach().to("cpu")
        if (
            float_dtype is not None
            and tensor.is_floating_point()
            and not name.startswith(quantized)
        ):
            narrow = tensor.to(float_dtype)
            if torch.equal(narrow.to(tensor.dtype), tensor):
                tensor = narrow
        tensors[name] = tensor.contiguous()
    return tensors
