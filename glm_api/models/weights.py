"""Reading checkpoint files into a model built on the meta device, one tensor at a time.

Owns: finding weight files (safetensors or `pytorch_model*.bin`, single or sharded), mapping
checkpoint names onto model names through a registry table (fusing q/k/v parts), checking
shapes, and assigning converted tensors so peak memory stays near the weights' size. Which
architecture and which files to read is decided by loader.py.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from glm_api.models.errors import ModelLoadError
from glm_api.models.registry import IGNORED_NAMES, NameTable

_MAX_NAMED = 8  # names listed per kind of problem in the one error message


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files, shards in index order; safetensors preferred."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = [folder / name for name in dict.fromkeys(weight_map.values())]
            absent = [path.name for path in files if not path.is_file()]
            if absent:
                raise ModelLoadError(f"{index_name} names missing shards: {', '.join(absent)}")
            return files
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise ModelLoadError(f"no *.safetensors or pytorch_model*.bin weights in {folder}")
    return files


def read_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, CPU tensor) pairs of one file; tensors are read one by one where the format allows."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)
        return
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except RuntimeError:  # a pre-zipfile pickle cannot be mapped: read it whole
        state = _load_pickle(path)
    except Exception as error:  # a pickle that is not a plain state dict
        raise ModelLoadError(f"cannot read {path.name}: {error}") from None
    yield from state.items()  # mapped, not read: StateLoader copies each tensor once


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        return dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as error:
        raise ModelLoadError(f"cannot read {path.name}: {error}") from None


class NameMapper:
    """Checkpoint names -> model names by a table; fused parts wait until all have arrived."""

    def __init__(self, table: NameTable) -> None:
        self._rules = [(re.compile(p), target, part, n) for p, target, part, n in table]
        self._ignored = [re.compile(pattern) for pattern in IGNORED_NAMES]
        self._pending: dict[str, dict[int, torch.Tensor]] = defaultdict(dict)
        self._num_parts: dict[str, int] = {}

    def map(self, name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        if any(pattern.fullmatch(name) for pattern in self._ignored):
            return []
        for pattern, template, part, num_parts in self._rules:
            match = pattern.fullmatch(name)
            if match is None:
                continue
            target = match.expand(template)
            if num_parts == 1:
                return [(target, tensor)]
            self._pending[target][part] = tensor
            self._num_parts[target] = num_parts
            if len(self._pending[target]) < num_parts:
                return []
            parts = self._pending.pop(target)
            return [(target, torch.cat([parts[i] for i in range(num_parts)], dim=0))]
        return [(name, tensor)]

    def incomplete(self) -> list[str]:
        """Fused weights some of whose parts never came."""
        return [
            f"{target} (parts {sorted(parts)} of {self._num_parts[target]})"
            for target, parts in self._pending.items()
        ]


def _set_tensor(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    else:
        module._buffers[leaf] = tensor


class StateLoader:
    """Assigns tensors into a meta-device model, collecting every problem for one error.

    `on_layer_done(i)` runs as soon as every tensor of decoder layer i has been assigned
    (the quantization hook: a layer is quantized before the next one is read).
    """

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        dtype: torch.dtype,
        on_layer_done: Callable[[int], None] | None = None,
    ) -> None:
        self.model, self.device, self.dtype = model, device, dtype
        self.on_layer_done = on_layer_done
        self.expected: dict[str, torch.Size] = {}
        self.aliases: set[str] = set()  # tied weights: the second name of one parameter
        seen: set[int] = set()
        for name, tensor in model.state_dict(keep_vars=True).items():
            if id(tensor) in seen:
                self.aliases.add(name)
            else:
                seen.add(id(tensor))
                self.expected[name] = tensor.shape
        # buffers (quantized layers' int8 weights, scales) keep the dtype their module declares
        self._buffer_dtypes = {name: b.dtype for name, b in model.named_buffers()}
        self.loaded: set[str] = set()
        self.unexpected: list[str] = []
        self.misshaped: list[str] = []
        self._seen_misshaped: set[str] = set()
        layer_pattern = re.compile(re.escape(getattr(model, "layer_prefix", "\0")) + r"(\d+)\.")
        self._layer_of = {
            n: int(m.group(1)) for n in self.expected if (m := layer_pattern.match(n))
        }
        self._left_in_layer: dict[int, int] = defaultdict(int)
        for layer in self._layer_of.values():
            self._left_in_layer[layer] += 1

    def assign(self, name: str, tensor: torch.Tensor) -> None:
        if name in self.aliases:
            return
        shape = self.expected.get(name)
        if shape is None:
            self.unexpected.append(name)
            return
        if tensor.shape != shape:
            self.misshaped.append(f"{name} {tuple(tensor.shape)} != {tuple(shape)}")
            self._seen_misshaped.add(name)
            return
        dtype = self._buffer_dtypes.get(name, self.dtype)
        if not tensor.is_floating_point() and name not in self._buffer_dtypes:
            dtype = tensor.dtype
        # always a fresh allocation: it owns its memory (no mapped file behind it) and is
        # aligned for SIMD, so numerics do not depend on where a tensor sat in its file
        _set_tensor(self.model, name, tensor.to(device=self.device, dtype=dtype, copy=True))
        if name in self.loaded:
            return
        self.loaded.add(name)
        layer = self._layer_of.get(name)
        if layer is not None:
            self._left_in_layer[layer] -= 1
            if self._left_in_layer[layer] == 0 and self.on_layer_done is not None:
                self.on_layer_done(layer)

    def finish(self, incomplete: list[str]) -> None:
        """Raise one ModelLoadError naming every missing, unexpected or mis-shaped weight."""
        missing = [
            name
            for name in self.expected
            if name not in self.loaded and name not in self._seen_misshaped
        ]
        problems = [
            (label, names)
            for label, names in (
                ("missing", missing),
                ("unexpected", self.unexpected),
                ("mis-shaped", self.misshaped),
                ("incomplete", incomplete),
            )
            if names
        ]
        if not problems:
            return
        parts = []
        for label, names in problems:
            shown = ", ".join(names[:_MAX_NAMED])
            more = f" and {len(names) - _MAX_NAMED} more" if len(names) > _MAX_NAMED else ""
            parts.append(f"{len(names)} {label} weight(s): {shown}{more}")
        raise ModelLoadError("checkpoint does not match the model: " + "; ".join(parts))
