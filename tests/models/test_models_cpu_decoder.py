"""cpu_decoder.c: a whole decode step in one C call gives glm.py's Python path to the bit."""

from __future__ import annotations

import pytest
import torch

from glm_api.config import Quantize
from glm_api.models import cpu_decoder, cpu_kernels
from glm_api.models.attention import AttentionBatch, LayerCache
from glm_api.models.config import GLMConfig
from glm_api.models.glm import GLMForCausalLM
from glm_api.models.packed import pack_linears_
from glm_api.quant.swap import quantize_linears_

pytestmark = pytest.mark.skipif(
    cpu_kernels.load() is None, reason="no AVX2/FMA or no C compiler: PyTorch's code runs here"
)

SLOTS, CACHE_LEN = 6, 40


def _model(quantize: Quantize | None = None, **overrides: object) -> GLMForCausalLM:
    fields: dict = dict(
        vocab_size=96, hidden_size=64, num_layers=3, num_attention_heads=4, num_kv_heads=2,
        head_dim=16, intermediate_size=96,
    )  # fmt: skip
    fields.update(overrides)
    torch.manual_seed(0)
    model = GLMForCausalLM(GLMConfig(**fields)).eval().requires_grad_(False)
    with torch.no_grad():
        for name, param in model.named_parameters():  # norms away from 1, biases non-zero
            scale = 1.0 if "embeddings" in name else 0.1
            param.copy_(torch.randn(param.shape) * scale + (1.0 if "layernorm" in name else 0.0))
    if quantize is not None:
        quantize_linears_(model, quantize, torch.device("cpu"))
    pack_linears_(model)  # what is left in float32 (all of it without quantize)
    return model


def _caches(model: GLMForCausalLM, dtype: torch.dtype = torch.float32) -> list[LayerCache]:
    spec = model.cache_spec
    generator = torch.Generator().manual_seed(1)
    shape = (SLOTS, spec.num_kv_heads, spec.num_prefix + CACHE_LEN, spec.head_dim)
    return [
        LayerCache(
            torch.randn(shape, generator=generator).to(dtype),
            torch.randn(shape, generator=generator).to(dtype),
        )
        for _ in range(spec.num_layers)
    ]


def _step(
    model: GLMForCausalLM,
    slots: list[int],
    cached: list[int],
    query_lens: list[int] | None = None,
    kv_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, list[LayerCache], bool]:
    """(final hidden, caches after the step, whether the C path ran); slot s feeds id 7 s + 1."""
    query_lens = query_lens or [1] * len(slots)
    caches = _caches(model, kv_dtype)
    ids = torch.cat([torch.full((n,), 7 * s + 1) for s, n in zip(slots, query_lens, strict=True)])
    positions = torch.cat([torch.arange(c, c + n) for c, n in zip(cached, query_lens, strict=True)])
    starts = [sum(query_lens[:i]) for i in range(len(slots))]
    batch = AttentionBatch(slots, starts, query_lens, cached, [0] * len(slots))
    ran = []
    original = cpu_decoder.decode_step

    def spy(*args: object) -> torch.Tensor | None:
        out = original(*args)  # type: ignore[arg-type]
        ran.append(out is not None)
        return out

    cpu_decoder.decode_step = spy  # type: ignore[assignment]
    try:
        with torch.inference_mode():
            hidden = model.forward(ids, positions, batch, caches)
    finally:
        cpu_decoder.decode_step = original  # type: ignore[assignment]
    return hidden, caches, any(ran)


def _python_path(model: GLMForCausalLM) -> None:
    model._decoder_plan = False


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"post_layer_norms": True, "add_bias_linear": True, "add_qkv_bias": False},
        {"pre_seq_len": 3, "num_kv_heads": 1, "partial_rotary_factor": 1.0},
        {"quantize": Quantize.INT8},
        {"quantize": Quantize.INT8, "add_bias_linear": True, "post_layer_norms": True},
    ],
    ids=["glm4", "glm4-0414", "prefix-mqa-full-rotary", "int8", "int8-0414-biases"],
)
def test_a_decode_step_in_c_is_the_python_path_to_the_bit(overrides: dict) -> None:
    model = _model(**overrides)
    slots, cached = [4, 0, 2, 5], [0, 13, 38, 7]  # 38: the last row of the slot
    hidden, caches, ran = _step(model, slots, cached)
    assert ran and isinstance(model._decoder_plan, cpu_decoder.DecoderPlan)
    _python_path(model)
    expected, expected_caches, ran = _step(model, slots, cached)
    assert not ran
    assert hidden.shape == (4, 64)
    assert torch.equal(hidden, expected)
    for ours, reference in zip(caches, expected_caches, strict=True):
        assert torch.equal(ours.keys, reference.keys)
        assert torch.equal(ours.values, reference.values)


@pytest.mark.parametrize(
    ("quantize", "kv_dtype"),
    [(None, torch.float16), (Quantize.INT8, torch.float16), (None, torch.bfloat16)],
    ids=["f32-f16", "int8-f16", "f32-bf16"],
)
def test_a_16_bit_cache_gives_the_python_paths_bits(
    quantize: Quantize | None, kv_dtype: torch.dtype
) -> None:
    model = _model(quantize)
    slots, cached = [4, 0, 2], [0, 13, 38]
    hidden, caches, ran = _step(model, slots, cached, kv_dtype=kv_dtype)
    assert ran
    _python_path(model)
    expected, expected_caches, ran = _step(model, slots, cached, kv_dtype=kv_dtype)
    assert not ran
    assert torch.equal(hidden, expected)
    for ours, reference in zip(caches, expected_caches, strict=True):
        assert ours.keys.dtype == kv_dtype
        assert torch.equal(ours.keys, reference.keys)
        assert torch.equal(ours.values, reference.values)


def test_a_row_gets_the_same_bits_alone_and_in_a_batch() -> None:
    model = _model()
    batched, _, _ = _step(model, [1, 3, 0], [5, 9, 2])
    alone, _, ran = _step(model, [3], [9])
    assert ran
    assert torch.equal(alone[0], batched[1])


def test_a_step_with_a_prefill_chunk_takes_the_python_path() -> None:
    model = _model()
    hidden, _, ran = _step(model, [0, 1], [3, 0], query_lens=[1, 5])
    assert not ran and hidden.shape == (6, 64)
    assert isinstance(model._decoder_plan, cpu_decoder.DecoderPlan)  # made, kept for later


def test_models_the_kernels_cannot_take_have_no_plan() -> None:
    model = _model()
    unpacked = GLMForCausalLM(model.config).eval()  # plain nn.Linear: not our kernel's layout
    assert cpu_decoder.make_plan(unpacked) is None
    odd = _model(intermediate_size=100)  # SwiGLU's kernel takes multiples of 8
    assert cpu_decoder.make_plan(odd) is None
    int4 = _model(Quantize.INT4)  # no C kernel for INT4 linears
    assert cpu_decoder.make_plan(int4) is None
    uneven = _model(num_attention_heads=3, num_kv_heads=2, head_dim=16)  # groups must divide
    assert cpu_decoder.make_plan(uneven) is None


def test_new_weights_get_a_new_plan() -> None:
    model = _model(Quantize.INT8)
    _step(model, [0], [4])  # the plan holds the packed weights of now
    state = model.state_dict()
    for name in state:
        if name.endswith("weight_scale"):
            state[name] = state[name] * 2
    model.load_state_dict(state)
    assert model._decoder_plan is None
    hidden, _, ran = _step(model, [1, 2], [3, 9])
    _python_path(model)
    expected, _, _ = _step(model, [1, 2], [3, 9])
    assert ran and torch.equal(hidden, expected)


def test_a_slot_outside_the_cache_is_refused_before_anything_is_written() -> None:
    model = _model()
    with pytest.raises(IndexError, match="outside a cache"):
        _step(model, [SLOTS], [0])
    with pytest.raises(IndexError, match="outside a cache"):
        _step(model, [0], [CACHE_LEN])


def test_under_autograd_the_python_path_runs() -> None:
    model = _model()
    caches = _caches(model)
    batch = AttentionBatch([0], [0], [1], [4], [0])
    plan = cpu_decoder.make_plan(model)
    assert plan is not None
    hidden = torch.randn(1, 64, requires_grad=True)
    cos, sin = torch.ones(1, 4), torch.zeros(1, 4)
    assert cpu_decoder.decode_step(plan, hidden, cos, sin, batch, caches, 0) is None
