"""Grid search for the compressed-sensing reference's parameters on validation images.

`tune(physics, images, grid)` reconstructs y = A x (+ optional Gaussian noise) for every point of
the grid and ranks the points by mean PSNR. The operators' `reference_defaults` (survey.physics)
were chosen with it, with tolerance_db=0.2 (the most regularised point within 0.2 dB of the best: noiseless data
reward the weakest regularisation, but the reference must stay stable under perturbed data).

Setup: 8 slices of `load_dataset("brain", split="val", size=64)` (z026, z041, ..., z131), float32,
200 FISTA iterations (converged: the objective changes < 0.05% from 200 to 1500 iterations),
db2 with 3 levels. Grids (PSNR in dB, mean over the 8 slices; lam relative to ||A||^2):

- mri, 25% gaussian-lines, seed 0, noiseless; zero-filled 24.07. Grid lam_w {0, 1e-4, 3e-4, 1e-3}
  x lam_tv {3e-4, 1e-3, 3e-3} x eps {3e-3, 1e-2}. Top: (0, 3e-4, 3e-3) 30.06; (0, 1e-3) 29.99;
  chosen (1e-4, 1e-3, 3e-3) 29.91; (3e-4, 3e-3) 29.75; lam_w = 1e-3 at most 29.41 and down to
  26.34; eps 1e-2 loses 0.2-0.3 everywhere. Wavelet l1 alone (lam_tv 0, lam_w {1e-4 ... 3e-3})
  gives 24.25 down to 23.01, no better than zero filling: TV carries this reference.
  With 1% measurement noise (std 0.009) the chosen point gives 29.67 (best 29.76).
- pmri, 8 coils, 15% uniform-lines, noiseless; zero-filled 23.26. lam_w {0, 1e-4, 3e-4, 1e-3} x
  lam_tv {1e-4, 3e-4, 1e-3, 3e-3}, eps 3e-3. Top: (0, 3e-4) 28.88; chosen (1e-4, 1e-3) 28.74;
  (0, 1e-3) 28.73; worst (1e-3, 1e-4) 24.35. Same choice with 1% noise (std 0.004).
- radon, 50 views, 91 detectors. Noiseless, 50 x 91 = 4550 samples for 4096 pixels make the
  problem nearly determined and the optimum sits at the weakest regularisation of any grid
  (lam_w 0, lam_tv 1e-5: 44.99 vs FBP 32.05; lam_tv 3e-4: 37.0), i.e. plain least squares. So the
  radon defaults were tuned at 1% measurement noise (std 0.25; FBP 29.48): lam_w {0, 3e-5, 1e-4,
  3e-4} x lam_tv {3e-5, 1e-4, 3e-4, 1e-3}, eps 3e-3. Top: chosen (1e-4, 3e-4) 33.67; (3e-5, 3e-4)
  33.59; (0, 3e-4) 33.46; lam_tv 3e-5 at most 31.18. Noiseless at the chosen point: 36.32.
- denoise, sigma 25/255 (the operator's own noise); noisy input 20.16. lam_w {0, 0.01, 0.03, 0.1}
  x lam_tv {0.04, 0.06, 0.08} x eps {3e-3, 1e-2}, then lam_w {0, 0.01, 0.02} x lam_tv {0.07, 0.08,
  0.09, 0.1}, eps 3e-3. Top: (0, 0.08) 27.85; (0.01, 0.07) 27.83; chosen (0.02, 0.08) 27.70;
  lam_tv 0.04 at most 26.2.

Cost (this 2-core CPU, shared, one torch thread, 200 iterations, 64 x 64): mri ~34 ms per image in
a batch of 16 (~150 ms alone), pmri ~90 ms, radon ~80 ms (sparse products dominate).
"""

from __future__ import annotations

import itertools

import torch

from survey.metrics import psnr
from survey.physics.base import LinearPhysics
from survey.solvers.cs import CSReconstructor

_BASE = dict(lam_w=1e-4, lam_tv=1e-3, iterations=200, wavelet="db2", levels=3, eps=3e-3)


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

    grid: parameter name -> candidate values (CSReconstructor keywords); the others come from `base`
    (default: the operator's `reference_defaults`); noise as in `measure`. Returns (best params dict,
    rows sorted by mean PSNR, best first; each row = the params plus psnr_mean, psnr_min, and h_psnr_mean of Re H(y)).
    tolerance_db > 0 returns instead the most regularised point (largest lam_w + lam_tv) whose mean
    PSNR is within tolerance_db of the top: noiseless data favour the weakest regularisation, but
    the reference must stay stable under perturbed data, so near-ties go to more regularisation.
    """
    if base is None:
        base = getattr(physics, "reference_defaults", None) or _BASE
    base = dict(base)
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
