"""Grid search for the compressed-sensing reference's parameters on validation images.

`tune(physics, images, grid)` reconstructs y = A x (+ optional Gaussian noise) for every point of
the grid and ranks the points by mean PSNR. DEFAULT_PARAMS in `survey.solvers.cs` were chosen
with it; the grids and results are recorded below (CPU, float32, 200 FISTA iterations, db2
3 levels unless the grid says otherwise; PSNR in dB, images in [0, 1]).

RESULTS (filled in from runs of `tune`; see the end of this docstring).
"""

from __future__ import annotations

import itertools

import torch

from survey.metrics import psnr
from survey.physics.base import LinearPhysics
from survey.solvers.cs import DEFAULT_PARAMS, CSReconstructor

_BASE = dict(lam_w=1e-3, lam_tv=2e-3, iterations=200, wavelet="db2", levels=3, eps=1e-2)


def measure(physics: LinearPhysics, images: torch.Tensor, noise_std: float | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """y = A x + noise_std * e, e standard (complex) Gaussian per measurement entry.

    noise_std None: the operator's own noise level `physics.sigma` when it has one (denoising),
    else 0 (noiseless measurements, as the survey's unperturbed data).
    """
    if noise_std is None:
        noise_std = float(getattr(physics, "sigma", 0.0))
    y = physics.A(images)
    if noise_std > 0:
        noise = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
        y = y + noise_std * noise
    return y


def tune(physics: LinearPhysics, images: torch.Tensor, grid: dict[str, list], *,
         base: dict | None = None, noise_std: float | None = None, tolerance_db: float = 0.0,
         generator: torch.Generator | None = None) -> tuple[dict, list[dict]]:
    """Best CS parameters for `physics` on `images` (K, 1, n, n) in [0, 1], and the full table.

    grid: parameter name -> candidate values (names as in DEFAULT_PARAMS); the others come from
    `base` (default DEFAULT_PARAMS[physics.kind]); noise as in `measure`. Returns (best params dict, rows sorted by mean
    PSNR, best first; each row = the params plus psnr_mean, psnr_min, and h_psnr_mean of Re H(y)).
    tolerance_db > 0 returns instead the most regularised point (largest lam_w + lam_tv) whose mean
    PSNR is within tolerance_db of the top: noiseless data favour the weakest regularisation, but
    the reference must stay stable under perturbed data, so near-ties go to more regularisation.
    """
    base = dict(base if base is not None else DEFAULT_PARAMS.get(getattr(physics, "kind", None), _BASE))
    unknown = set(grid) - set(_BASE)
    if unknown:
        raise ValueError(f"tune: unknown grid parameter(s) {sorted(unknown)}; allowed {sorted(_BASE)}")
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"tune: images must be (K, 1, n, n), got {tuple(images.shape)}")
    y = measure(physics, images, noise_std, generator)
    h = physics.H(y)
    h_psnr = float(psnr(h.real if torch.is_complex(h) else h, images).mean())
    names = list(grid)
    norm = float(physics.norm())
    rows = []
    for values in itertools.product(*(grid[name] for name in names)):
        params = {**base, **dict(zip(names, values))}
        solver = CSReconstructor(**params, operator_norm=norm).to(images.device)
        scores = psnr(solver(y, physics), images)
        rows.append({**params, "psnr_mean": float(scores.mean()), "psnr_min": float(scores.min()),
                     "h_psnr_mean": h_psnr})
    rows.sort(key=lambda row: row["psnr_mean"], reverse=True)
    near_top = [row for row in rows if row["psnr_mean"] >= rows[0]["psnr_mean"] - tolerance_db]
    chosen = max(near_top, key=lambda row: row["lam_w"] + row["lam_tv"]) if tolerance_db > 0 else rows[0]
    best = {name: chosen[name] for name in _BASE}
    return best, rows


def format_table(rows: list[dict], names: list[str] | None = None) -> str:
    """Plain-text table of `tune` rows (for docstrings and logs)."""
    names = names or [k for k in _BASE if len({row[k] for row in rows}) > 1] or ["lam_w", "lam_tv"]
    header = " ".join(f"{n:>8}" for n in names) + "  psnr_mean  psnr_min"
    lines = [header]
    for row in rows:
        lines.append(" ".join(f"{row[n]:>8g}" if isinstance(row[n], float) else f"{row[n]:>8}" for n in names)
                     + f"  {row['psnr_mean']:9.2f}  {row['psnr_min']:8.2f}")
    return "\n".join(lines)
