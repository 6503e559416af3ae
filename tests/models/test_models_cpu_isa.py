"""The kernels' two builds (cpu_kernels.py): AVX-512 with VNNI where the CPU has it, else AVX2.

The AVX-512 build changes how the linears, the INT8 linears and the greedy screen walk their
panels (16 outputs in one zmm, up to 16 rows a pass), not what they compute: every result
here has the same bits from both builds, for row counts on each side of a tile's 16 and of
the AVX2 build's 6 and 4, ragged panels and odd K.
"""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

import pytest
import torch

from glm_api.models import cpu_gemm, cpu_gemm_int8, cpu_kernels
from glm_api.models.greedy_screen import GreedyScreen

ROW_COUNTS = (1, 2, 4, 5, 6, 7, 15, 16, 17, 33, 64)
HAS_AVX512 = cpu_kernels.best_isa() == "avx512"
needs_both = pytest.mark.skipif(
    not HAS_AVX512 or cpu_kernels.load_isa("avx2") is None,
    reason="this CPU has no AVX-512 with VNNI (or no C compiler): only the AVX2 build runs here",
)


def both() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    avx2, avx512 = cpu_kernels.load_isa("avx2"), cpu_kernels.load_isa("avx512")
    assert avx2 is not None and avx512 is not None
    return avx2, avx512


def test_the_isa_follows_the_cpu_and_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLM_API_CPU_ISA", "avx2")
    assert cpu_kernels.best_isa() == "avx2"
    monkeypatch.delenv("GLM_API_CPU_ISA")
    flags = cpu_kernels._cpu_flags()
    expected = "avx512" if flags and cpu_kernels.AVX512_CPU_FLAGS <= flags else "avx2"
    assert cpu_kernels.best_isa() == expected
    assert set(cpu_kernels.AVX512_FLAGS) <= set(cpu_kernels.flags_for("avx512"))
    assert not set(cpu_kernels.AVX512_FLAGS) & set(cpu_kernels.flags_for("avx2"))
    with pytest.raises(ValueError, match="unknown instruction set"):
        cpu_kernels.flags_for("sse2")


@needs_both
def test_a_failed_avx512_build_falls_back_to_avx2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A compiler that cannot build the AVX-512 library (no -mavx512vnni, say): AVX2 serves."""
    avx2 = cpu_kernels.load_isa("avx2")
    assert avx2 is not None
    built = Path(avx2._name)  # the AVX2 library, as a cache directory would hold it
    (tmp_path / "kernels").mkdir()
    shutil.copy(built, tmp_path / "kernels" / built.name)
    real_build = cpu_kernels._build

    def no_avx512(compiler: str, flags: tuple[str, ...], target: Path) -> bool:
        return False if "-mavx512f" in flags else real_build(compiler, flags, target)

    monkeypatch.setenv("GLM_API_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "_build", no_avx512)
    cpu_kernels.load_isa.cache_clear()
    try:
        library = cpu_kernels.load()
        assert library is not None and Path(library._name).parent == tmp_path / "kernels"
        assert Path(library._name).name == built.name
        assert cpu_kernels.load_isa("avx512") is None
    finally:
        cpu_kernels.load_isa.cache_clear()


@needs_both
@pytest.mark.parametrize(("num_out", "num_in"), [(1536, 1024), (1000, 37), (33, 2816)])
def test_float32_linears_have_the_same_bits(num_out: int, num_in: int) -> None:
    avx2, avx512 = both()
    torch.manual_seed(num_out)
    panels = cpu_gemm.to_panels(torch.randn(num_out, num_in) * 0.05)
    bias = torch.randn(num_out)
    for num_rows in ROW_COUNTS:
        x = torch.randn(num_rows, num_in)
        for b in (bias, None):
            expected = cpu_gemm.linear(avx2, x, panels, num_out, b)
            assert torch.equal(cpu_gemm.linear(avx512, x, panels, num_out, b), expected)
        # and each row alone has the bits it has among the others (batch invariance)
        alone = cpu_gemm.linear(avx512, x[-1:], panels, num_out, bias)
        assert torch.equal(alone, cpu_gemm.linear(avx512, x, panels, num_out, bias)[-1:])


@needs_both
@pytest.mark.parametrize(("num_out", "num_in"), [(1536, 1024), (1000, 37), (33, 2818)])
def test_int8_linears_have_the_same_bits(num_out: int, num_in: int) -> None:
    avx2, avx512 = both()
    torch.manual_seed(num_in)
    weight = torch.randint(-127, 128, (num_out, num_in), dtype=torch.int8)
    packed = cpu_gemm_int8.pack(weight, torch.rand(num_out) * 0.01)
    bias = torch.randn(num_out)
    for num_rows in ROW_COUNTS:
        x = torch.randn(num_rows, num_in)
        x[0, 3] = float("nan") if num_rows == 17 else x[0, 3]  # a NaN row among finite ones
        expected = cpu_gemm_int8.linear(avx2, x, packed, num_out, bias)
        got = cpu_gemm_int8.linear(avx512, x, packed, num_out, bias)
        assert torch.equal(got.nan_to_num(7.0), expected.nan_to_num(7.0))
        assert torch.equal(got.isnan(), expected.isnan())


@needs_both
@pytest.mark.parametrize(("num_out", "num_in"), [(5000, 64), (3001, 33)])
def test_the_greedy_screen_has_the_same_ids_and_logits(num_out: int, num_in: int) -> None:
    avx2, avx512 = both()
    torch.manual_seed(num_out)
    weight = torch.randn(num_out, num_in) * 0.02
    panels = cpu_gemm.to_panels(weight)
    screen = GreedyScreen(panels)
    for num_rows in ROW_COUNTS:
        x = torch.randn(num_rows, num_in)
        ids = screen.argmax(avx2, x, panels, num_out)
        logits = screen.screened(num_rows, num_out)
        assert screen.argmax(avx512, x, panels, num_out) == ids
        assert torch.equal(screen.screened(num_rows, num_out), logits)
        full = cpu_gemm.linear(avx512, x, panels, num_out, None).argmax(dim=-1).tolist()
        settled = [(i, f) for i, f in zip(ids, full, strict=True) if i is not None]
        assert len(settled) == num_rows and all(i == f for i, f in settled)


@needs_both
def test_decode_attention_has_the_same_bits() -> None:
    """The AVX-512 build weighs the values of two heads x 128 dims at a time: each output is
    still one FMA chain in key order."""
    avx2, avx512 = both()
    torch.manual_seed(5)
    heads, kv_heads, dim, slots, cache_len = 10, 2, 136, 3, 160
    query = torch.randn(slots, heads, dim)
    key, value = torch.randn(slots, kv_heads, dim), torch.randn(slots, kv_heads, dim)
    keys = torch.randn(slots, kv_heads, cache_len, dim)
    values = torch.randn(slots, kv_heads, cache_len, dim)
    lengths, rows = torch.tensor([150, 7, 65]), torch.arange(slots)  # rows and slots alike
    outs = []
    for library in (avx2, avx512):
        out = torch.empty(slots, heads, dim)
        undone = library.glm_decode_attention(
            query.data_ptr(), heads * dim, key.data_ptr(), kv_heads * dim, value.data_ptr(),
            kv_heads * dim, keys.data_ptr(), values.data_ptr(), cache_len,
            rows.data_ptr(), rows.data_ptr(), lengths.data_ptr(),
            slots, heads, kv_heads, dim, dim**-0.5, out.data_ptr(), 2, 0,
        )  # fmt: skip
        assert undone == 0
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
