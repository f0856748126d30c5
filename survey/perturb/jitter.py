"""View jitter in CT: each view's angle is off and the patient has shifted a little between views.

View k is taken at angle theta_k + e_k (degrees) of the object translated by d_k = (d_row, d_col) pixels:
    y'[k] = y[k] + P_{theta_k + e_k}(x shifted by d_k) - P_{theta_k}(x),
P the operator's own ray-driven projector (survey.physics.radon: rays at detector offsets s, unit
samples u along them, bilinear, zero outside the image), evaluated here in torch at arbitrary angles
and offsets (`project`), so the difference is exactly 0 without jitter and noise already in y stays.
Every draw has exactly RMS angle error = severity degrees over the views and RMS |d_k| =
shift_per_degree x severity pixels; the latent (3 numbers per view, independent between views) picks
the pattern. Severity 0 returns y exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from survey.perturb.base import Family, batch_severity, broadcast_batch
from survey.perturb.coil import where_identity


def project(x: torch.Tensor, angles_deg: torch.Tensor, d_row: torch.Tensor, d_col: torch.Tensor,
            detectors: int) -> torch.Tensor:
    """Ray-driven parallel-beam projections of x (B, 1, n, n) real: (B, 1, V, detectors), float64.

    angles_deg, d_row, d_col: (B, V). The geometry of survey.physics.radon: bin j at offset
    s = j - detectors // 2 from the axis (pixel n // 2), samples u = i - detectors // 2 along the ray
    at (col, row) = (c + s cos + u sin, c - s sin + u cos), minus the object's shift (d_row, d_col).
    """
    batch, n = x.shape[0], x.shape[-1]
    views = angles_deg.shape[1]
    offsets = torch.arange(detectors, dtype=torch.float64, device=x.device) - detectors // 2
    s, u = offsets.reshape(1, 1, -1, 1), offsets.reshape(1, 1, 1, -1)
    rad = torch.deg2rad(angles_deg.to(torch.float64))
    cos, sin = torch.cos(rad)[..., None, None], torch.sin(rad)[..., None, None]
    centre = float(n // 2)
    col = centre + cos * s + sin * u - d_col.to(torch.float64)[..., None, None]
    row = centre - sin * s + cos * u - d_row.to(torch.float64)[..., None, None]
    grid = torch.stack((2 * col / (n - 1) - 1, 2 * row / (n - 1) - 1), dim=-1)   # (B, V, D, U, 2)
    grid = grid.reshape(batch, views * detectors, detectors, 2)
    samples = F.grid_sample(x.to(torch.float64), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return samples.sum(dim=-1).reshape(batch, 1, views, detectors)


@dataclass(kw_only=True)
class ViewJitter(Family):
    """Per-view angle errors and patient shifts; severity = RMS angle error (degrees)."""

    example_severity = 1.0  # a severity with a visible effect (survey.testing.check_family)

    shift_per_degree: float = 1.0

    name = "view-jitter"
    severity_name = "RMS angle error"
    severity_unit = "degrees"
    identity_severity = 0.0
    differentiable = True
    needs_image = True
    kinds = ("radon",)

    def __post_init__(self):
        value = self.shift_per_degree
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"view-jitter: shift_per_degree must be a finite number >= 0 (pixels per degree), "
                             f"got {value!r}")

    def params(self) -> dict:
        return {"shift_per_degree": self.shift_per_degree}

    def latent_shape(self, physics) -> tuple[int, ...]:
        return (3 * int(physics.views),)

    def errors(self, z: torch.Tensor, severity, physics) -> tuple[torch.Tensor, torch.Tensor]:
        """(angle errors (B, V) degrees with RMS = severity, shifts (B, V, 2) pixels with RMS |d| =
        shift_per_degree x severity)."""
        batch = z.shape[0]
        c = z.to(torch.float64).reshape(batch, 3, int(physics.views))
        sev = batch_severity(severity, batch, z)[:, None]
        angle = c[:, 0] * sev / c[:, 0].square().mean(1, keepdim=True).sqrt().clamp(min=1e-300)
        d = c[:, 1:].transpose(1, 2)
        rms = d.square().sum(-1).mean(1).sqrt().clamp(min=1e-300)[:, None, None]
        return angle, d * (self.shift_per_degree * sev[:, :, None]) / rms

    def apply(self, y: torch.Tensor, z: torch.Tensor, severity, physics, x: torch.Tensor | None = None
              ) -> torch.Tensor:
        """y (B or 1, 1, views, detectors) real sinogram; z (B, 3 views); x the object (B or 1, 1, n, n)."""
        if torch.is_complex(y):
            raise ValueError("the view-jitter family needs a real CT sinogram")
        y = broadcast_batch(y, z)
        batch, n = y.shape[0], physics.size
        if x is None:
            raise ValueError("the 'view-jitter' family needs the object x: apply(y, z, severity, physics, x=x)")
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, n, n) or x.shape[0] not in (1, batch):
            raise ValueError(f"view-jitter: x must be shaped (B or 1, 1, {n}, {n}), got {tuple(x.shape)}")
        x = x.expand(batch, 1, n, n)
        if torch.is_complex(x):
            x = x.real
        sev = batch_severity(severity, batch, y)
        angle_error, shifts = self.errors(z.to(y.device), sev, physics)
        nominal = torch.as_tensor(physics.angles, dtype=torch.float64, device=y.device).expand(batch, -1)
        zero = torch.zeros_like(nominal)
        change = (project(x, nominal + angle_error, shifts[..., 0], shifts[..., 1], physics.detectors)
                  - project(x, nominal, zero, zero, physics.detectors))
        return where_identity(sev, y, y.to(torch.float64) + change)


def build(shift_per_degree: float = 1.0) -> ViewJitter:
    return ViewJitter(shift_per_degree=shift_per_degree)


__all__ = ["ViewJitter", "build", "project"]
