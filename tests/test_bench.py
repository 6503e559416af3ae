"""`glm-api bench`'s prompts and its loopback guard (the load itself is run by bench/)."""

from __future__ import annotations

import pytest

from glm_api.bench import check_loopback, make_prompt


def test_prompts_are_fixed_by_seed_and_index_and_never_repeat() -> None:
    assert make_prompt(16, 3, 7) == make_prompt(16, 3, 7)  # the same run, the same text
    assert len(make_prompt(16, 3, 7).split()) == 16
    prompts = {make_prompt(16, seed, index) for seed in range(4) for index in range(64)}
    assert len(prompts) == 4 * 64  # a prefix cache would see none of them twice
    firsts = {make_prompt(16, seed, index).split()[0] for seed in range(4) for index in range(64)}
    assert len(firsts) > 10  # they differ from the first word: no shared prefix to reuse


def test_load_goes_to_loopback_only() -> None:
    check_loopback("http://127.0.0.1:8000")
    check_loopback("http://localhost:8000")
    with pytest.raises(ValueError, match="loopback"):
        check_loopback("http://example.com:8000")
