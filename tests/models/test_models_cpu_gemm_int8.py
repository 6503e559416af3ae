"""cpu_gemm_int8.c: our INT8 linear gives fbgemm's dynamic-linear path to the bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glm_api.models import cpu_gemm, cpu_gemm_int8, cpu_kernels
from glm_api.quant import int8

pytestmark = pytest.mark.skipif(
    cpu_kernels.load() is None, reason="no AVX2/FMA or no C compiler: fbgemm runs here"
)


def _layer(num_in: int, num_out: int, bias: bool = True) -> int8.Int8Linear:
    torch.manual_seed(num_in * 31 + num_out)
    return int8.Int8Linear.from_linear(nn.Linear(num_in, num_out, bias=bias), torch.device("cpu"))


def _fbgemm(
    layer: int8.Int8Linear, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> torch.Tensor:
    reference = int8.Int8Linear(layer.in_features, layer.out_features, layer.bias is not None)
    reference.load_state_dict(layer.state_dict())
    with monkeypatch.context() as patch, torch.no_grad():
        patch.setattr(cpu_gemm_int8, "load", lambda: None)
        out = reference(x)
    assert reference._packed is not None, "the reference ran fbgemm"
    return out


@pytest.mark.skipif(not int8._has_fbgemm(), reason="this torch build has no fbgemm")
@pytest.mark.parametrize(
    ("num_rows", "num_in", "num_out", "bias"),
    [(1, 256, 96, True), (16, 1024, 160, False), (5, 30, 37, True), (7, 130, 17, True),
     (128, 64, 48, False)],
)  # fmt: skip
def test_the_same_bits_as_fbgemm(
    num_rows: int, num_in: int, num_out: int, bias: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = _layer(num_in, num_out, bias)
    x = torch.randn(num_rows, num_in, generator=torch.Generator().manual_seed(1)) * 4
    x[0, :3] = 0.0  # a few exact zeros; and one row of wildly larger magnitude
    x[-1] *= 1e3
    expected = _fbgemm(layer, x, monkeypatch)
    with torch.no_grad():
        out = layer(x)
    assert layer._panels is not None and layer._packed is None  # ours ran
    assert out.shape == (num_rows, num_out)
    assert torch.equal(out, expected)


@pytest.mark.skipif(not int8._has_fbgemm(), reason="this torch build has no fbgemm")
def test_rows_of_tiny_weights_get_fbgemms_bits_too(monkeypatch: pytest.MonkeyPatch) -> None:
    linear = nn.Linear(64, 24, bias=False)  # a bias would hide the tiny outputs
    with torch.no_grad():
        linear.weight[3] *= 1e-10  # max |w| below 127 x 1e-12: the scale's floor
        linear.weight[5] = 0.0
    layer = int8.Int8Linear.from_linear(linear, torch.device("cpu"))
    x = torch.randn(4, 64)
    expected = _fbgemm(layer, x, monkeypatch)
    with torch.no_grad():
        assert torch.equal(layer(x), expected)


def test_a_row_gets_the_same_bits_alone_or_among_others() -> None:
    layer = _layer(200, 72)
    x = torch.randn(19, 200, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        together = layer(x)
        for row in (0, 3, 4, 18):
            assert torch.equal(layer(x[row : row + 1]), together[row : row + 1])
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert torch.equal(layer(x), together)
        finally:
            torch.set_num_threads(before)


def test_pack_keeps_the_weight_and_state_dicts_round_trip() -> None:
    layer = _layer(70, 33)
    weight = layer.weight.clone()
    panels = cpu_gemm_int8.pack(weight, layer.weight_scale)
    assert panels[0].shape == (3, 18, 16, 4) and panels[1].shape == panels[2].shape == (48,)
    assert torch.equal(cpu_gemm_int8.unpack(panels[0], 33, 70), weight)
    assert int(panels[1][5]) == int(weight[5].sum())
    with torch.no_grad():
        layer(torch.randn(2, 70))  # packs
    assert layer.weight.numel() == 0  # the plain copy is freed
    assert torch.equal(layer.state_dict()["weight"], weight)


def test_pack_in_blocks_equals_one_whole_reorder(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = _layer(70, 83)  # 6 panels (the last with 3 rows), K padded from 70 to 72
    weight = layer.weight.clone()
    padded = torch.zeros(96, 72, dtype=torch.int8)
    padded[:83, :70] = weight
    monkeypatch.setattr(cpu_gemm, "BLOCK_BYTES", 4 * 16 * 72)  # 4 panels per block
    panels, col_sums, scales = cpu_gemm_int8.pack(weight, layer.weight_scale)
    assert torch.equal(panels, padded.reshape(6, 16, 18, 4).permute(0, 2, 1, 3))
    assert torch.equal(col_sums, padded.sum(dim=1, dtype=torch.int32))
    assert torch.equal(scales[:83], layer.weight_scale) and not scales[83:].any()


def test_no_rows_give_no_rows() -> None:
    layer = _layer(64, 32)
    with torch.no_grad():
        assert layer(torch.randn(0, 64)).shape == (0, 32)


def test_a_nan_or_infinite_row_poisons_only_itself() -> None:
    layer = _layer(64, 32)
    x = torch.randn(3, 64)
    x[0, 5], x[2, 7] = float("nan"), float("inf")
    with torch.no_grad():
        out = layer(x)
    assert out[0].isnan().all() and not out[1].isnan().any() and not out[1].isinf().any()
    assert not torch.isfinite(out[2]).all()
