"""Our C kernels for decode attention and the small ops: the same function as PyTorch's code.

Attention is checked against the SDPA loop it replaces (attention.py with the kernel off),
cache writes included; every kernel for batch invariance (a row's bits do not depend on
the other rows or on the number of threads).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from glm_api.models import cpu_attention, cpu_kernels, cpu_ops
from glm_api.models.attention import AttentionBatch, LayerCache, attend
from glm_api.models.layers import RMSNorm, rotary_cos_sin, rotate_interleaved

pytestmark = pytest.mark.skipif(
    cpu_kernels.load() is None, reason="no AVX2/FMA or no C compiler: PyTorch's code runs here"
)

HEADS, KV_HEADS, DIM, SLOTS, CACHE_LEN, PREFIX = 8, 2, 64, 5, 48, 3


@pytest.fixture
def threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _caches(dtype: torch.dtype = torch.float32) -> tuple[LayerCache, LayerCache]:
    torch.manual_seed(0)
    shape = (SLOTS, KV_HEADS, CACHE_LEN, DIM)
    keys, values = torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)
    return LayerCache(keys, values), LayerCache(keys.clone(), values.clone())


def _step(
    query_lens: list[int], cached: list[int], slots: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, AttentionBatch]:
    """q, k, v for one step, k and v as views into one fused row (as glm.py makes them)."""
    num_tokens = sum(query_lens)
    qkv = torch.randn(num_tokens, (HEADS + 2 * KV_HEADS) * DIM)
    q, k, v = qkv.split([HEADS * DIM, KV_HEADS * DIM, KV_HEADS * DIM], dim=-1)
    starts = [sum(query_lens[:i]) for i in range(len(query_lens))]
    batch = AttentionBatch(slots, starts, query_lens, cached, [0] * len(slots))
    return (
        q.view(-1, HEADS, DIM),
        k.view(-1, KV_HEADS, DIM),
        v.view(-1, KV_HEADS, DIM),
        batch,
    )


def _reference(monkeypatch: pytest.MonkeyPatch, args: tuple, cache: LayerCache) -> torch.Tensor:
    q, k, v, batch = args
    with monkeypatch.context() as patch:
        patch.setattr(cpu_attention, "load", lambda: None)
        fresh = AttentionBatch(*(list(x) for x in (batch.slot_ids, batch.query_starts,
                               batch.query_lens, batch.cached_lens, batch.bidirectional_lens)))  # fmt: skip
        return attend(q, k, v, cache, fresh, DIM**-0.5, PREFIX)


CACHE_DTYPES = pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["f32", "f16-cache", "bf16-cache"]
)


@CACHE_DTYPES
def test_decode_rows_match_the_sdpa_loop_and_write_the_same_cache(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 16-bit cache: keys and values rounded as torch rounds, the arithmetic in float32."""
    ours, reference = _caches(dtype)
    # four decode rows of different lengths (one with nothing cached) and a prefill chunk
    args = _step([1, 1, 6, 1, 1], cached=[0, 17, 4, 44, 9], slots=[2, 0, 4, 1, 3])
    q, k, v, batch = args
    assert cpu_attention.supports(q, k, v, ours)
    out = attend(q, k, v, ours, batch, DIM**-0.5, PREFIX)
    assert batch.decode_rows(PREFIX).seqs == [0, 1, 3, 4]  # the kernel took these
    expected = _reference(monkeypatch, args, reference)
    assert out.shape == (10, HEADS, DIM)
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=1e-5)
    assert torch.equal(ours.keys, reference.keys)
    assert torch.equal(ours.values, reference.values)


@CACHE_DTYPES
def test_prompt_rows_match_sdpa_and_have_the_same_bits_however_chunked(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prompt chunks go to the kernel too: close to SDPA's mask loop, bidirectional windows
    (ChatGLM-6B) included, and a position's bits the same in one chunk, in three, or decoded."""
    ours, reference = _caches(dtype)
    args = _step([9, 1, 5], cached=[0, 17, 3], slots=[2, 0, 4])
    q, k, v, batch = args
    batch.bidirectional_lens[:] = [4, 0, 6]  # rows before these see each other both ways
    out = attend(q, k, v, ours, batch, DIM**-0.5, PREFIX)
    expected = _reference(monkeypatch, args, reference)
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=1e-5)
    assert torch.equal(ours.keys, reference.keys) and torch.equal(ours.values, reference.values)

    # one 12-row prompt: whole, then as chunks of 5, 1 and 6 into a fresh cache
    torch.manual_seed(3)
    whole_cache, chunked_cache = _caches(dtype)
    q, k, v, _ = _step([12], cached=[0], slots=[1])
    whole = attend(q, k, v, whole_cache, AttentionBatch([1], [0], [12], [0], [0]), 0.1, PREFIX)
    parts = []
    for start, size in ((0, 5), (5, 1), (6, 5)):
        rows = slice(start, start + size)
        chunk = AttentionBatch([1], [0], [size], [start], [0], prompt_lens=[12])
        parts.append(attend(q[rows], k[rows], v[rows], chunked_cache, chunk, 0.1, PREFIX))
    decode = AttentionBatch([1], [0], [1], [11], [0])  # the last row decoded, as a next token
    parts.append(attend(q[11:], k[11:], v[11:], chunked_cache, decode, 0.1, PREFIX))
    assert torch.equal(torch.cat(parts), whole)
    assert torch.equal(chunked_cache.keys, whole_cache.keys)


@CACHE_DTYPES
@pytest.mark.parametrize("dim", [72, 136])
def test_long_slots_odd_head_dims_and_groups_match_the_sdpa_loop(
    dtype: torch.dtype, dim: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # several 64-row blocks of values, head dims of 72 (4 x 16 + 8) and 136 (128 + 8: the
    # AVX-512 build's two-heads-at-a-time weighing, then the rest), groups of 5 query heads
    heads, kv_heads, lengths = 10, 2, [150, 7, 64, 65, 129]
    torch.manual_seed(6)
    shape = (len(lengths), kv_heads, 160, dim)
    ours = LayerCache(torch.randn(shape).to(dtype), torch.randn(shape).to(dtype))
    reference = LayerCache(ours.keys.clone(), ours.values.clone())
    qkv = torch.randn(len(lengths), (heads + 2 * kv_heads) * dim)
    q, k, v = qkv.split([heads * dim, kv_heads * dim, kv_heads * dim], dim=-1)
    q, k, v = q.view(-1, heads, dim), k.view(-1, kv_heads, dim), v.view(-1, kv_heads, dim)

    def batch() -> AttentionBatch:
        n = len(lengths)
        return AttentionBatch(list(range(n)), list(range(n)), [1] * n, lengths, [0] * n)

    out = attend(q, k, v, ours, batch(), dim**-0.5)
    with monkeypatch.context() as patch:
        patch.setattr(cpu_attention, "load", lambda: None)
        expected = attend(q, k, v, reference, batch(), dim**-0.5)
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=1e-5)
    assert torch.equal(ours.keys, reference.keys) and torch.equal(ours.values, reference.values)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_keys_and_values_round_into_a_16_bit_cache_as_torch_rounds(dtype: torch.dtype) -> None:
    """Ties to even, the largest and smallest values, infinities and NaN, as `.to(dtype)`."""
    shape = (1, KV_HEADS, CACHE_LEN, DIM)
    cache = LayerCache(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype))
    q, k, v, batch = _step([1], cached=[4], slots=[0])
    special = torch.tensor(
        [1.0 + 2**-8, 1.0 + 3 * 2**-8, 1.0 + 2**-11, 1.0 + 3 * 2**-11, 65519.0, 65520.0, 1e-8,
         -2.5e-38, 3.0e38, float("inf"), float("-inf"), float("nan"), -0.0, 1e-45, 7.0, -3.0]
    )  # fmt: skip
    k.view(-1)[: special.numel()] = special
    v.view(-1)[: special.numel()] = -special
    attend(q, k, v, cache, batch, DIM**-0.5)
    written_k, written_v = cache.keys[0, :, 4], cache.values[0, :, 4]
    assert torch.equal(written_k.view(torch.int16), k[0].to(dtype).view(torch.int16))
    assert torch.equal(written_v.view(torch.int16), v[0].to(dtype).view(torch.int16))


@pytest.mark.parametrize("kernel", ["ours", "sdpa"])
def test_rows_past_a_sequences_length_are_never_read(
    kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The KV cache is allocated empty (kv_cache.py): what lies past the written rows is noise."""
    if kernel == "sdpa":
        monkeypatch.setattr(cpu_attention, "load", lambda: None)
    torch.manual_seed(5)
    written = 20  # rows per slot written before this step (prefix included)
    shape = (SLOTS, KV_HEADS, CACHE_LEN, DIM)
    clean = LayerCache(torch.zeros(shape), torch.zeros(shape))
    clean.keys[:, :, :written], clean.values[:, :, :written] = (
        torch.randn(SLOTS, KV_HEADS, written, DIM) for _ in range(2)
    )
    noisy = LayerCache(torch.full(shape, float("nan")), torch.full(shape, float("nan")))
    noisy.keys[:, :, :written] = clean.keys[:, :, :written]
    noisy.values[:, :, :written] = clean.values[:, :, :written]
    q, k, v, batch = _step([1, 4, 1], cached=[written - PREFIX] * 3, slots=[0, 2, 4])
    expected = attend(q, k, v, clean, batch, DIM**-0.5, PREFIX)
    batch = AttentionBatch([0, 2, 4], [0, 1, 5], [1, 4, 1], [written - PREFIX] * 3, [0] * 3)
    out = attend(q, k, v, noisy, batch, DIM**-0.5, PREFIX)
    assert not out.isnan().any()
    assert torch.equal(out, expected)


@CACHE_DTYPES
def test_a_decode_rows_bits_do_not_depend_on_the_batch_or_the_threads(
    dtype: torch.dtype, threads: None
) -> None:
    cache, _ = _caches(dtype)
    q, k, v, batch = _step([1, 1, 1, 1], cached=[30, 3, 12, 40], slots=[0, 1, 2, 3])
    torch.set_num_threads(2)
    together = attend(q, k, v, cache, batch, DIM**-0.5, PREFIX)
    for i in range(4):
        alone_batch = AttentionBatch([batch.slot_ids[i]], [0], [1], [batch.cached_lens[i]], [0])
        torch.set_num_threads(1 + i % 2)
        alone = attend(q[i : i + 1], k[i : i + 1], v[i : i + 1], cache, alone_batch, DIM**-0.5,
                       PREFIX)  # fmt: skip
        assert torch.equal(alone[0], together[i]), i


def test_rms_norm_and_the_fused_residual_add_match_pytorch() -> None:
    torch.manual_seed(1)
    norm = RMSNorm(256, 1e-5)
    norm.weight.data = torch.randn(256)
    norm.weight.requires_grad_(False)  # as loaded for serving
    x, delta = torch.randn(7, 256), torch.randn(7, 256)
    expected = norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))
    fused = cpu_ops.rms_norm(x, norm.weight, 1e-5)
    assert fused is not None
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)
    total, normed = norm.add_forward(x, delta)
    assert torch.equal(total, x + delta)
    torch.testing.assert_close(normed, cpu_ops.rms_norm(x + delta, norm.weight, 1e-5))
    assert torch.equal(cpu_ops.rms_norm(x[2:3], norm.weight, 1e-5), fused[2:3])  # row alone
    assert cpu_ops.rms_norm(x.double(), norm.weight, 1e-5) is None  # PyTorch's then


def test_rotary_in_place_is_bit_identical_to_rotate_interleaved() -> None:
    torch.manual_seed(2)
    positions = torch.tensor([0, 5, 17, 300])
    cos, sin = rotary_cos_sin(positions, DIM // 2, 10000.0, torch.float32)  # half the head
    qkv = torch.randn(4, (HEADS + 2 * KV_HEADS) * DIM)
    heads = qkv[:, : (HEADS + KV_HEADS) * DIM].reshape(4, HEADS + KV_HEADS, DIM)
    expected = rotate_interleaved(heads, cos, sin)
    untouched = qkv[:, (HEADS + KV_HEADS) * DIM :].clone()
    assert cpu_ops.rotate_interleaved_(qkv, HEADS + KV_HEADS, DIM, cos, sin)
    assert torch.equal(qkv[:, : (HEADS + KV_HEADS) * DIM].reshape(4, -1, DIM), expected)
    assert torch.equal(qkv[:, (HEADS + KV_HEADS) * DIM :], untouched)  # v is not rotated


def test_silu_mul_matches_pytorch() -> None:
    torch.manual_seed(3)
    gate_up = torch.randn(5, 2 * 200) * 6  # large magnitudes: both tails of the sigmoid
    gate, up = gate_up.chunk(2, dim=-1)
    fused = cpu_ops.silu_mul(gate_up)
    assert fused is not None and fused.shape == (5, 200)
    torch.testing.assert_close(fused, F.silu(gate) * up, atol=1e-5, rtol=1e-5)
    assert torch.equal(cpu_ops.silu_mul(gate_up[1:2]), fused[1:2])


def test_argmax_rows_is_torchs_argmax_ties_nan_and_infinities_included() -> None:
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(16, 1003, generator=generator)[:, :1001]  # strided rows, a tail
    assert torch.equal(cpu_ops.argmax_rows(logits), logits.argmax(dim=-1))
    for dim in (1, 7, 8, 9, 17, 40):
        for case in range(12):
            x = torch.randint(-3, 3, (4, dim), generator=generator).float()  # many ties
            if case % 3 == 0:
                x[torch.rand(4, dim, generator=generator) < 0.2] = float("nan")
            if case % 4 == 0:
                x[torch.rand(4, dim, generator=generator) < 0.3] = float("inf")
            if case == 5:
                x[:] = float("-inf")
            assert torch.equal(cpu_ops.argmax_rows(x), x.argmax(dim=-1)), (dim, case)
    assert cpu_ops.argmax_rows(torch.randn(3, 8).t()) is None  # columns strided: PyTorch's


def test_the_kernels_stay_out_of_autograd() -> None:
    weight = torch.ones(16, requires_grad=True)
    x = torch.randn(2, 16, requires_grad=True)
    assert cpu_ops.rms_norm(x, weight, 1e-5) is None
    assert cpu_ops.rms_norm(x.detach(), weight, 1e-5) is None  # the weight is tracked
    assert cpu_ops.silu_mul(x) is None
    with torch.no_grad():
        assert cpu_ops.silu_mul(x) is not None


def test_int8_row_codes_and_scaling_give_pytorchs_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    from glm_api.quant import int8

    torch.manual_seed(4)
    x = torch.randn(6, 100) * torch.logspace(-3, 2, 6)[:, None]  # rows of very different size
    fused = cpu_ops.quantize_rows(x, 63.0, 1e-12)
    assert fused is not None
    codes, scales = fused
    expected_codes, expected_scales = int8.quantize_rows_int8(x)
    assert torch.equal(codes[1:], expected_codes) and torch.equal(scales, expected_scales)
    assert codes[0, 0] == 64 and bool((codes[0, 1:] == -63).all())  # the pin row
    acc, bias = torch.randn(7, 40), torch.randn(40)
    assert torch.equal(cpu_ops.scale_rows(acc, scales, bias), acc[1:] * scales + bias)
    assert torch.equal(cpu_ops.scale_rows(acc, scales, None), acc[1:] * scales)

    layer = int8.Int8Linear.from_linear(torch.nn.Linear(100, 40), torch.device("cpu"))
    with torch.no_grad():
        ours = layer(x)
        monkeypatch.setattr(cpu_ops, "quantize_rows", lambda *args: None)
        monkeypatch.setattr(cpu_ops, "scale_rows", lambda *args: None)
        assert torch.equal(layer(x), ours)  # the PyTorch path: the same bits


def test_bad_inputs_are_refused_or_made_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    cache, reference = _caches()
    # a NaN query: NaN out, as SDPA gives (not an average that hides it)
    q, k, v, batch = _step([1, 1], cached=[5, 9], slots=[0, 1])
    q[0] = float("nan")
    out = attend(q, k, v, cache, batch, DIM**-0.5, PREFIX)
    assert out[0].isnan().all() and not out[1].isnan().any()
    # a position past the cache: an error before anything is written, not a heap overrun
    q, k, v, batch = _step([1], cached=[CACHE_LEN - PREFIX], slots=[0])
    with pytest.raises(IndexError):
        attend(q, k, v, cache, batch, DIM**-0.5, PREFIX)
    # one cos row for four tokens, an odd gate/up width: PyTorch's code instead
    rows = torch.randn(4, 64)
    cos, sin = rotary_cos_sin(torch.tensor([3]), 16, 10000.0, torch.float32)
    assert not cpu_ops.rotate_interleaved_(rows, 2, 32, cos, sin)
    assert cpu_ops.silu_mul(torch.randn(2, 17)) is None
    # a NaN in a row makes its INT8 scale NaN, as torch's amax does
    x = torch.randn(2, 16)
    x[1, 3] = float("nan")
    fused = cpu_ops.quantize_rows(x, 63.0, 1e-12)
    assert fused is not None and fused[1][1].isnan().all() and not fused[1][0].isnan().any()
