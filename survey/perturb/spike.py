"""k-space spikes: a few corrupted k-space samples (the herringbone artefact of a discharge in the coil).

Each of `spikes` spikes adds, at one measured k-space entry (one coil for parallel MRI), a value of
magnitude severity x |y(DC)| and random phase: y'[i] = y[i] + severity |y_DC| exp(i phase), where
|y_DC| is the largest magnitude at the k-space centre over the coils. The latent holds three numbers
per spike: the entry is the quantile of Phi(z_0) among the measured entries (uniform), the phase is
the angle of (z_1, z_2) (uniform). Severity (spike amplitude relative to the k-space centre) 0 returns
y exactly. The entry choice is piecewise constant in z: not differentiable in z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from survey.perturb.base import Family, Support, batch_severity, broadcast_batch
from survey.perturb.coil import FOURIER_KINDS, where_identity


@dataclass(kw_only=True)
class Spike(Family):
    """A few additive k-space spikes; severity = spike amplitude / |k-space centre|."""

    example_severity = 0.2  # a severity with a visible effect (survey.testing.check_family)

    spikes: int = 2

    name = "spike"
    severity_name = "spike amplitude / k-space centre"
    severity_unit = "fraction"
    identity_severity = 0.0
    differentiable = False
    kinds = FOURIER_KINDS

    def __post_init__(self):
        if isinstance(self.spikes, bool) or not isinstance(self.spikes, int) or self.spikes < 1:
            raise ValueError(f"spike: spikes must be an integer >= 1, got {self.spikes!r}")

    def params(self) -> dict:
        return {"spikes": self.spikes}

    def latent_shape(self, physics) -> tuple[int, ...]:
        return (3 * self.spikes,)

    def locations(self, z: torch.Tensor, physics) -> tuple[torch.Tensor, torch.Tensor]:
        """(flat entry indices (B, spikes) into the measurement shape, phases (B, spikes) radians)."""
        support = Support.of(physics)
        c = z.to(torch.float64).reshape(z.shape[0], self.spikes, 3)
        u = 0.5 * torch.special.erfc(-c[..., 0] / math.sqrt(2.0))              # Phi(z_0)
        pick = (u * support.count).floor().long().clamp(0, support.count - 1)
        return support.index.to(z.device)[pick], torch.atan2(c[..., 2], c[..., 1])

    def apply(self, y: torch.Tensor, z: torch.Tensor, severity, physics) -> torch.Tensor:
        """y (B or 1, C, n, n) complex k-space (FFT layout, DC at [0, 0]); z (B, 3 * spikes)."""
        if not torch.is_complex(y):
            raise ValueError("the spike family needs complex k-space measurements")
        y = broadcast_batch(y, z)
        batch = y.shape[0]
        sev = batch_severity(severity, batch, y)
        index, phase = self.locations(z.to(y.device), physics)
        centre = y[..., 0, 0].abs().reshape(batch, -1).amax(dim=1).to(torch.float64)   # (B,)
        values = torch.polar((sev * centre)[:, None].expand_as(phase), phase)
        flat = y.reshape(batch, -1).to(torch.complex128).clone()
        flat.scatter_add_(1, index, values)
        return where_identity(sev, y, flat.reshape(y.shape))


def build(spikes: int = 2) -> Spike:
    return Spike(spikes=spikes)


__all__ = ["Spike", "build"]
