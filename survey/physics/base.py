"""The linear forward-operator interface every modality implements (deepinv's `LinearPhysics`)."""

from __future__ import annotations

import torch
from torch import nn


class LinearPhysics(nn.Module):
    """A linear measurement operator y = A x with its adjoint and an easy linear reconstruction.

    Images are batches shaped (B, 1, n, n), real or complex, float32/float64 or complex64/complex128,
    on any device; measurements have an operator-specific shape (`measurement_shape`).
    Subclasses implement `A`, `A_adjoint` and `H`; `H` is the cheap linear reconstruction
    (A* for Fourier, filtered back-projection for Radon) networks are trained on.
    """

    kind: str = "linear"
    #: True when A maps real images to complex measurements (Fourier); False for Radon, identity.
    complex_measurements: bool = False

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, self.size, self.size)

    @property
    def measurement_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def H(self, y: torch.Tensor) -> torch.Tensor:
        """Easy linear reconstruction; defaults to the adjoint."""
        return self.A_adjoint(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def describe(self) -> dict:
        """Low-cardinality facts for rows, cards and reports (kind, size, sampling...)."""
        return {"kind": self.kind, "size": self.size}

    @torch.no_grad()
    def norm(self, n_iter: int = 100, tol: float = 1e-6, generator: torch.Generator | None = None,
             dtype: torch.dtype = torch.float64) -> float:
        """Operator norm ||A||_2 (largest singular value) by power iteration on A*A.

        Deterministic: the start vector comes from `generator`, seeded with 0 when none is given; that
        default result is cached on the operator (operators are not changed in place).
        """
        key = (n_iter, tol, dtype)
        cache = self.__dict__.setdefault("_norm_cache", {})
        if generator is None and key in cache:
            return cache[key]
        value = self._power_iteration(n_iter, tol, generator or torch.Generator().manual_seed(0), dtype)
        if generator is None:
            cache[key] = value
        return value

    def _power_iteration(self, n_iter: int, tol: float, generator: torch.Generator, dtype: torch.dtype) -> float:
        device = next((b.device for b in self.buffers()), torch.device("cpu"))
        x = torch.randn((1, *self.image_shape), generator=generator, dtype=dtype).to(device)
        x = x / x.norm()
        sigma2 = 0.0
        for _ in range(n_iter):
            z = self.A_adjoint(self.A(x))
            z = z.real if not torch.is_complex(x) and torch.is_complex(z) else z
            new = float(z.norm())
            x = z / max(new, 1e-30)
            if abs(new - sigma2) <= tol * max(new, 1e-30):
                sigma2 = new
                break
            sigma2 = new
        return sigma2 ** 0.5
