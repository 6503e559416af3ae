"""The BERT encoder: parity with transformers' BertModel on random weights; loud loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from embedding_folders import random_state_dict, write_text2vec_folder
from safetensors.torch import save_file

from glm_api.embeddings.bert import load_bert_encoder


def test_matches_transformers_bert_on_padded_batch(text2vec_folder: Path) -> None:
    import transformers  # a test dependency: the reference

    reference = transformers.BertModel.from_pretrained(str(text2vec_folder)).eval()
    ours = load_bert_encoder(text2vec_folder)
    ids = torch.tensor([[2, 5, 6, 7, 8, 3], [2, 9, 10, 3, 0, 0]])  # (batch, seq)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    with torch.inference_mode():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask)
    assert got.shape == (2, 6, 32)
    real = mask.bool()  # padded rows differ by design; real tokens must agree
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=0)


def test_padding_does_not_change_real_tokens(text2vec_folder: Path) -> None:
    encoder = load_bert_encoder(text2vec_folder)
    with torch.inference_mode():
        alone = encoder(torch.tensor([[2, 9, 10, 3]]), torch.ones(1, 4, dtype=torch.long))
        padded = encoder(torch.tensor([[2, 9, 10, 3, 0, 0, 0]]), torch.tensor([[1] * 4 + [0] * 3]))
    torch.testing.assert_close(padded[:, :4], alone, atol=1e-6, rtol=0)


def test_plain_and_prefixed_names_load_the_same(tmp_path: Path) -> None:
    prefixed = write_text2vec_folder(tmp_path / "prefixed", seed=3)
    plain = write_text2vec_folder(tmp_path / "plain", seed=3)
    (plain / "pytorch_model.bin").unlink()
    state = random_state_dict(3)
    # old TF-era LayerNorm names (gamma/beta) are accepted too
    state = {
        name.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): t
        for name, t in state.items()
    }
    save_file(state, str(plain / "model.safetensors"))
    a, b = load_bert_encoder(prefixed), load_bert_encoder(plain)
    for (name_a, param_a), (name_b, param_b) in zip(
        a.state_dict().items(), b.state_dict().items(), strict=True
    ):
        assert name_a == name_b
        assert torch.equal(param_a, param_b)


def test_missing_weights_are_named(text2vec_folder: Path) -> None:
    checkpoint = torch.load(text2vec_folder / "pytorch_model.bin", weights_only=True)
    del checkpoint["bert.encoder.layer.1.output.dense.weight"]
    checkpoint["bert.encoder.layer.9.mystery"] = torch.zeros(1)
    torch.save(checkpoint, text2vec_folder / "pytorch_model.bin")
    with pytest.raises(ValueError) as error:
        load_bert_encoder(text2vec_folder)
    message = str(error.value)
    assert "missing weights: ['encoder.layer.1.output.dense.weight']" in message
    assert "unexpected weights: ['bert.encoder.layer.9.mystery']" in message


def test_no_weights_file_is_a_clear_error(text2vec_folder: Path) -> None:
    (text2vec_folder / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor pytorch_model.bin"):
        load_bert_encoder(text2vec_folder)
