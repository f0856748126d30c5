"""The orthogonal wavelet transform of survey.solvers.wavelets as small dense matrix products per level.

`Wavelet2D` runs each level as a few small convolutions, crops, paddings and concatenations; at the
sizes the reference solves (64 x 64, batches of a few to tens) those calls cost far more than their
arithmetic. One periodised analysis level of an h x w block X is separable: X -> A_h X A_w^T with A_h the
orthogonal h x h matrix of the 1-D single-level transform (low-pass outputs in its first h / 2 rows,
high-pass in the rest, PyWavelets' `dwt(..., mode="periodization")` column by column), which puts the four
sub-bands in the Mallat layout of `Wavelet2D`. The multilevel transform repeats it on the top-left block,
so `MatrixWavelet` needs 2 batched matrix products per level and computes the same map (to rounding;
tests/test_wavelet_matrix.py). Autograd passes through it (the unrolled cross-check differentiates it).

The dense products cost O(n^3) per image against the convolutions' O(n^2); above `MAX_SIDE` pixels a side
`MatrixWavelet` falls back to `Wavelet2D` itself.
"""

from __future__ import annotations

import pywt
import torch

from survey.solvers.wavelets import Wavelet2D

#: Largest image side for which the transform runs as dense per-level products (larger: Wavelet2D).
MAX_SIDE = 128
_CACHE: dict = {}


def level_matrix(wavelet: str, length: int) -> torch.Tensor:
    """The 1-D single-level periodised analysis matrix (length x length, float64): column j is
    [cA; cD] of `pywt.dwt(e_j, wavelet, mode="periodization")`."""
    out = torch.zeros(length, length, dtype=torch.float64)
    for j in range(length):
        unit = [0.0] * length
        unit[j] = 1.0
        low, high = pywt.dwt(unit, wavelet, mode="periodization")
        out[: length // 2, j] = torch.tensor(low, dtype=torch.float64)
        out[length // 2:, j] = torch.tensor(high, dtype=torch.float64)
    return out


def matrices(wavelet: Wavelet2D, shape: tuple[int, int], dtype: torch.dtype, device) -> list:
    """Per level l = 0 .. levels-1, the cached (A_rows, A_cols) pair for the (n / 2^l, m / 2^l) block."""
    key = (wavelet.wavelet, wavelet.levels, tuple(shape), dtype, str(torch.device(device)))
    if key not in _CACHE:
        wavelet._check(torch.empty(*shape))
        _CACHE[key] = [tuple(level_matrix(wavelet.wavelet, side >> level).to(device=device, dtype=dtype)
                             for side in shape) for level in range(wavelet.levels)]
    return _CACHE[key]


def _replace_block(out: torch.Tensor, fn, h: int, w: int) -> torch.Tensor:
    """out with its top-left (h, w) block replaced by fn(block): in place without autograd (out must be
    a tensor the caller owns), by concatenation when out needs a gradient."""
    if not out.requires_grad:
        out[..., :h, :w] = fn(out[..., :h, :w])
        return out
    top = torch.cat([fn(out[..., :h, :w]), out[..., :h, w:]], dim=-1)
    return torch.cat([top, out[..., h:, :]], dim=-2)


class MatrixWavelet:
    """W and W^T of `wavelet` on real (B, 1, n, m) images as per-level matrix products (same values and
    Mallat layout as `Wavelet2D`; Wavelet2D itself when a side exceeds MAX_SIDE)."""

    def __init__(self, wavelet: Wavelet2D, shape: tuple[int, int], dtype: torch.dtype, device):
        self.wavelet, self.shape = wavelet, tuple(shape)
        self.dense = max(self.shape) <= MAX_SIDE
        if self.dense:
            self.levels = matrices(wavelet, self.shape, dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """W x, coefficients in the Mallat layout, (B, 1, n, m)."""
        if not self.dense:
            return self.wavelet(x)
        rows, cols = self.levels[0]
        out = rows @ x @ cols.T
        for rows, cols in self.levels[1:]:
            out = _replace_block(out, lambda block, rows=rows, cols=cols: rows @ block @ cols.T, rows.shape[0],
                                 cols.shape[0])
        return out

    def inverse(self, c: torch.Tensor) -> torch.Tensor:
        """W^T c = W^{-1} c, (B, 1, n, m)."""
        if not self.dense:
            return self.wavelet.inverse(c)
        out = c.clone() if len(self.levels) > 1 and not c.requires_grad else c
        for rows, cols in reversed(self.levels[1:]):
            out = _replace_block(out, lambda block, rows=rows, cols=cols: rows.T @ block @ cols, rows.shape[0],
                                 cols.shape[0])
        rows, cols = self.levels[0]
        return rows.T @ out @ cols

    __call__ = forward


__all__ = ["MAX_SIDE", "MatrixWavelet", "level_matrix", "matrices"]
