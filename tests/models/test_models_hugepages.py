"""hugepages.empty: a plain contiguous tensor, on 2 MB lines where Linux can give them."""

from __future__ import annotations

import sys

import pytest
import torch

from glm_api.models import cpu_gemm, hugepages


@pytest.mark.parametrize("dtype", [torch.float32, torch.int8])
def test_a_big_tensor_starts_on_a_huge_page_and_behaves_as_any_other(dtype: torch.dtype) -> None:
    shape = (3, 1024, 1024)  # 3 M elements: more than one 2 MB page in either dtype
    tensor = hugepages.empty(shape, dtype)
    assert tensor.shape == shape and tensor.dtype == dtype and tensor.is_contiguous()
    tensor.fill_(3)
    assert int(tensor.sum(dtype=torch.int64)) == 3 * tensor.numel()
    if sys.platform.startswith("linux"):
        assert tensor.data_ptr() % hugepages.HUGE_PAGE == 0


def test_a_small_tensor_is_an_ordinary_one() -> None:
    tensor = hugepages.empty((4, 5))
    assert tensor.shape == (4, 5) and tensor.dtype == torch.float32


def test_panels_on_huge_pages_keep_the_weight() -> None:
    weight = torch.randn(700, 1024)  # 44 panels x 1024 x 16 floats: 2.9 MB
    panels = cpu_gemm.to_panels(weight)
    assert panels.shape == (44, 1024, 16)
    assert torch.equal(cpu_gemm.from_panels(panels, 700), weight)


def test_panels_packed_in_blocks_equal_one_whole_reorder(monkeypatch: pytest.MonkeyPatch) -> None:
    weight = torch.randn(83, 40)  # 6 panels, the last with 3 rows (13 zero rows)
    padded = torch.zeros(96, 40)
    padded[:83] = weight
    whole = padded.reshape(6, 16, 40).transpose(1, 2)
    monkeypatch.setattr(cpu_gemm, "BLOCK_BYTES", 4 * 16 * 40 * 4)  # 4 panels per block
    panels = cpu_gemm.to_panels(weight)
    assert panels.shape == (6, 40, 16) and torch.equal(panels, whole)
    assert torch.equal(cpu_gemm.from_panels(panels, 83), weight)
