"""Detector gain errors in CT (ring artefacts): each detector element's gain is off, the same in every view.

A detector with gain g_j = 1 + delta_j reports I = g_j I0 exp(-p), so the log-converted sinogram is
    y'[view, j] = y[view, j] - log(1 + delta_j)       (every view alike: a ring in the reconstruction).
delta = (severity / 100) z / rms(z) over the detector elements, so every draw has exactly the RMS gain
error severity % (the latent picks which elements drift and how); gains are kept >= 1e-3 (a dead
element, not a negative one). Severity 0 returns y exactly. Applies to every bin of the sinogram, air
included: a drifting element is wrong in every view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from survey.perturb.base import Family, batch_severity, broadcast_batch
from survey.perturb.coil import where_identity

MIN_GAIN = 1e-3


@dataclass(kw_only=True)
class Rings(Family):
    """Per-detector gain errors constant over views; severity = RMS gain error in percent."""

    example_severity = 2.0  # a severity with a visible effect (survey.testing.check_family)

    name = "rings"
    severity_name = "RMS gain error"
    severity_unit = "%"
    identity_severity = 0.0
    differentiable = True
    kinds = ("radon",)

    def latent_shape(self, physics) -> tuple[int, ...]:
        return (int(physics.detectors),)

    def gains(self, z: torch.Tensor, severity) -> torch.Tensor:
        """g (B, detectors) = 1 + delta with RMS(delta) = severity / 100, clamped at MIN_GAIN."""
        z = z.to(torch.float64)
        rms = z.square().mean(dim=1, keepdim=True).sqrt().clamp(min=1e-300)
        sev = batch_severity(severity, z.shape[0], z)[:, None]
        return (1.0 + sev / 100.0 * z / rms).clamp(min=MIN_GAIN)

    def apply(self, y: torch.Tensor, z: torch.Tensor, severity, physics) -> torch.Tensor:
        """y (B or 1, 1, views, detectors) real line integrals; z (B, detectors); severity in %."""
        if torch.is_complex(y):
            raise ValueError("the rings family needs real line integrals (a CT sinogram)")
        y = broadcast_batch(y, z)
        sev = batch_severity(severity, y.shape[0], y)
        gains = self.gains(z.to(y.device), sev)
        out = y.to(torch.float64) - torch.log(gains)[:, None, None, :]
        return where_identity(sev, y, out)


def build() -> Rings:
    return Rings()


__all__ = ["MIN_GAIN", "Rings", "build"]
