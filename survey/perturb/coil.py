"""Coil-map error (parallel MRI): the data were made with maps S' = S (1 + e), the reconstruction uses S.

The network and the reference reconstruct with the operator's maps S (physics.sensitivities), while
the scanner's true maps differ from them by a smooth complex relative error e_c(r) per coil:
    y' = y + P F (S_c e_c x)      (x the object, P the k-space mask),
so severity 0 gives y exactly. e_c is a sum of 2-D cosine modes (`modes` per axis, weights
1 / (1 + j + k), complex Gaussian coefficients from the latent), rescaled so that every draw has
exactly the relative RMS map error ||S' - S||_F / ||S||_F = severity (0.05: maps 5% off); the latent
picks the error's shape. Single-coil MRI (`mri`) has S = 1: the same family is a smooth receive-field
(bias) error there. Shared Fourier helpers of the MRI families live here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from survey.perturb.base import Family, batch_severity, broadcast_batch

FOURIER_KINDS = ("mri", "pmri")


def fourier_parts(physics, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(maps (C, n, n) complex, sampling (n, n) bool in FFT layout) of a Cartesian Fourier operator; single
    coil: maps of ones."""
    if getattr(physics, "kind", "") not in FOURIER_KINDS:
        raise ValueError(f"this family needs a Cartesian MRI operator ({FOURIER_KINDS}), got "
                         f"{getattr(physics, 'kind', type(physics).__name__)!r}")
    n = physics.size
    complex_dtype = torch.complex128 if dtype in (torch.float64, torch.complex128) else torch.complex64
    maps = getattr(physics, "sensitivities", None)
    if maps is None:
        maps = torch.ones((1, n, n), dtype=complex_dtype)
    return maps.to(device=device, dtype=complex_dtype), physics.sampling.to(device)


def lines_are_columns(physics) -> bool:
    """True when the operator's phase-encode lines are k-space columns (`line_axis == -1`, fastMRI's masks)."""
    return getattr(physics, "line_axis", -2) == -1


def line_frame(physics, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(maps, sampling, flipped): `fourier_parts` in the frame where the phase-encode lines are k-space rows.
    For an operator whose lines are columns (`lines_are_columns`) both come transposed and flipped is True:
    the caller transposes its x and y in and its result out (the 2-D DFT commutes with transposition)."""
    maps, sampling = fourier_parts(physics, dtype, device)
    if lines_are_columns(physics):
        return maps.mT, sampling.mT, True
    return maps, sampling, False


def check_object(x: torch.Tensor | None, physics, batch: int, family: str) -> torch.Tensor:
    """The object x as (batch, 1, n, n), broadcast from a batch of 1; ValueError when missing or misshaped."""
    if x is None:
        raise ValueError(f"the {family!r} family needs the object x: apply(y, z, severity, physics, x=x)")
    n = physics.size
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, n, n) or x.shape[0] not in (1, batch):
        raise ValueError(f"{family}: x must be shaped (B or 1, 1, {n}, {n}), got {tuple(x.shape)}")
    return x.expand(batch, 1, n, n)


def cosine_modes(n: int, modes: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """(modes, n): cos(pi j (i + 1/2) / n), the smooth DCT-II basis over n pixels, weight 1 / (1 + j) folded in
    only by the callers."""
    i = torch.arange(n, dtype=dtype, device=device) + 0.5
    j = torch.arange(modes, dtype=dtype, device=device)
    return torch.cos(math.pi * j[:, None] * i[None, :] / n)


def smooth_field(coeff: torch.Tensor, n: int) -> torch.Tensor:
    """(..., K, K) coefficients -> (..., n, n) field sum_jk w_jk c_jk cos_j(row) cos_k(col), w_jk = 1/(1+j+k)."""
    k = coeff.shape[-1]
    basis = cosine_modes(n, k, dtype=coeff.real.dtype, device=coeff.device).to(coeff.dtype)
    j = torch.arange(k, device=coeff.device, dtype=coeff.real.dtype)
    weight = (1.0 / (1.0 + j[:, None] + j[None, :])).to(coeff.dtype)
    return torch.einsum("...jk,jy,kx->...yx", coeff * weight, basis, basis)


def masked_kspace(images: torch.Tensor, sampling: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DFT of (..., n, n) coil images, zeros off the mask (the operator's A without S)."""
    return torch.fft.fft2(images, norm="ortho") * sampling


def where_identity(severity: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """y exactly where the draw's severity is 0, else out (same dtype as y)."""
    zero = (severity == 0).reshape(-1, *([1] * (y.ndim - 1)))
    return torch.where(zero, y, out.to(y.dtype))


@dataclass(kw_only=True)
class CoilError(Family):
    """Smooth relative error of the coil sensitivity maps; severity = relative RMS map error (0.05 = 5%)."""

    example_severity = 0.05  # a severity with a visible effect (survey.testing.check_family)

    modes: int = 3

    name = "coil"
    severity_name = "relative RMS map error"
    severity_unit = "fraction"
    identity_severity = 0.0
    differentiable = True
    needs_image = True
    kinds = FOURIER_KINDS

    def __post_init__(self):
        if isinstance(self.modes, bool) or not isinstance(self.modes, int) or self.modes < 1:
            raise ValueError(f"coil: modes must be an integer >= 1, got {self.modes!r}")

    def params(self) -> dict:
        return {"modes": self.modes}

    def latent_shape(self, physics) -> tuple[int, ...]:
        coils = getattr(physics, "coils", 1)
        return (coils * 2 * self.modes * self.modes,)

    def map_error(self, z: torch.Tensor, severity, physics) -> torch.Tensor:
        """S' - S = S e, (B, C, n, n) complex, with ||S e||_F = severity ||S||_F for every draw."""
        batch = z.shape[0]
        maps, _ = fourier_parts(physics, torch.float64, z.device)
        coils, n = maps.shape[0], maps.shape[-1]
        c = z.to(torch.float64).reshape(batch, coils, self.modes, self.modes, 2)
        coeff = torch.complex(c[..., 0], c[..., 1]) / math.sqrt(2.0)
        delta = maps * smooth_field(coeff, n)
        norm = delta.reshape(batch, -1).norm(dim=1).clamp(min=1e-300)
        scale = batch_severity(severity, batch, z) * maps.norm() / norm
        return delta * scale.reshape(batch, 1, 1, 1)

    def apply(self, y: torch.Tensor, z: torch.Tensor, severity, physics, x: torch.Tensor | None = None
              ) -> torch.Tensor:
        """y (B or 1, C, n, n) k-space; z (B, C * 2 * modes^2); x the object (B or 1, 1, n, n)."""
        y = broadcast_batch(y, z)
        x = check_object(x, physics, y.shape[0], self.name)
        sev = batch_severity(severity, y.shape[0], y)
        _, sampling = fourier_parts(physics, torch.float64, y.device)
        delta = self.map_error(z.to(y.device), sev, physics)
        change = masked_kspace(delta * x.to(delta.dtype), sampling)
        return where_identity(sev, y, y + change.to(y.dtype))


def build(modes: int = 3) -> CoilError:
    return CoilError(modes=modes)


__all__ = ["CoilError", "FOURIER_KINDS", "check_object", "cosine_modes", "fourier_parts", "line_frame",
           "lines_are_columns",
           "masked_kspace", "smooth_field", "where_identity"]
