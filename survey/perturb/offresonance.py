"""Off-resonance: a smooth random B0 field map accrues phase along the readout (Cartesian MRI).

Rows of k-space (axis -2) are phase-encode lines, read out along axis -1 with the echo at the k-space
centre (for column masks such as fastMRI's, `line_axis == -1`, the same in the transposed frame: read out
along the rows): readout sample k_x is taken at time tau(k_x) T, tau = k_x / n in [-1/2, 1/2) (k_x signed). A
spin at r off resonance by df(r) Hz has accrued the phase 2 pi df(r) tau T by then, so with
phi(r) = df(r) T (cycles over the readout):
    y'(k) = y(k) + P F_{k_x} [S_c x (exp(-2 pi i phi tau(k_x)) - 1)](k)
(the usual readout-direction shift and blur of off-resonant tissue; no phase at the echo time). phi is
a sum of 2-D cosine modes (`modes` per axis, weights 1 / (1 + j + k), Gaussian coefficients from the
latent), rescaled so that every draw has exactly max_r |phi(r)| = severity: severity is the peak
off-resonance times the readout duration, in cycles. Severity 0 returns y exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from survey.perturb.base import Family, batch_severity, broadcast_batch
from survey.perturb.coil import FOURIER_KINDS, check_object, line_frame, smooth_field, where_identity


@dataclass(kw_only=True)
class OffResonance(Family):
    """Smooth B0 inhomogeneity; severity = peak off-resonance x readout duration (cycles)."""

    example_severity = 0.5  # a severity with a visible effect (survey.testing.check_family)

    modes: int = 3

    name = "off-resonance"
    severity_name = "peak off-resonance x readout duration"
    severity_unit = "cycles"
    identity_severity = 0.0
    differentiable = True
    needs_image = True
    kinds = FOURIER_KINDS

    def __post_init__(self):
        if isinstance(self.modes, bool) or not isinstance(self.modes, int) or self.modes < 1:
            raise ValueError(f"off-resonance: modes must be an integer >= 1, got {self.modes!r}")

    def params(self) -> dict:
        return {"modes": self.modes}

    def latent_shape(self, physics) -> tuple[int, ...]:
        return (self.modes * self.modes,)

    def field_map(self, z: torch.Tensor, severity, physics) -> torch.Tensor:
        """phi (B, n, n): off-resonance x readout duration in cycles, with max |phi| = severity per draw."""
        batch = z.shape[0]
        field = smooth_field(z.to(torch.float64).reshape(batch, self.modes, self.modes), physics.size)
        peak = field.reshape(batch, -1).abs().amax(dim=1).clamp(min=1e-300)
        return field * (batch_severity(severity, batch, z) / peak).reshape(batch, 1, 1)

    def apply(self, y: torch.Tensor, z: torch.Tensor, severity, physics, x: torch.Tensor | None = None
              ) -> torch.Tensor:
        """y (B or 1, C, n, n) k-space; z (B, modes^2); x the object (B or 1, 1, n, n)."""
        y = broadcast_batch(y, z)
        batch, n = y.shape[0], physics.size
        x = check_object(x, physics, batch, self.name)
        sev = batch_severity(severity, batch, y)
        maps, sampling, flipped = line_frame(physics, torch.float64, y.device)
        if flipped:  # lines are columns: work in the transposed frame
            x, y = x.mT, y.mT
        phi = self.field_map(z.to(y.device), sev, physics)                        # (B, n, n)
        k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64, device=y.device)  # signed k_x, FFT layout
        theta = -2 * math.pi * phi[:, None] * (k / n).reshape(1, n, 1, 1)          # (B, k_x, n, n)
        # exp(i theta) - 1 without cancellation: exactly 0 where theta = 0
        modulation = torch.complex(-2 * torch.sin(theta / 2).square(), torch.sin(theta))
        cols = torch.arange(n, dtype=torch.float64, device=y.device)
        kernel = torch.polar(torch.ones(n, n, dtype=torch.float64, device=y.device),
                             -2 * math.pi * k[:, None] * cols[None, :] / n)         # (k_x, col)
        coil_images = x.to(torch.complex128) * maps                                  # (B, C, n, n)
        # sum over columns per readout sample k_x, then the DFT along the rows (phase encoding)
        partial = torch.einsum("bcyx,bkyx,kx->bcyk", coil_images, modulation, kernel)
        change = torch.fft.fft(partial, dim=-2) / n * sampling
        changed = where_identity(sev, y, y + change.to(y.dtype))
        return changed.mT if flipped else changed


def build(modes: int = 3) -> OffResonance:
    return OffResonance(modes=modes)


__all__ = ["OffResonance", "build"]
