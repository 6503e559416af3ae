"""Our model classes reproduce the official ChatGLM modeling code (reference-numerics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glm_api.models.chatglm import ChatGLMForCausalLM
from glm_api.models.config import ChatGLMv1Config, GLMConfig
from glm_api.models.glm import GLMForCausalLM
from tests.models.model_steps import run_steps

V2_EPS_THETA = {"glm2": (1e-5, 10000.0), "glm3": (1e-5, 10000.0), "glm4": (1.5625e-7, 5e6)}


class _Reader:
    def __init__(self, path: Path) -> None:
        self.data, self.offset = path.read_bytes(), 0

    def take(self, shape: tuple[int, ...], dtype: type = np.float32) -> torch.Tensor:
        count = int(np.prod(shape))
        array = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += count * np.dtype(dtype).itemsize
        return torch.from_numpy(array.copy()).reshape(shape)

    def steps(self) -> tuple[list[list[int]], list[torch.Tensor]]:
        ids, expected = [], []
        for n in (3, 1, 1):
            ids.append(self.take((n,), np.int32).tolist())
            expected.append(self.take((n, 32)))
        assert self.offset == len(self.data)
        return ids, expected


def _prefix_rows(prefix: torch.Tensor) -> torch.Tensor:
    """`[2 * layers, heads, pre_seq_len, dim]` -> the prefix encoder's embedding rows."""
    return prefix.float().permute(2, 0, 1, 3).reshape(prefix.shape[2], -1)


def _glm_model(reader: _Reader, eps: float, theta: float, pre_seq_len: int) -> GLMForCausalLM:
    config = GLMConfig(
        vocab_size=5,
        hidden_size=32,
        num_layers=1,
        num_attention_heads=8,
        num_kv_heads=2,
        head_dim=4,
        intermediate_size=48,
        layernorm_epsilon=eps,
        rope_theta=theta,
        pre_seq_len=pre_seq_len,
    )
    prefix = reader.take((2, 2, pre_seq_len, 4), np.float16) if pre_seq_len else None
    model = GLMForCausalLM(config)
    layer = model.transformer.encoder.layers[0]
    params = [
        model.transformer.embedding.word_embeddings.weight,
        layer.input_layernorm.weight,
        layer.self_attention.query_key_value.weight,
        layer.self_attention.query_key_value.bias,
        layer.self_attention.dense.weight,
        layer.post_attention_layernorm.weight,
        layer.mlp.dense_h_to_4h.weight,
        layer.mlp.dense_4h_to_h.weight,
        model.transformer.encoder.final_layernorm.weight,
    ]
    with torch.no_grad():
        for param in params:
            param.copy_(reader.take(tuple(param.shape)))
        if prefix is not None:
            assert model.transformer.prefix_encoder is not None
            model.transformer.prefix_encoder.embedding.weight.copy_(_prefix_rows(prefix))
    return model


def _v1_model(reader: _Reader, pre_seq_len: int) -> ChatGLMForCausalLM:
    config = ChatGLMv1Config(
        vocab_size=5,
        hidden_size=32,
        num_layers=1,
        num_attention_heads=8,
        inner_hidden_size=128,
        pre_seq_len=pre_seq_len,
    )
    prefix = reader.take((2, 8, pre_seq_len, 4), np.float16) if pre_seq_len else None
    model = ChatGLMForCausalLM(config)
    layer = model.transformer.layers[0]
    # the file's one layer was built by chatglm.cpp with ChatGLM-6B's num_layers (28) in
    # GLMBlock, so its residual scale is sqrt(2 * 28), not sqrt(2 * 1)
    layer.alpha = (2 * 28) ** 0.5
    params = [model.transformer.word_embeddings.weight]
    for module in (
        layer.input_layernorm,
        layer.attention.query_key_value,
        layer.attention.dense,
        layer.post_attention_layernorm,
        layer.mlp.dense_h_to_4h,
        layer.mlp.dense_4h_to_h,
    ):
        params += [module.weight, module.bias]
    params += [model.transformer.final_layernorm.weight, model.transformer.final_layernorm.bias]
    with torch.no_grad():
        for param in params:
            param.copy_(reader.take(tuple(param.shape)))
        if prefix is not None:
            assert model.transformer.prefix_encoder is not None
            model.transformer.prefix_encoder.embedding.weight.copy_(_prefix_rows(prefix))
    return model


def _assert_steps(outputs: list[torch.Tensor], expected: list[torch.Tensor], tol: float) -> None:
    for got, want in zip(outputs, expected, strict=True):
        assert got.shape == want.shape
        assert (got - want).abs().max().item() < tol


@pytest.mark.parametrize(
    ("name", "kind", "pre_seq_len"),
    [
        ("glm2_model", "glm2", 0),
        ("glm3_model", "glm3", 0),
        ("glm4_model", "glm4", 0),
        ("glm3_ptuning_v2_model", "glm3", 5),
    ],
)
def test_v2_plus_reproduces_official_code(
    assets: Path, name: str, kind: str, pre_seq_len: int
) -> None:
    reader = _Reader(assets / "reference-numerics" / f"{name}.data")
    model = _glm_model(reader, *V2_EPS_THETA[kind], pre_seq_len=pre_seq_len)
    ids, expected = reader.steps()
    outputs = run_steps(model, ids)
    _assert_steps(outputs, expected, 1e-3 if pre_seq_len else 1e-4)


@pytest.mark.parametrize(("name", "pre_seq_len"), [("glm_model", 0), ("glm_ptuning_v2_model", 5)])
def test_chatglm_v1_reproduces_official_code(assets: Path, name: str, pre_seq_len: int) -> None:
    reader = _Reader(assets / "reference-numerics" / f"{name}.data")
    model = _v1_model(reader, pre_seq_len)
    ids, expected = reader.steps()
    # step 1 is [context, context, <sop>]: two tokens of bidirectional context
    outputs = run_steps(model, ids, bidirectional_len=2)
    _assert_steps(outputs, expected, 1e-3 if pre_seq_len else 1e-4)
