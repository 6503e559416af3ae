"""Quantized layers: size, error against float32, batch invariance, exact state dicts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from glm_api.config import Quantize
from glm_api.models import cpu_gemm, cpu_gemm_int8
from glm_api.quant import (
    Int4Linear,
    Int8Linear,
    quantize_linear,
    quantize_linears_,
    weight_bytes,
)
from glm_api.quant import int8 as int8_module
from tests.quant.models import (
    ResidualMLP,
    glm_logits,
    inputs,
    relative_error,
    residual_mlp,
    tiny_glm,
)

CPU = torch.device("cpu")
MODES = [Quantize.INT8, Quantize.INT4]


def quantized(model: nn.Module, mode: Quantize) -> nn.Module:
    model = copy.deepcopy(model)
    quantize_linears_(model, mode, CPU)
    return model


@pytest.mark.parametrize(("mode", "max_ratio"), [(Quantize.INT8, 0.27), (Quantize.INT4, 0.16)])
def test_weight_bytes_shrink(mode: Quantize, max_ratio: float) -> None:
    torch.manual_seed(0)
    model = ResidualMLP(hidden=512, intermediate=1024, num_blocks=2).eval()
    float_bytes = weight_bytes(model)
    small = quantized(model, mode)
    before = weight_bytes(small)
    small(inputs(hidden=512))  # packs the CPU kernel's copy and frees the plain one
    assert weight_bytes(small) == before
    assert before <= max_ratio * float_bytes


@pytest.mark.parametrize(("mode", "max_error"), [(Quantize.INT8, 0.02), (Quantize.INT4, 0.06)])
def test_mlp_stack_close_to_float(mode: Quantize, max_error: float) -> None:
    # measured on an AVX2 EPYC: INT8 1.1% (7-bit activations), INT4 3.3%
    model = residual_mlp()
    x = inputs()
    with torch.no_grad():
        assert relative_error(quantized(model, mode)(x), model(x)) <= max_error


@pytest.mark.parametrize(("mode", "max_error"), [(Quantize.INT8, 0.02), (Quantize.INT4, 0.06)])
def test_tiny_glm_logits_close_to_float(mode: Quantize, max_error: float) -> None:
    # measured: INT8 0.09%, INT4 0.5% (see tiny_glm for why the embeddings are std 1)
    model = tiny_glm()
    ids = [3, 17, 42, 99, 5, 250, 7, 64, 128, 1]
    small = copy.deepcopy(model)
    for layer in small.decoder_layers():
        quantize_linears_(layer, mode, CPU)
    assert isinstance(
        small.transformer.encoder.layers[0].mlp.dense_h_to_4h, (Int8Linear, Int4Linear)
    )
    assert relative_error(glm_logits(small, ids), glm_logits(model, ids)) <= max_error


@pytest.mark.parametrize("mode", MODES)
def test_batch_invariance(mode: Quantize) -> None:
    # a row gives the same bits alone, among 8 rows, or in a 64-row prefill chunk
    model = quantized(residual_mlp(), mode)
    x = inputs(num_rows=64)
    with torch.no_grad():
        together = model(x)
        for row in (0, 1, 5, 7, 31, 63):
            assert torch.equal(model(x[row : row + 1]), together[row : row + 1])
        assert torch.equal(model(x[:8]), together[:8])
        assert torch.equal(model(x[2:5]), together[2:5])


def test_int8_is_exact_integer_arithmetic(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    layer = Int8Linear.from_linear(nn.Linear(256, 96), CPU)
    x = inputs(num_rows=5)
    codes, scale = int8_module.quantize_rows_int8(x)
    exact = codes.double() @ layer.weight.double().t()  # (5, 96), exact integers
    assert layer.bias is not None
    expected = exact * scale.double() * layer.weight_scale.double() + layer.bias.double()
    via_fbgemm, via_int_mm = copy.deepcopy(layer), copy.deepcopy(layer)
    with torch.no_grad():
        got = layer(x)  # our kernel where it loads, else fbgemm
        with monkeypatch.context() as patch:
            patch.setattr(cpu_gemm_int8, "load", lambda: None)
            fbgemm_out = via_fbgemm(x)
            patch.setattr(int8_module, "_has_fbgemm", lambda: False)
            int_mm_out = via_int_mm(x)
    assert via_fbgemm._packed is not None and via_int_mm._packed is None
    assert torch.equal(got, fbgemm_out)  # our kernel: fbgemm's bits
    assert torch.allclose(got.double(), expected, rtol=1e-6, atol=1e-6)
    assert torch.allclose(int_mm_out.double(), expected, rtol=1e-6, atol=1e-6)
    # the path of other devices: float activations times the dequantized weight
    weight = via_int_mm.weight.double() * via_int_mm.weight_scale.double()[:, None]  # never packed
    reference = x.double() @ weight.t() + layer.bias.double()
    dequantized = via_int_mm._forward_dequantized(x) + via_int_mm.bias
    assert torch.allclose(dequantized.double(), reference, rtol=1e-5, atol=1e-5)
    assert relative_error(got, reference) <= 0.02  # per-row 7-bit activations: 1.4% measured


@pytest.mark.parametrize("mode", MODES)
def test_state_dict_survives_packing(mode: Quantize) -> None:
    model = quantized(residual_mlp(), mode)
    plain = {name: t.clone() for name, t in model.state_dict().items()}
    x = inputs()
    with torch.no_grad():
        expected = model(x)  # packs every layer
    packed_state = model.state_dict()
    assert plain.keys() == packed_state.keys()
    for name, tensor in plain.items():
        assert torch.equal(packed_state[name], tensor), name
    fresh = quantized(residual_mlp(seed=5), mode)
    fresh.load_state_dict(packed_state)
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)
        fresh(x)  # packed now; loading again must still work
    fresh.load_state_dict(plain)
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)


def test_int4_layout_and_fallbacks() -> None:
    torch.manual_seed(0)
    odd_groups = quantize_linear(nn.Linear(48, 32), Quantize.INT4, CPU)
    assert isinstance(odd_groups, Int8Linear)  # 48 is not a multiple of the group size 32
    layer = quantize_linear(nn.Linear(64, 40), Quantize.INT4, CPU)  # 40 rows: no CPU kernel
    assert isinstance(layer, Int4Linear)
    assert layer.weight.shape == (40, 32) and layer.weight.dtype == torch.uint8
    assert layer.weight_scale.shape == (40, 2) and layer.weight_zero.shape == (40, 2)
    x = inputs(num_rows=3, hidden=64)
    with torch.no_grad():
        reference = nn.functional.linear(x, layer._dequantized(torch.float32), layer.bias)
        assert torch.equal(layer(x), reference)
        assert layer._packed is None


def test_kernel_matches_dequantized_weight() -> None:
    torch.manual_seed(0)
    layer = quantize_linear(nn.Linear(256, 128, bias=False), Quantize.INT4, CPU)
    assert isinstance(layer, Int4Linear)
    x = inputs(num_rows=4)
    with torch.no_grad():
        reference = nn.functional.linear(x, layer._dequantized(torch.float32))
        # the kernel takes bfloat16 activations: 3 significant digits
        assert relative_error(layer(x), reference) <= 0.01
        assert layer._packed is not None


def test_quantize_linears_needs_a_parent() -> None:
    with pytest.raises(TypeError):
        quantize_linears_(nn.Linear(64, 64), Quantize.INT8, CPU)
    model = residual_mlp()
    quantize_linears_(model, Quantize.NONE, CPU)
    assert isinstance(model.ups[0], nn.Linear)


@pytest.mark.parametrize("mode", MODES)
def test_quantizing_in_row_blocks_gives_the_whole_layers_codes(
    mode: Quantize, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(3)
    linear = nn.Linear(64, 37)  # 37 rows: blocks of 5 rows leave a block of 2
    whole = quantize_linear(linear, mode, CPU).state_dict()
    monkeypatch.setattr(cpu_gemm, "BLOCK_BYTES", 5 * 64 * 4)  # 5 float32 rows of 64
    assert len(int8_module.row_blocks(linear)) == 8
    blocked = quantize_linear(linear, mode, CPU).state_dict()
    assert whole.keys() == blocked.keys()
    for name, tensor in whole.items():
        assert torch.equal(blocked[name], tensor), name
