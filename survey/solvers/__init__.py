"""The stable reference solver: wavelet-l1 + total-variation compressed sensing (FISTA), in torch.

`make_reference(physics)` returns a `CSReconstructor` with the tuned defaults for the operator's
kind; it is called like a network, `solver(y, physics) -> (B, 1, n, n)` real image.
"""

from __future__ import annotations

from survey.solvers.cs import DEFAULT_PARAMS, CSReconstructor, make_reference
from survey.solvers.wavelets import Wavelet2D

__all__ = ["CSReconstructor", "DEFAULT_PARAMS", "Wavelet2D", "make_reference"]
