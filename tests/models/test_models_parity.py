"""Parity with transformers' GlmForCausalLM / Glm4ForCausalLM, and batch invariance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers  # a test dependency: parity with it is the point

from glm_api.config import EngineConfig
from glm_api.models import cpu_kernels
from glm_api.models.loader import load_weights
from tests.helpers.checkpoints import write_checkpoint
from tests.models.model_steps import make_caches, run_batch, run_steps

PROMPT = [151331, 151333, 151336, 9703, 3837, 151337]
DECODE = [1046, 99, 151329]


@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")
@pytest.mark.parametrize(
    ("layout", "reference"), [("glm4-hf", "GlmForCausalLM"), ("glm4-0414", "Glm4ForCausalLM")]
)
@pytest.mark.parametrize("kernels", ["ours", "pytorch"])  # our C kernels where they run, or not
def test_logits_equal_transformers(
    assets: Path,
    tmp_path: Path,
    layout: str,
    reference: str,
    kernels: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if kernels == "pytorch":
        monkeypatch.setattr(cpu_kernels, "load", lambda: None)
    folder = write_checkpoint(layout, tmp_path, assets, seed=3, with_tokenizer=False)
    ours = load_weights(folder, EngineConfig(), torch.device("cpu"), torch.float32)
    theirs = getattr(transformers, reference).from_pretrained(folder, dtype=torch.float32).eval()
    steps = [PROMPT] + [[token] for token in DECODE]
    our_logits = [ours.compute_logits(h) for h in run_steps(ours, steps)]
    with torch.no_grad():
        out = theirs(input_ids=torch.tensor([PROMPT]), use_cache=True)
        their_logits, cache = [out.logits[0]], out.past_key_values
        for token in DECODE:
            out = theirs(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True)
            their_logits.append(out.logits[0])
            cache = out.past_key_values
    for mine, reference_logits in zip(our_logits, their_logits, strict=True):
        assert mine.shape == reference_logits.shape
        assert (mine - reference_logits.float()).abs().max().item() < 1e-4


@pytest.mark.parametrize(
    ("layout", "first", "second"),
    [
        ("glm4-0414", PROMPT, [151331, 151333, 151336, 42]),
        ("chatglm-6b", [5, 6, 130001, 130004, 20], [7, 130001, 130004]),
    ],
)
def test_two_sequences_in_one_batch_match_each_alone(
    assets: Path, tmp_path: Path, layout: str, first: list[int], second: list[int]
) -> None:
    folder = write_checkpoint(layout, tmp_path, assets, with_tokenizer=False)
    model = load_weights(folder, EngineConfig(), torch.device("cpu"), torch.float32)
    bidi = [model.bidirectional_len(first), model.bidirectional_len(second)]
    alone = [
        run_batch(model, make_caches(model), [(0, ids, 0, b)])[0]
        for ids, b in zip((first, second), bidi, strict=True)
    ]
    caches = make_caches(model)
    together = run_batch(model, caches, [(0, first, 0, bidi[0]), (1, second, 0, bidi[1])])
    for a, t in zip(alone, together, strict=True):
        assert torch.allclose(a, t, atol=1e-6, rtol=0)
    # then one decode step for both at once, against decoding each alone
    step = run_batch(
        model, caches, [(0, [42], len(first), bidi[0]), (1, [43], len(second), bidi[1])]
    )
    for slot, (ids, token, b) in enumerate(zip((first, second), (42, 43), bidi, strict=True)):
        single = make_caches(model)
        run_batch(model, single, [(slot, ids, 0, b)])
        expected = run_batch(model, single, [(slot, [token], len(ids), b)])[0]
        assert torch.allclose(step[slot], expected, atol=1e-6, rtol=0)
