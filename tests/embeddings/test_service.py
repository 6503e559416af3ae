"""EmbeddingService with the real default model (all-MiniLM-L6-v2) and tiny random folders."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from embedding_folders import write_bge_folder

from glm_api.embeddings.base import EmbeddingResult
from glm_api.embeddings.folder import bundled_model_folder
from glm_api.embeddings.model import EmbeddingModel
from glm_api.embeddings.service import EmbeddingService
from glm_api.engine.errors import InvalidRequestError

SENTENCES = ["How do I bake bread?", "a simple bread recipe", "stock market news"]


def embed(service: EmbeddingService, inputs: list, **kwargs: object) -> EmbeddingResult:
    return asyncio.run(service.embed(inputs, **kwargs))  # type: ignore[arg-type]


def test_default_model_info(minilm: EmbeddingService) -> None:
    assert minilm.default_model == "all-MiniLM-L6-v2"
    (info,) = minilm.models()
    assert (info.name, info.dimension, info.max_input_tokens) == ("all-MiniLM-L6-v2", 384, 256)
    assert (info.is_normalized, info.can_shorten, info.languages, info.pooling) == (
        True,
        False,
        "en",
        "mean",
    )


def test_vectors_are_unit_384_and_match_sentence_transformers(minilm: EmbeddingService) -> None:
    import sentence_transformers as st  # a test dependency: the reference

    texts = [*SENTENCES, "Ünïcödé, 中文 and punctuation!!", "x"]
    result = embed(minilm, texts)
    assert result.model == "all-MiniLM-L6-v2"
    assert [len(v) for v in result.vectors] == [384] * len(texts)
    for vector in result.vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, abs_tol=1e-5)
    reference = st.SentenceTransformer(str(bundled_model_folder()), device="cpu")
    expected = reference.encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(torch.tensor(result.vectors), expected, atol=1e-5, rtol=0)
    # num_tokens counts every real token fed, [CLS] and [SEP] included
    assert result.num_tokens == int(reference.tokenize(texts)["attention_mask"].sum())


def test_bread_question_is_closest_to_the_recipe(minilm: EmbeddingService) -> None:
    question, recipe, news = (torch.tensor(v) for v in embed(minilm, SENTENCES).vectors)
    assert float(question @ recipe) > float(question @ news) + 0.3


def test_token_id_input_equals_text_input(minilm: EmbeddingService) -> None:
    model = minilm._model(None)
    ids = model.tokenizer.encode_bare("How do I bake bread?")
    assert ids == [2129, 2079, 1045, 8670, 3489, 7852, 1029]  # how do i ba ##ke bread ?
    by_ids, by_text = embed(minilm, [ids]), embed(minilm, ["How do I bake bread?"])
    assert by_ids.num_tokens == by_text.num_tokens == 9
    torch.testing.assert_close(torch.tensor(by_ids.vectors), torch.tensor(by_text.vectors))


@pytest.mark.parametrize(
    ("inputs", "kwargs", "param", "message"),
    [
        ([], {}, "input", "input must not be empty"),
        (["ok", ""], {}, "input", "input[1] is empty"),
        ([[101], []], {}, "input", "input[1] is empty"),
        (["a"] * 2049, {}, "input", "2049 items, more than the 2048"),
        (["bread " * 300], {}, "input", "input[0] has 302 tokens, more than the 256"),
        ([[5, 40000]], {}, "input", "token id 40000, outside the vocabulary"),
        (["ok", [5]], {}, "input", "input[0] must be a string or a list of token ids"),
        (["ok"], {"dimensions": 128}, "dimensions", "does not support shortening"),
    ],
)
def test_bad_requests_are_invalid_request_errors(
    minilm: EmbeddingService, inputs: list, kwargs: dict, param: str, message: str
) -> None:
    with pytest.raises(InvalidRequestError) as error:
        embed(minilm, inputs, **kwargs)
    assert error.value.param == param
    assert message in str(error.value)


def test_unknown_model_is_a_key_error(minilm: EmbeddingService) -> None:
    with pytest.raises(KeyError) as error:
        embed(minilm, ["hi"], model="text-embedding-3-small")
    assert error.value.args == ("text-embedding-3-small",)


def test_truncate_cuts_to_the_model_limit_like_sentence_transformers(
    minilm: EmbeddingService,
) -> None:
    import sentence_transformers as st

    long_text = "bread and butter " * 100
    result = embed(minilm, [long_text], truncate=True)
    assert result.num_tokens == 256
    reference = st.SentenceTransformer(str(bundled_model_folder()), device="cpu")
    expected = reference.encode([long_text], convert_to_tensor=True)
    torch.testing.assert_close(torch.tensor(result.vectors), expected, atol=1e-5, rtol=0)


def test_concurrent_calls_share_forwards_on_the_worker_thread(
    minilm: EmbeddingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [f"sentence number {i} about {'bread ' * (i % 7)}" for i in range(20)]
    alone = [embed(minilm, [text]).vectors[0] for text in texts]
    threads: set[str] = set()
    original = EmbeddingModel.embed_ids

    def recording(self: EmbeddingModel, sequences: list[list[int]]) -> torch.Tensor:
        threads.add(threading.current_thread().name)
        return original(self, sequences)

    monkeypatch.setattr(EmbeddingModel, "embed_ids", recording)

    async def burst() -> list[EmbeddingResult]:
        return await asyncio.gather(*(minilm.embed([text]) for text in texts))

    before = minilm.num_forwards
    results = asyncio.run(burst())
    # All 20 tokenizations are queued on the one worker thread before any forward, so the
    # calls land in at most two forwards (those collected in the window, then the rest).
    assert minilm.num_forwards - before <= 2
    assert threads == {"glm-embed_0"}
    got = torch.tensor([r.vectors[0] for r in results])
    torch.testing.assert_close(got, torch.tensor(alone), atol=1e-5, rtol=0)


def test_several_models_and_matryoshka_dimensions(tmp_path: Path, text2vec_folder: Path) -> None:
    mrl = write_bge_folder(tmp_path / "bge-mrl", matryoshka=True)
    service = EmbeddingService.from_specs([str(text2vec_folder), f"mrl={mrl}"])
    try:
        assert service.default_model == "text2vec-tiny"
        assert [info.name for info in service.models()] == ["text2vec-tiny", "mrl"]
        full = embed(service, ["the cat sat"], model="mrl").vectors[0]
        short = embed(service, ["the cat sat"], model="mrl", dimensions=8).vectors[0]
        expected = torch.nn.functional.normalize(torch.tensor(full[:8]), dim=0)
        torch.testing.assert_close(torch.tensor(short), expected, atol=1e-6, rtol=0)
        with pytest.raises(InvalidRequestError, match="between 1 and 32"):
            embed(service, ["the cat sat"], model="mrl", dimensions=33)
        assert len(embed(service, ["the cat sat"]).vectors[0]) == 32
    finally:
        service.close()


def test_default_loads_offline_without_transformers() -> None:
    script = (
        "import asyncio, sys\n"
        "from glm_api.embeddings.service import EmbeddingService\n"
        "service = EmbeddingService.from_specs([])\n"
        "result = asyncio.run(service.embed(['hello']))\n"
        "assert len(result.vectors[0]) == 384\n"
        "print(sorted(m for m in ('transformers', 'sentence_transformers') if m in sys.modules))\n"
    )
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_dimensions_equal_to_the_models_own_size_are_the_plain_vectors(
    minilm: EmbeddingService,
) -> None:
    plain = embed(minilm, ["the cat sat"]).vectors[0]
    native = embed(minilm, ["the cat sat"], dimensions=384).vectors[0]
    assert len(native) == 384 and native == plain  # not shortened, not renormalized
