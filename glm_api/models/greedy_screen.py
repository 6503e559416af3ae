"""A greedy row's next id without every float32 logit: screened by INT8, exact (cpu_greedy.c).

One decoded token of a single stream reads every weight once, and the output layer is the
largest of them (vocabulary x hidden: 620 MB of the 0.6B GLM-4 benchmark model's 1.7 GB in
float32). A greedy row needs only the argmax of its logits. So the output layer keeps an
INT8 copy (a quarter of its bytes) next to its float32 panels: the copy screens every id,
against the row in int16 codes, with a proven bound on how far each screened logit can be
from the float32 one, and only the few panels of 16 ids whose bound reaches the best are
computed in float32, with the same kernel and so the same bits as the full layer. The id is
the float32 argmax, ties to the lowest id: greedy decoding gives the same tokens as without
the screen, to the id.

The bound's constants, for output j with weight w_j, int8 codes q_j and scale s_j
(w_j ~ s_j q_j), over K inputs, u = 2^-24 and g = K u / (1 - K u) (a chain of K fused
multiply-adds is within g * sum |x_k y_k| <= g |x| |y| of the exact dot product):

    c_j = |s_j q_j - w_j|_2 + g |w_j|_2 + (g + 2u) |s_j q_j|_2
    h_j = |s_j q_j - w_j|_inf + g |w_j|_inf + (g + 2u) |s_j q_j|_inf
    n_j = |s_j q_j|_2,  l_j = |s_j q_j|_1

(the quantization error by Cauchy-Schwarz or by Hoelder and the rounding of the float32
sum; n_j and l_j carry the row's own quantization, cpu_greedy.c), computed in float64,
widened by 0.1% and rounded up to float32. Cauchy-Schwarz is the tighter for a hidden state
spread over its features, Hoelder for one dominated by a few (the outlier features of real
models).

Where the bound is loose for a layer (an outlier input channel coarsens every int8 code of
the rows it is in), rows fall back to the full logits and the screen costs its read on top:
so after `PROBATION` rows, a screen that settled fewer than 3 in 4 turns itself off.

It serves rows of a float32 `PackedLinear` on our kernels, `MAX_ROWS` at a time; the
engine's runner sends it a step's greedy rows without penalties or logprobs. It pays at
every row count, not only where a step waits on memory: the int8 panels (16 KB at hidden
1024) stay in L1 while every row passes over them, where the float32 panels stream from L2.
Measured on GLM-4's 151,552 x 1024 output layer on the AVX2 (Zen 3) EPYC (2 threads, argmax
included): 6.1 ms against 21.6 for every logit at 1 row, 14 against 33 at 8, 27 against 48
at 16, 44 against 76 at 32.
"""

from __future__ import annotations

import ctypes
import logging
import threading

import torch

from glm_api.models import cpu_gemm, hugepages

PANEL = cpu_gemm.PANEL
MAX_ROWS = 64  # rows a call takes (cpu_greedy.c's MAX_M)
#: a row whose candidates fill more than this share of the panels is computed in full
MAX_PANEL_SHARE = 1 / 32
PROBATION = 64  # rows
_U = 2.0**-24

log = logging.getLogger("glm_api.models")


class GreedyScreen:
    """The INT8 copy of one output layer's float32 panels, with each output's bound."""

    def __init__(self, panels: torch.Tensor) -> None:
        num_panels, num_in, _ = panels.shape  # (ceil(N / 16), K, 16) float32
        self.num_in = num_in
        num_even = num_in + num_in % 2  # K2: pairs of k, the last padded with zeros
        #: the row codes' steps each side: integer sums of K2 products stay below 2^31
        self.levels = min(32767, (2**31 - 1) // (127 * num_even))
        # (ceil(N / 16), K2 / 2, 16, 2): 16 outputs x 2 k a line of 32 bytes, read every step
        self.codes = hugepages.empty((num_panels, num_even // 2, PANEL, 2), torch.int8)
        outs_total = num_panels * PANEL
        self.scales = torch.empty(outs_total, dtype=torch.float32)
        self.bounds = torch.empty(outs_total, dtype=torch.float32)
        self.max_errors = torch.empty(outs_total, dtype=torch.float32)
        self.norms2 = torch.empty(outs_total, dtype=torch.float32)
        self.norms1 = torch.empty(outs_total, dtype=torch.float32)
        gamma = num_in * _U / (1 - num_in * _U)
        max_norm = 0.0
        for part in cpu_gemm.blocks(num_panels, PANEL * num_in * 8):  # float64 temporaries
            outs = slice(part.start * PANEL, part.stop * PANEL)
            weight = panels[part].to(torch.float64)  # (num, K, 16)
            scale = (weight.abs().amax(dim=1) / 127).to(torch.float32)  # (num, 16)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # zero rows: codes 0
            codes = torch.round(weight / scale.to(torch.float64)[:, None]).clamp_(-127, 127)
            paired = torch.zeros(codes.shape[0], num_even, PANEL, dtype=torch.int8)
            paired[:, :num_in] = codes.to(torch.int8)
            self.codes[part] = paired.reshape(-1, num_even // 2, 2, PANEL).transpose(2, 3)
            self.scales[outs] = scale.reshape(-1)
            scaled = codes * scale.to(torch.float64)[:, None]  # s_j q_j, exact in float64
            weight_norm, scaled_norm = weight.norm(dim=1), scaled.norm(dim=1)  # (num, 16)
            error = scaled - weight
            bound = error.norm(dim=1) + gamma * weight_norm + (gamma + 2 * _U) * scaled_norm
            self.bounds[outs] = _round_up(bound.reshape(-1) * (1 + 1e-3))
            largest = (
                error.abs().amax(dim=1)
                + gamma * weight.abs().amax(dim=1)
                + (gamma + 2 * _U) * scaled.abs().amax(dim=1)
            )
            self.max_errors[outs] = _round_up(largest.reshape(-1) * (1 + 1e-3))
            self.norms2[outs] = _round_up(scaled_norm.reshape(-1) * (1 + 1e-3))
            self.norms1[outs] = _round_up(scaled.abs().sum(dim=1).reshape(-1) * (1 + 1e-3))
            max_norm = max(max_norm, float(weight_norm.max()), float(scaled_norm.max()))
        self.max_norm = max_norm
        self.max_panels = max(8, int(num_panels * MAX_PANEL_SHARE))
        self._scratch = torch.empty(0, dtype=torch.float32)  # grown to the rows asked
        self._lock = threading.Lock()  # one scratch buffer
        self.enabled = True
        self.num_settled = self.num_fallbacks = 0

    @staticmethod
    def usable(panels: torch.Tensor) -> bool:
        """Finite float32 weights: what the bound holds for."""
        return panels.dtype == torch.float32 and bool(torch.isfinite(panels).all())

    def argmax(
        self, library: ctypes.CDLL, rows: torch.Tensor, panels: torch.Tensor, limit: int
    ) -> list[int | None]:
        """Per row of `(M <= MAX_ROWS, K)` float32, the argmax of its first `limit` logits,
        or None where it must be computed from every logit (not finite, too many near-ties)."""
        num_rows = rows.shape[0]
        assert 1 <= num_rows <= MAX_ROWS and rows.shape[1] == self.num_in
        assert 0 < limit <= self.scales.shape[0]
        rows = rows.contiguous()
        ids = torch.empty(num_rows, dtype=torch.int64)
        with self._lock:
            needed = num_rows * self.scales.shape[0]
            if self._scratch.numel() < needed:
                self._scratch = torch.empty(needed, dtype=torch.float32)
            library.glm_greedy_f32(
                rows.data_ptr(), num_rows, self.num_in, panels.data_ptr(), self.codes.data_ptr(),
                self.scales.data_ptr(), self.bounds.data_ptr(), self.max_errors.data_ptr(),
                self.norms2.data_ptr(), self.norms1.data_ptr(), self.levels, self.max_norm,
                limit, self.max_panels, self._scratch.data_ptr(), ids.data_ptr(),
                torch.get_num_threads(),
            )  # fmt: skip
        found = [int(i) if i >= 0 else None for i in ids.tolist()]
        self._keep_score(found)
        return found

    def _keep_score(self, found: list[int | None]) -> None:
        fallbacks = found.count(None)
        self.num_fallbacks += fallbacks
        self.num_settled += len(found) - fallbacks
        total = self.num_settled + self.num_fallbacks
        if self.enabled and total >= PROBATION and self.num_fallbacks * 4 > total:
            self.enabled = False
            log.info(
                "greedy screen off: %d of %d rows needed every logit (a coarse INT8 copy)",
                self.num_fallbacks, total,
            )  # fmt: skip

    def screened(self, num_rows: int, limit: int) -> torch.Tensor:
        """The screened logits the last `argmax` left: `(num_rows, limit)` (for tests)."""
        width = -(-limit // PANEL) * PANEL
        return self._scratch[: num_rows * width].view(num_rows, width)[:, :limit].clone()

    def tensors(self) -> dict[str, torch.Tensor]:
        """What the screen holds, by name."""
        names = ("codes", "scales", "bounds", "max_errors", "norms2", "norms1")
        return {name: getattr(self, name) for name in names}

    def dequantized(self) -> torch.Tensor:
        """`(16 ceil(N / 16), K)` float64: s_j q_j, the weights the screen computes with."""
        num_panels, num_pairs = self.codes.shape[:2]
        codes = self.codes.transpose(2, 3).reshape(num_panels, num_pairs * 2, PANEL)
        plain = codes.transpose(1, 2).reshape(num_panels * PANEL, -1)[:, : self.num_in]
        return plain.double() * self.scales[:, None].double()

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())


def _round_up(values: torch.Tensor) -> torch.Tensor:
    """float64 -> the float32 values at or above them."""
    narrow = values.to(torch.float32)
    below = narrow.to(torch.float64) < values
    return torch.where(below, torch.nextafter(narrow, torch.tensor(float("inf"))), narrow)
