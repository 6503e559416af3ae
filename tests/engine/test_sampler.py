"""Sampler: greedy, penalties (exact values), top-k/top-p masks, seeds, min_tokens, logprobs."""

from __future__ import annotations

import math

import pytest
import torch
from engine_fakes import make_request

from glm_api.engine.sampler import Sampler, SamplingRow


def row(
    request_id: str = "r",
    prompt: list[int] | None = None,
    output: list[int] | None = None,
    seed: int | None = None,
    **params: object,
) -> SamplingRow:
    request = make_request(request_id, prompt or [0], **params)  # type: ignore[arg-type]
    request.output_ids = list(output or [])
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return SamplingRow(request, generator)


def test_greedy_is_argmax_per_row() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, -1.0, 4.9]])
    ids, logprobs = Sampler()(logits, [row("a"), row("b")])
    assert ids == [1, 0] and logprobs == [None, None]


def test_repetition_penalty_divides_positive_and_multiplies_negative() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0, 1.0])
    request = row(prompt=[0], output=[1, 0], repetition_penalty=2.0).request
    Sampler._apply_penalties(logits, request)
    assert logits.tolist() == [1.0, -2.0, 0.5, 3.0, 1.0]


def test_presence_and_frequency_penalties_follow_openai() -> None:
    logits = torch.zeros(4)
    request = row(
        prompt=[3, 3], output=[2, 2, 1], presence_penalty=1.0, frequency_penalty=0.5
    ).request
    Sampler._apply_penalties(logits, request)
    # id 2: 2 * 0.5 + 1.0; id 1: 0.5 + 1.0; the prompt's id 3 is not penalised
    assert logits.tolist() == [0.0, -1.5, -2.0, 0.0]


def test_min_tokens_masks_stop_ids_until_reached() -> None:
    logits = torch.tensor([[9.0, 1.0, 2.0], [9.0, 1.0, 2.0]])
    early = row("early", output=[2], min_tokens=2, stop_ids=frozenset({0}))
    done = row("done", output=[2, 2], min_tokens=2, stop_ids=frozenset({0}))
    ids, _ = Sampler()(logits, [early, done])
    assert ids == [2, 0]


def test_top_k_and_top_p_keep_only_the_best_ids() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()
    seen_k: set[int] = set()
    seen_p: set[int] = set()
    top_k = row(seed=1, temperature=1.0, top_k=2)
    top_p = row(seed=2, temperature=1.0, top_p=0.7)
    for _ in range(200):
        seen_k.update(Sampler()(logits.clone()[None], [top_k])[0])
        seen_p.update(Sampler()(logits.clone()[None], [top_p])[0])
    assert seen_k == {0, 1} and seen_p == {0, 1}


@pytest.mark.parametrize("top_p", [0.85, 0.999])
def test_top_p_on_a_large_vocabulary_matches_a_full_sort(top_p: float) -> None:
    # 0.85: the nucleus is among the probed best ids; 0.999: it needs the full sort
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1000, generator=generator) * 0.5
    logits[:3] = torch.tensor([12.0, 11.5, 11.0])
    probs = torch.softmax(logits, dim=-1)
    ordered, order = torch.sort(probs, descending=True)
    preceding = torch.cumsum(ordered, dim=0) - ordered
    allowed = set(order[preceding < top_p].tolist())
    sampling = row(seed=3, temperature=1.0, top_p=top_p)
    drawn = {Sampler()(logits.clone()[None], [sampling])[0][0] for _ in range(100)}
    assert drawn <= allowed and len(drawn) >= 2


def test_a_seed_draws_the_same_ids_in_any_batch() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=generator)

    def draws(batch: list[int]) -> list[int]:
        rows = [row(f"r{i}", seed=i + 10, temperature=0.9, top_p=0.95) for i in batch]
        rows[0] = row("seeded", seed=1234, temperature=0.9, top_p=0.95)
        out = []
        for _ in range(10):
            ids, _ = Sampler()(logits[batch].clone(), rows)
            out.append(ids[0])
        return out

    assert draws([0]) == draws([0, 1, 2]) == draws([0, 2])


def test_logprobs_come_from_the_raw_logits() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    expected = torch.log_softmax(logits[0], dim=-1)
    sampling = row(output=[1], repetition_penalty=10.0, logprobs=2)
    ids, logprobs = Sampler()(logits.clone(), [sampling])
    assert ids == [2]  # the penalty moved the choice off id 1
    entry = logprobs[0]
    assert entry is not None and entry.token_id == 2
    assert entry.logprob == pytest.approx(float(expected[2]), abs=1e-6)
    assert [i for i, _ in entry.top] == [1, 2]
    assert entry.top[0][1] == pytest.approx(float(expected[1]), abs=1e-6)
    assert math.fsum(math.exp(v) for v in expected.tolist()) == pytest.approx(1.0)
