"""Which architecture a `config.json` describes: a dict from config kind to its parts.

Adding a GLM layout means one entry here (a config parser, a model class, a weight-name
table); the loader never branches on the kind. Kinds come from `config.config_kind`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from glm_api.models.chatglm import ChatGLMForCausalLM
from glm_api.models.config import (
    parse_chatglm_config,
    parse_chatglm_v1_config,
    parse_hf_config,
)
from glm_api.models.glm import HF_NAME_TABLE, GLMForCausalLM

#: checkpoint name (regex) -> (model name template, part, number of parts)
NameTable = list[tuple[str, str, int, int]]

#: checkpoint entries that are not weights: rotary frequency buffers (recomputed by the model)
IGNORED_NAMES: tuple[str, ...] = (r".*inv_freq",)


@dataclass(slots=True, frozen=True)
class Architecture:
    parse_config: Callable[[dict[str, Any]], Any]
    model_class: Callable[[Any], nn.Module]
    #: empty: the checkpoint already uses the model's parameter names
    name_table: NameTable


ARCHITECTURES: dict[str, Architecture] = {
    "chatglm-v1": Architecture(parse_chatglm_v1_config, ChatGLMForCausalLM, []),
    "chatglm": Architecture(parse_chatglm_config, GLMForCausalLM, []),
    "glm": Architecture(parse_hf_config, GLMForCausalLM, HF_NAME_TABLE),
    "glm4": Architecture(parse_hf_config, GLMForCausalLM, HF_NAME_TABLE),
}
