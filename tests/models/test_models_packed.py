"""PackedLinear: the same function as nn.Linear, bit-identical rows whatever the batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glm_api.models.packed import PackedLinear, can_pack, pack_linears_

pytestmark = pytest.mark.skipif(
    not can_pack(torch.device("cpu"), torch.float32), reason="this torch build has no oneDNN"
)


def test_packed_linear_matches_linear_and_keeps_the_plain_state_dict() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(96, 160)
    state = {k: v.clone() for k, v in linear.state_dict().items()}
    packed = PackedLinear(linear)
    x = torch.randn(3, 5, 96)  # (batch, seq, in_features)
    out = packed(x)
    assert out.shape == (3, 5, 160)
    torch.testing.assert_close(out, linear(x), atol=1e-5, rtol=1e-5)
    saved = packed.state_dict()
    assert set(saved) == {"weight", "bias"}
    assert torch.equal(saved["weight"], state["weight"]) and torch.equal(
        saved["bias"], state["bias"]
    )


@pytest.mark.parametrize("shape", [(256, 64), (64, 256), (1000, 128)])
def test_a_rows_bits_do_not_depend_on_the_other_rows(shape: tuple[int, int]) -> None:
    torch.manual_seed(1)
    packed = PackedLinear(nn.Linear(shape[1], shape[0], bias=False))
    rows = torch.randn(64, shape[1])
    full = packed(rows)
    for num_rows in (1, 2, 3, 7, 16, 33):
        assert torch.equal(packed(rows[:num_rows]), full[:num_rows]), num_rows


def test_pack_linears_leaves_a_tied_output_layer_alone() -> None:
    model = nn.ModuleDict(
        {"embed": nn.Embedding(10, 8), "proj": nn.Linear(8, 8), "out": nn.Linear(8, 10)}
    )
    model["out"].weight = model["embed"].weight
    assert pack_linears_(model) == 1
    assert isinstance(model["proj"], PackedLinear) and type(model["out"]) is nn.Linear


def test_without_padding_a_single_row_takes_the_one_row_kernel_and_stays_close() -> None:
    torch.manual_seed(2)
    linear = nn.Linear(128, 512)
    padded, single = PackedLinear(linear, True), PackedLinear(linear, False)
    row = torch.randn(1, 128)
    torch.testing.assert_close(single(row), padded(row), atol=1e-5, rtol=1e-5)
