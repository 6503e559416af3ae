"""`load_model`: a checkpoint folder or hub id -> a ready `LoadedModel` on its device.

Owns: resolving the source (folder, hub download, or the demo model), device and dtype,
the architecture from config.json (through registry.py), P-tuning v2 prefix weights,
generation defaults, and the quantization hooks. Reading and assigning tensors is
weights.py; the architectures are glm.py and chatglm.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from tqdm import tqdm

from glm_api.config import Device, DType, EngineConfig, Quantize
from glm_api.formats import load_format
from glm_api.formats.base import ChatFormat
from glm_api.models.base import CausalLM
from glm_api.models.config import config_kind
from glm_api.models.errors import ModelLoadError
from glm_api.models.packed import can_pack, pack_linears_
from glm_api.models.registry import ARCHITECTURES
from glm_api.models.weights import NameMapper, StateLoader, read_tensors, weight_files

log = logging.getLogger("glm_api.models")

_PREFIX = "transformer.prefix_encoder."
#: what a checkpoint needs (no pickles when safetensors exist: they would double the download)
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "*.jinja", "*.txt"]


@dataclass(slots=True)
class LoadedModel:
    """A model ready for the engine, with what serving needs to know about it."""

    model: CausalLM
    format: ChatFormat
    #: defaults from generation_config.json, keyed by `SamplingParams` field names
    generation_defaults: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    num_weight_bytes: int = 0


def resolve_device(device: Device) -> torch.device:
    if device == Device.AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == Device.CUDA and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for, but no CUDA device is available")
    if device == Device.MPS and not torch.backends.mps.is_available():
        raise ModelLoadError("--device mps was asked for, but MPS is not available")
    return torch.device(device.value)


def resolve_dtype(dtype: DType, device: torch.device) -> torch.dtype:
    if dtype == DType.AUTO:
        # bf16 matmuls are several times slower than fp32 on CPUs; GPUs want 16-bit
        return {"cuda": torch.bfloat16, "mps": torch.float16}.get(device.type, torch.float32)
    return {
        DType.FLOAT32: torch.float32,
        DType.BFLOAT16: torch.bfloat16,
        DType.FLOAT16: torch.float16,
    }[dtype]


def resolve_source(source: str) -> Path:
    """A local folder as is; anything else is a Hugging Face Hub id to download."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id=source, allow_patterns=_HUB_PATTERNS))
        if not any(folder.glob("*.safetensors")):  # older repos ship pickles only
            folder = Path(snapshot_download(repo_id=source, allow_patterns=["*.bin"]))
        return folder
    except Exception as error:  # offline, unknown id, gated repo: one line for the user
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(
            f"{source!r} is not a folder and could not be fetched from the Hugging Face Hub "
            f"({type(error).__name__}: {reason})"
        ) from None


def read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ModelLoadError(f"{path.name} not found in {path.parent}") from None
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{path} is not valid JSON: {error}") from None


def generation_defaults(folder: Path) -> dict[str, Any]:
    """generation_config.json -> `SamplingParams` field names (absent file: no defaults)."""
    path = folder / "generation_config.json"
    if not path.is_file():
        return {}
    raw = read_json(path)
    defaults: dict[str, Any] = {
        key: raw[key]
        for key in ("temperature", "top_p", "top_k", "repetition_penalty")
        if raw.get(key) is not None
    }
    if raw.get("do_sample") is False:
        defaults["temperature"] = 0.0  # transformers: no sampling means greedy
    if raw.get("max_new_tokens") is not None:
        defaults["max_tokens"] = int(raw["max_new_tokens"])
    eos = raw.get("eos_token_id")
    if eos is not None:
        defaults["stop_token_ids"] = [int(i) for i in (eos if isinstance(eos, list) else [eos])]
    return defaults


def read_prefix_checkpoint(source: str) -> dict[str, torch.Tensor]:
    """P-tuning v2 weights (`transformer.prefix_encoder.*`) from a file or a folder."""
    path = Path(source).expanduser()
    if not path.exists():
        raise ModelLoadError(f"prefix checkpoint {source!r} does not exist")
    files = weight_files(path) if path.is_dir() else [path]
    tensors = {
        name: tensor
        for file in files
        for name, tensor in read_tensors(file)
        if name.startswith(_PREFIX)
    }
    if _PREFIX + "embedding.weight" not in tensors:
        raise ModelLoadError(f"{source!r} holds no {_PREFIX}embedding.weight")
    return tensors


def load_model(source: str | None, config: EngineConfig) -> LoadedModel:
    """Load `source` (folder or hub id; None -> the demo model) as `config` asks."""
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    if source is None:
        from glm_api.models.demo import build_demo_model

        loaded = build_demo_model(dtype, device)
        loaded.name = config.served_model_name or loaded.name
        if config.quantize != Quantize.NONE:
            from glm_api.quant import quantize_linears_

            quantize_linears_(cast(nn.Module, loaded.model), config.quantize, device)
        _pack(cast(nn.Module, loaded.model), config, device, dtype)
        loaded.num_weight_bytes = count_weight_bytes(cast(nn.Module, loaded.model))
        return loaded
    folder = resolve_source(source)
    try:  # the tokenizer first: a bad one fails fast, before minutes of weight loading
        chat_format = load_format(folder)
    except Exception as error:
        raise ModelLoadError(f"cannot read the tokenizer in {folder}: {error}") from None
    model = load_weights(folder, config, device, dtype)
    _pack(model, config, device, dtype)
    is_local = Path(source).expanduser().is_dir()
    return LoadedModel(
        model=cast(CausalLM, model),
        format=chat_format,
        generation_defaults=generation_defaults(folder),
        # a folder is served by its name, a hub model by its id ("THUDM/glm-4-9b-chat")
        name=config.served_model_name or (folder.resolve().name if is_local else source),
        device=device,
        dtype=dtype,
        num_weight_bytes=count_weight_bytes(model),
    )


def _packer(
    config: EngineConfig, device: torch.device, dtype: torch.dtype
) -> Callable[[nn.Module], None] | None:
    """Float32 on a CPU: what reorders a module's weights once for our kernel or oneDNN
    (packed.py); None where nothing is packed (quantized, other devices or dtypes)."""
    if config.quantize != Quantize.NONE or not can_pack(device, dtype):
        return None
    pad = config.batch_invariant and config.max_num_seqs > 1

    def pack(module: nn.Module) -> None:
        pack_linears_(module, pad_single_row=pad)

    return pack


def _pack(model: nn.Module, config: EngineConfig, device: torch.device, dtype: torch.dtype) -> None:
    """Pack what is left: the output layer (the loader packs each decoder layer as soon as
    it is read, `_layer_hook`) or, for the demo model, everything."""
    pack = _packer(config, device, dtype)
    if pack is not None:
        pack(model)
        if cast(CausalLM, model).add_greedy_screen():
            log.info("greedy rows: the output layer's argmax screened by an INT8 copy (exact)")


def _layer_hook(
    model: Any, config: EngineConfig, device: torch.device, dtype: torch.dtype, quantizes: bool
) -> Callable[[int], None] | None:
    """What to do with decoder layer i once all its weights are read: quantize it, or pack it.

    Doing it per layer, while the file is read, keeps the float weights of one layer at a
    time next to the converted ones, instead of all of them.
    """
    layers = model.decoder_layers()
    if quantizes:  # --quantize on a float checkpoint
        from glm_api.quant import quantize_linears_

        return lambda i: quantize_linears_(layers[i], config.quantize, device)
    pack = _packer(config, device, dtype)
    return None if pack is None else lambda i: pack(layers[i])


def count_weight_bytes(model: nn.Module) -> int:
    """Bytes of weights as held in memory (tied tensors once, quantized kernels included)."""
    from glm_api.quant import weight_bytes

    return weight_bytes(model)


def _build(raw: dict[str, Any], prefix: dict[str, torch.Tensor]) -> Any:
    """The model of config.json on the meta device (no memory), plus its name table.

    A pre-quantized checkpoint (THUDM's `quantization_bit`, our `glm_api_quantization`) gets
    its Linear layers swapped here, still on meta, so the state dict names match the files.
    """
    architecture = ARCHITECTURES[config_kind(raw)]
    arch_config = architecture.parse_config(raw)
    if prefix:
        arch_config.pre_seq_len = prefix[_PREFIX + "embedding.weight"].shape[0]
        arch_config.prefix_projection = _PREFIX + "trans.0.weight" in prefix
    with torch.device("meta"):
        model = architecture.model_class(arch_config)
        if "quantization_bit" in raw or "glm_api_quantization" in raw:
            from glm_api.quant import prepare_for_checkpoint_

            try:
                prepare_for_checkpoint_(model, raw)
            except ValueError as error:
                raise ModelLoadError(f"config.json: {error}") from None
    return model, architecture.name_table


def load_weights(
    folder: Path, config: EngineConfig, device: torch.device, dtype: torch.dtype
) -> nn.Module:
    """The model of a checkpoint folder with its weights (and prefix, quantization) loaded."""
    raw = read_json(folder / "config.json")
    prefix = read_prefix_checkpoint(config.prefix_checkpoint) if config.prefix_checkpoint else {}
    model, name_table = _build(raw, prefix)
    is_prequantized = bool(raw.get("quantization_bit")) or "glm_api_quantization" in raw
    quantizes = config.quantize != Quantize.NONE and not is_prequantized
    hook = _layer_hook(model, config, device, dtype, quantizes)
    state = StateLoader(model, device, dtype, hook)
    mapper = NameMapper(name_table)
    files = weight_files(folder)
    for file in tqdm(files, desc="Loading weights", unit="shard", disable=len(files) < 2):
        for name, tensor in read_tensors(file):
            for target, mapped in mapper.map(name, tensor):
                state.assign(target, mapped)
    for name, tensor in prefix.items():
        state.assign(name, tensor)
    state.finish(mapper.incomplete())
    if model.config.tie_word_embeddings:
        model.tie_weights()
    elif quantizes:
        # The output layer is the largest single matmul of a decode step (vocabulary x hidden):
        # INT8 there doubles float32 decode speed on a CPU, and beats INT4 (see glm_api.quant).
        from glm_api.quant import quantize_linears_

        quantize_linears_(model, Quantize.INT8, device)  # only the layers still in float
    model.eval()
    return model
