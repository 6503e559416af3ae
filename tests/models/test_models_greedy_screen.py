"""The greedy screen (greedy_screen.py, cpu_greedy.c): the float32 argmax, to the id, from INT8.

Every argmax here is checked against the full float32 layer's logits and torch.argmax (ties
to the lowest id), on shapes with ragged panels, a vocabulary limit below the layer's rows,
exact ties, one-ulp near-ties and adversarial rows; the bound is checked where it is tight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from glm_api.config import EngineConfig
from glm_api.engine.async_engine import AsyncEngine
from glm_api.engine.request import SamplingParams
from glm_api.models import cpu_gemm, greedy_screen
from glm_api.models.greedy_screen import MAX_ROWS
from glm_api.models.loader import load_model
from glm_api.models.packed import PackedLinear, add_greedy_screen, greedy_ids

pytestmark = pytest.mark.skipif(cpu_gemm.load() is None, reason="our CPU kernels do not build here")


def screened_layer(weight: torch.Tensor) -> PackedLinear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    layer = PackedLinear(linear)
    assert layer.add_greedy_screen()
    return layer


def full_argmax(layer: PackedLinear, x: torch.Tensor, limit: int) -> list[int]:
    return layer(x)[:, :limit].argmax(dim=-1).tolist()


@pytest.fixture(scope="module")
def wide() -> PackedLinear:
    torch.manual_seed(0)
    weight = torch.randn(5003, 96) * 0.05  # 313 panels, the last holding 11 outputs
    weight[:, 7] *= 3  # a stronger input channel
    return screened_layer(weight)


@pytest.mark.parametrize("num_rows", [1, 2, 3, 4, 5, MAX_ROWS])
@pytest.mark.parametrize("limit", [5003, 4990, 17])
def test_every_row_gets_the_float32_argmax(wide: PackedLinear, num_rows: int, limit: int) -> None:
    generator = torch.Generator().manual_seed(num_rows * 1000 + limit)
    for scale in (1e-3, 1.0, 30.0):
        x = torch.randn(num_rows, 96, generator=generator) * scale
        x[:, 3] *= 50  # an outlier in the hidden state too
        ids = wide.greedy_argmax(x, limit)
        assert ids == full_argmax(wide, x, limit)


def row_error(screen: greedy_screen.GreedyScreen, x: torch.Tensor) -> torch.Tensor:
    """A row's quantization error d = x - t c, as cpu_greedy.c codes it (float64)."""
    scale = (x.abs().max() / screen.levels).double()  # t, divided in float32 as in C
    codes = torch.round(x.double() / scale).clamp(-screen.levels, screen.levels)
    return x.double() - codes * scale


def full_bound(screen: greedy_screen.GreedyScreen, x: torch.Tensor, limit: int) -> torch.Tensor:
    """B_j of one row (cpu_greedy.c), for its screened logits of the last call."""
    d, xd = row_error(screen, x[0]), x[0].double()
    outs = slice(0, limit)
    weights = torch.minimum(
        xd.norm() * screen.bounds[outs].double(), xd.abs().sum() * screen.max_errors[outs].double()
    )
    codes = torch.minimum(
        d.norm() * screen.norms2[outs].double(), d.abs().max() * screen.norms1[outs].double()
    )
    screened = screen.screened(1, limit)[0].double()
    return weights + codes + 4 * 2.0**-24 * screened.abs() + x.shape[1] * 1e-44


def test_screened_logits_stay_within_the_bound_where_it_is_tight(wide: PackedLinear) -> None:
    screen = wide.greedy_screen
    assert screen is not None
    plain = wide.plain_weight()  # (5003, 96)
    errors = screen.dequantized()[:5003] - plain.double()  # (5003, 96): s_j q_j - w_j
    for j in (0, 1234, 5002):
        x = errors[j].float()[None]  # Cauchy-Schwarz is tight along the error itself
        assert wide.greedy_argmax(x, 5003) == full_argmax(wide, x, 5003)
        gap = (screen.screened(1, 5003) - wide(x)).abs()[0].double()
        bound = full_bound(screen, x, 5003)
        assert bool((gap <= bound).all())
        assert float(gap[j] / bound[j]) > 0.9  # and nearly reached: the bound is not loose


def test_the_rows_own_codes_are_in_the_bound() -> None:
    """A row with one huge feature codes the others as 0: the bound's second term, which
    carries the row's quantization error, must hold the argmax (odd K: a padded pair)."""
    torch.manual_seed(4)
    weight = torch.randn(3001, 33) * 0.05
    layer = screened_layer(weight)
    screen = layer.greedy_screen
    assert screen is not None
    for big in (1e3, 1e5, 1e7):
        x = torch.randn(3, 33)
        x[:, 0] = big  # t = big / levels: every other feature rounds to code 0
        x[1, 0] = -big
        assert layer.greedy_argmax(x, 3001) == full_argmax(layer, x, 3001)
        gap = (screen.screened(1, 3001) - layer(x[:1])).abs()[0].double()
        assert bool((gap <= full_bound(screen, x[:1], 3001)).all())
    assert row_error(screen, x[0]).abs()[1:].max() > 0.5  # at 1e7 the small features: lost


def test_exact_ties_go_to_the_lowest_id_and_near_ties_are_decided_in_float32() -> None:
    torch.manual_seed(1)
    weight = torch.randn(800, 64) * 0.02
    x = torch.randn(1, 64)
    best = int((weight @ x[0]).argmax())
    weight[777] = weight[best]  # an exact tie after the best
    weight[3] = weight[best]  # and one before it: id 3 wins
    layer = screened_layer(weight)
    assert layer.greedy_argmax(x, 800) == full_argmax(layer, x, 800) == [3]
    # id 3 a hair (1e-5) below the others: far below the screen's resolution, decided in
    # float32: the best goes to the next tie, `best` itself
    nudged = weight.clone()
    nudged[3] *= 1 - 1e-5
    layer = screened_layer(nudged)
    assert layer.greedy_argmax(x, 800) == full_argmax(layer, x, 800) == [best]
    screen = layer.greedy_screen
    assert screen is not None
    screened = screen.screened(1, 800)[0]
    assert abs(float(screened[3] - screened[best])) < float(x.norm() * screen.bounds[3])


def test_rows_it_cannot_settle_are_left_to_the_full_logits() -> None:
    torch.manual_seed(2)
    layer = screened_layer(torch.randn(640, 32))
    x = torch.randn(2, 32)
    x[1, 5] = float("nan")
    assert layer.greedy_argmax(x, 640) == [full_argmax(layer, x[:1], 640)[0], None]
    x[1, 5] = float("inf")
    assert layer.greedy_argmax(x, 640)[1] is None
    many = torch.randn(MAX_ROWS + 3, 32)  # in two calls
    assert layer.greedy_argmax(many, 640) == full_argmax(layer, many, 640)
    same = screened_layer(torch.ones(640, 32))  # every id ties: all 40 panels qualify
    assert same.greedy_argmax(torch.randn(1, 32), 640) == [None]


def test_a_screen_too_coarse_to_settle_rows_turns_itself_off() -> None:
    torch.manual_seed(3)
    weight = torch.randn(5003, 96) * 0.05
    weight[:, 7] *= 40  # one input channel sets every row's scale: the other codes are coarse
    layer = screened_layer(weight)
    screen = layer.greedy_screen
    assert screen is not None
    for _ in range(greedy_screen.PROBATION):
        x = torch.randn(1, 96)
        ids = layer.greedy_argmax(x, 5003)
        assert ids is None or ids[0] is None or ids == full_argmax(layer, x, 5003)
    assert screen.num_fallbacks * 4 > greedy_screen.PROBATION
    assert not screen.enabled
    assert layer.greedy_argmax(torch.randn(1, 96), 5003) is None  # the full logits, at once


def test_only_a_float32_output_layer_on_our_kernel_gets_a_screen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_bias = PackedLinear(nn.Linear(16, 64))
    assert not with_bias.add_greedy_screen()
    assert greedy_ids(with_bias, torch.randn(1, 16), 64) is None
    broken = nn.Linear(16, 64, bias=False)
    with torch.no_grad():
        broken.weight[5, 5] = float("nan")
    assert not PackedLinear(broken).add_greedy_screen()
    assert not add_greedy_screen(nn.Linear(16, 64, bias=False))  # not packed
    monkeypatch.setenv("GLM_API_GREEDY_SCREEN", "0")
    assert not add_greedy_screen(PackedLinear(nn.Linear(16, 64, bias=False)))


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[int | None]]]:
    calls: list[list[int | None]] = []
    original = greedy_screen.GreedyScreen.argmax

    def argmax(self: greedy_screen.GreedyScreen, *args: object) -> list[int | None]:
        ids = original(self, *args)  # type: ignore[arg-type]
        calls.append(ids)
        return ids

    monkeypatch.setattr(greedy_screen.GreedyScreen, "argmax", argmax)
    yield calls


def served_ids(engine: AsyncEngine, prompts: list[list[int]], params: list[SamplingParams]):
    async def one(prompt: list[int], sampling: SamplingParams, request_id: str) -> list[int]:
        stream = engine.generate(prompt, sampling, request_id)
        return [i async for output in stream for i in output.new_token_ids]

    async def main() -> list[list[int]]:
        async with engine:
            jobs = (
                one(p, s, f"r{i}") for i, (p, s) in enumerate(zip(prompts, params, strict=True))
            )
            return list(await asyncio.gather(*jobs))

    return asyncio.run(main())


def test_the_engine_screens_plain_greedy_rows_and_gets_the_same_ids(
    counted: list[list[int | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = EngineConfig(max_num_seqs=4, max_model_len=96)
    prompts = [[1, 2, 3, 4, 5], [9, 8, 7], [4, 4, 4, 4], [11, 12]]
    params = [
        SamplingParams(temperature=0, max_tokens=12, ignore_eos=True),
        SamplingParams(temperature=0.8, seed=5, max_tokens=12, ignore_eos=True),
        SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=2),
        SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, repetition_penalty=1.3),
    ]
    loaded = load_model(None, config)
    with_screen = served_ids(AsyncEngine.from_loaded(loaded, config), prompts, params)
    assert counted, "the demo model's output layer is screened"
    assert all(len(ids) == 1 for ids in counted)  # the one plain greedy request, alone
    assert sum(ids != [None] for ids in counted) >= 10  # settled by the screen, mostly
    monkeypatch.setenv("GLM_API_GREEDY_SCREEN", "0")
    counted.clear()
    without = served_ids(AsyncEngine.from_loaded(load_model(None, config), config), prompts, params)
    assert not counted
    assert with_screen == without
