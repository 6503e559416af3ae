"""Pooling: hidden states of one batch -> one vector per sequence.

Reproduces sentence-transformers' `Pooling` module modes (cls, max, mean, mean_sqrt_len,
lasttoken); several modes concatenate in sentence-transformers' order. Which modes a model
uses is read from its folder (folder.py), never decided here.
"""

from __future__ import annotations

from enum import Enum

import torch


class PoolingMode(str, Enum):
    CLS = "cls"
    MAX = "max"
    MEAN = "mean"
    MEAN_SQRT_LEN = "mean_sqrt_len"
    LAST_TOKEN = "lasttoken"


#: sentence-transformers' `1_Pooling/config.json` flag for each mode, in its concat order
POOLING_FLAGS: dict[PoolingMode, str] = {
    PoolingMode.CLS: "pooling_mode_cls_token",
    PoolingMode.MAX: "pooling_mode_max_tokens",
    PoolingMode.MEAN: "pooling_mode_mean_tokens",
    PoolingMode.MEAN_SQRT_LEN: "pooling_mode_mean_sqrt_len_tokens",
    PoolingMode.LAST_TOKEN: "pooling_mode_lasttoken",
}


def pool_one(hidden: torch.Tensor, mask: torch.Tensor, mode: PoolingMode) -> torch.Tensor:
    """(batch, seq, hidden) states and (batch, seq) 1/0 mask -> (batch, hidden)."""
    weights = mask.to(hidden.dtype)[:, :, None]  # (batch, seq, 1)
    if mode is PoolingMode.CLS:
        return hidden[:, 0]
    if mode is PoolingMode.MAX:
        return hidden.masked_fill(weights == 0, -1e9).max(dim=1).values
    if mode is PoolingMode.LAST_TOKEN:
        last = mask.sum(dim=1).long() - 1  # (batch,) index of each row's last real token
        return hidden[torch.arange(hidden.shape[0]), last]
    total = (hidden * weights).sum(dim=1)  # (batch, hidden)
    counts = weights.sum(dim=1).clamp(min=1e-9)  # (batch, 1)
    if mode is PoolingMode.MEAN:
        return total / counts
    return total / counts.sqrt()


def pool(hidden: torch.Tensor, mask: torch.Tensor, modes: tuple[PoolingMode, ...]) -> torch.Tensor:
    """All `modes` concatenated: (batch, hidden * len(modes))."""
    return torch.cat([pool_one(hidden, mask, mode) for mode in modes], dim=-1)
