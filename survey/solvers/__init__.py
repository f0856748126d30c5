"""The stable reference solver: wavelet-l1 + total-variation compressed sensing (FISTA), in torch.

`make_reference(physics)` returns a `CSReconstructor` with the operator's tuned `reference_defaults`;
it is called like a network, `solver(y, physics) -> (B, 1, n, n)` real image. `ConvergedCS` solves the same
problem to a stated tolerance and differentiates it at its fixed point (survey.solvers.converged).
"""

from __future__ import annotations

from survey.solvers.converged import ConvergedCS, make_converged
from survey.solvers.cs import CSReconstructor, default_params, make_reference
from survey.solvers.wavelets import Wavelet2D

__all__ = ["CSReconstructor", "ConvergedCS", "Wavelet2D", "default_params", "make_converged", "make_reference"]
