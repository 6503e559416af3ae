"""PackedLinear: the same function as nn.Linear, bit-identical rows whatever the batch.

Every test runs on both kernels: ours (cpu_gemm.c, built here on first use) and oneDNN.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from glm_api.models import cpu_gemm, cpu_kernels
from glm_api.models.packed import PackedLinear, can_pack, pack_linears_

pytestmark = pytest.mark.skipif(
    not can_pack(torch.device("cpu"), torch.float32), reason="this torch build has no oneDNN"
)


@pytest.fixture(params=["cpu_gemm", "onednn"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "onednn":
        monkeypatch.setattr(cpu_gemm, "load", lambda: None)
    elif cpu_gemm.load() is None:  # no AVX2 or no compiler: the build test says which
        pytest.skip("cpu_gemm cannot run on this machine")
    yield request.param


def test_our_kernel_builds_where_the_cpu_and_a_compiler_allow() -> None:
    if os.environ.get("GLM_API_CPU_GEMM") == "0":
        pytest.skip("GLM_API_CPU_GEMM=0 turns our kernel off")
    if not cpu_kernels.has_avx2() or not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no AVX2 or no C compiler: oneDNN serves float32 here")
    assert cpu_gemm.load() is not None
    assert PackedLinear(nn.Linear(8, 8)).uses_cpu_gemm


def test_packed_linear_matches_linear_and_keeps_the_plain_state_dict(kernel: str) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(96, 150)  # 150 outputs: not a whole number of 16-output panels
    state = {k: v.clone() for k, v in linear.state_dict().items()}
    packed = PackedLinear(linear)
    assert packed.uses_cpu_gemm == (kernel == "cpu_gemm")
    x = torch.randn(3, 5, 96)  # (batch, seq, in_features)
    out = packed(x)
    assert out.shape == (3, 5, 150)
    torch.testing.assert_close(out, linear(x), atol=1e-5, rtol=1e-5)
    saved = packed.state_dict()
    assert set(saved) == {"weight", "bias"}
    assert torch.equal(saved["weight"], state["weight"]) and torch.equal(
        saved["bias"], state["bias"]
    )


@pytest.mark.parametrize("shape", [(256, 64), (64, 256), (1000, 128)])
def test_a_rows_bits_do_not_depend_on_the_other_rows(kernel: str, shape: tuple[int, int]) -> None:
    torch.manual_seed(1)
    packed = PackedLinear(nn.Linear(shape[1], shape[0]))
    rows = torch.randn(64, shape[1])
    full = packed(rows)
    sizes = (1, 2, 3, 7, 16, 33) if kernel == "cpu_gemm" else (2, 3, 7, 16, 33)
    for num_rows in sizes:  # oneDNN pads a single row to two (below)
        assert torch.equal(packed(rows[:num_rows]), full[:num_rows]), num_rows
    assert torch.equal(packed(rows[5:12]), full[5:12])
    assert torch.equal(packed(rows[:1]), full[:1])  # pad_single_row (on by default)


def test_our_kernel_gives_the_same_bits_on_any_number_of_threads() -> None:
    if cpu_gemm.load() is None:
        pytest.skip("cpu_gemm cannot run here")
    torch.manual_seed(3)
    packed = PackedLinear(nn.Linear(256, 320))
    rows = torch.randn(9, 256)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = packed(rows)
        torch.set_num_threads(2)
        two = packed(rows)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_pack_linears_leaves_a_tied_output_layer_alone(kernel: str) -> None:
    model = nn.ModuleDict(
        {"embed": nn.Embedding(10, 8), "proj": nn.Linear(8, 8), "out": nn.Linear(8, 10)}
    )
    model["out"].weight = model["embed"].weight
    assert pack_linears_(model) == 1
    assert isinstance(model["proj"], PackedLinear) and type(model["out"]) is nn.Linear


def test_without_padding_a_single_row_stays_close(kernel: str) -> None:
    torch.manual_seed(2)
    linear = nn.Linear(128, 512)
    padded, single = PackedLinear(linear, True), PackedLinear(linear, False)
    row = torch.randn(1, 128)
    torch.testing.assert_close(single(row), padded(row), atol=1e-5, rtol=1e-5)
