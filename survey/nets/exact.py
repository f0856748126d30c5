"""Networks with known answers: controls and planted cases for the worst-case and ball estimators.

Each is an `nn.Module` called as `net(y, physics) -> (B, 1, n, n)` real image, batched, on the
device and dtype of y, differentiable in y. With h = Re H(y) the easy linear reconstruction:

    IdentityNet          f(y) = h
    TikhonovNet(mu)      f(y) = argmin_{z real} ||A z - y||^2 + mu ||z||^2 = (Re A*A + mu I)^{-1} Re A* y
    MatrixNet(G)         f(y) = G vec(h)                     (dense, for exact spectra)
    ConvolutionNet(k)    f(y) = k (*) h                       (circular convolution)
    PlantedRidgeNet      f(y) = h + (K - 1) <d, s> psi(cos) s (a ridge of gain K along s)

Gains are `survey.tasks.budget` gains, gain = (||f(A(x + r)) - f(Ax)|| / ||f(Ax)||) / (||r|| / ||x||);
a linear f(A .) = L gives gain(r) = (||L r|| / ||r||) (||x|| / ||L x||), so its worst case at any budget
is sigma_1(L) ||x|| / ||L x||, reached along the top right singular vector of L.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from survey.physics.mri import fft2c, ifft2c


def _real(t: torch.Tensor) -> torch.Tensor:
    return t.real if torch.is_complex(t) else t


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample real inner product, (B, ...) x (B, ...) -> (B, 1, 1, 1)."""
    return (a * b).flatten(1).sum(1).view(-1, 1, 1, 1)


class IdentityNet(nn.Module):
    """f(y) = Re H(y): the 'do nothing clever' control; f(A(x + r)) - f(Ax) = Re H A r.

    What it is per operator (the map r -> Re H A r):
    - denoise (A = H = I): the identity exactly; every perturbation has gain 1.
    - single-coil MRI (H = A* = A^+, A A* = I on the measured entries): the orthogonal projection
      onto the row space of A (real part): ||Re A*A r|| <= ||r||, so every gain is at most
      ||x|| / ||Re A*A x|| (close to 1 for images whose energy lies in the sampled k-space).
    - parallel MRI (H = A*, coil-combined zero filling): Re A*A, eigenvalues in [0, 1] (sum_c |S_c|^2 = 1);
      gains again at most ||x|| / ||Re A*A x||.
    - Radon (H = FBP): B A, an approximation of the identity on well-sampled images; its spectrum is
      not exactly in [0, 1] (ramp filter, interpolation), so gains slightly above 1 are possible.
    """

    def forward(self, y: torch.Tensor, physics) -> torch.Tensor:
        return _real(physics.H(y))


class _SPDSolve(torch.autograd.Function):
    """z = M^{-1} b for a symmetric positive definite M (given as a callable) by batched CG.

    The backward pass solves M g = grad (M symmetric), the exact derivative of the linear solve
    rather than the derivative of the CG iterates.
    """

    @staticmethod
    def forward(ctx, b, apply_m, tol, max_iter):
        ctx.apply_m, ctx.tol, ctx.max_iter = apply_m, tol, max_iter
        with torch.no_grad():
            return conjugate_gradient(apply_m, b, tol, max_iter)

    @staticmethod
    def backward(ctx, grad):
        with torch.no_grad():
            return conjugate_gradient(ctx.apply_m, grad.contiguous(), ctx.tol, ctx.max_iter), None, None, None


def conjugate_gradient(apply_m, b: torch.Tensor, tol: float = 1e-10, max_iter: int = 500) -> torch.Tensor:
    """Solve M z = b per batch element (M symmetric positive definite, real b): stops when every
    residual satisfies ||M z - b|| <= tol ||b||, or after max_iter iterations."""
    z = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = _dot(r, r)
    target = (tol ** 2) * rr.clamp_min(torch.finfo(b.dtype).tiny)
    for _ in range(max_iter):
        if bool((rr <= target).all()):
            break
        mp = apply_m(p)
        alpha = rr / _dot(p, mp).clamp_min(torch.finfo(b.dtype).tiny)
        z = z + alpha * p
        r = r - alpha * mp
        rr_new = _dot(r, r)
        p = r + (rr_new / rr.clamp_min(torch.finfo(b.dtype).tiny)) * p
        rr = rr_new
    return z


def _flip_frequencies(sampling: torch.Tensor) -> torch.Tensor:
    """P(-k) in FFT layout: index (i, j) -> (-i mod n, -j mod n)."""
    return torch.roll(torch.flip(sampling, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))


class TikhonovNet(nn.Module):
    """Real-image Tikhonov: f(y) = (Re A*A + mu I)^{-1} Re A* y, solved exactly.

    L = (Re A*A + mu)^{-1} Re A*A is symmetric with eigenvalues lambda / (lambda + mu) in [0, 1), so
    ||L r|| <= ||r|| and every gain is at most ||x|| / ||L x||.
    - denoise (A = I): f(y) = Re y / (1 + mu).
    - single-coil MRI (A = P F, orthonormal F): on real images Re A*A is diagonal in k-space with
      entries d(k) = (P(k) + P(-k)) / 2 in {0, 1/2, 1} (conjugate symmetry of a real image's
      spectrum), so f(y) = Re F* [F(Re A* y) / (d + mu)].
    - any other operator (parallel MRI, Radon): conjugate gradients to relative residual `tol`
      (at most `max_iter` iterations), differentiated implicitly (a second solve in the backward pass).
    """

    def __init__(self, mu: float, tol: float = 1e-10, max_iter: int = 500):
        super().__init__()
        if not mu > 0:
            raise ValueError(f"TikhonovNet: mu must be > 0, got {mu!r}")
        self.mu, self.tol, self.max_iter = float(mu), float(tol), int(max_iter)

    def forward(self, y: torch.Tensor, physics) -> torch.Tensor:
        kind = getattr(physics, "kind", None)
        if kind == "denoise":
            return _real(y) / (1.0 + self.mu)
        b = _real(physics.A_adjoint(y))
        if kind == "mri":
            sampling = physics.sampling.to(device=b.device, dtype=b.dtype)
            d = 0.5 * (sampling + _flip_frequencies(sampling))
            return ifft2c(fft2c(b) / (d + self.mu)).real

        def apply_m(z: torch.Tensor) -> torch.Tensor:
            return _real(physics.A_adjoint(physics.A(z))) + self.mu * z

        return _SPDSolve.apply(b, apply_m, self.tol, self.max_iter)


class MatrixNet(nn.Module):
    """f(y) = G vec(Re H(y)), G a dense (n^2, n^2) matrix (a buffer, moved by .to()).

    On denoise the Jacobian of r -> f(A(x + r)) is G itself: the worst case at every budget is
    sigma_1(G) ||x|| / ||G x||, along the top right singular vector (`top_singular_vector`).
    `with_spectrum` builds G = U diag(s) V^T with Haar-random orthogonal U, V.
    """

    def __init__(self, matrix: torch.Tensor, size: int):
        super().__init__()
        if matrix.shape != (size * size, size * size):
            raise ValueError(f"MatrixNet: matrix must be ({size * size}, {size * size}), got {tuple(matrix.shape)}")
        self.size = int(size)
        self.register_buffer("matrix", matrix)

    @classmethod
    def with_spectrum(cls, size: int, singular_values, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float64) -> "MatrixNet":
        """G = U diag(s) V^T; s padded with zeros to size^2 values (any order; sorted descending)."""
        n2 = size * size
        s = torch.zeros(n2, dtype=dtype)
        values = torch.as_tensor(singular_values, dtype=dtype).flatten()
        s[:values.numel()] = values.sort(descending=True).values
        u, _ = torch.linalg.qr(torch.randn(n2, n2, generator=generator, dtype=dtype))
        v, _ = torch.linalg.qr(torch.randn(n2, n2, generator=generator, dtype=dtype))
        return cls(u @ torch.diag(s) @ v.T, size)

    def singular_values(self) -> torch.Tensor:
        return torch.linalg.svdvals(self.matrix)

    def top_singular_vector(self) -> torch.Tensor:
        """The top right singular vector as a unit image (1, 1, n, n)."""
        _, _, vh = torch.linalg.svd(self.matrix)
        return vh[0].reshape(1, 1, self.size, self.size)

    def forward(self, y: torch.Tensor, physics) -> torch.Tensor:
        h = _real(physics.H(y))
        out = h.flatten(1) @ self.matrix.to(dtype=h.dtype, device=h.device).T
        return out.view(h.shape[0], 1, self.size, self.size)


class ConvolutionNet(nn.Module):
    """f(y) = k (*) Re H(y), circular 2-D convolution with a real (n, n) kernel k (origin at [0, 0]).

    Diagonal in the DFT basis: the singular values are |K(w)|, K = unnormalised fft2(k), so
    sigma_1 = max_w |K(w)|; a top singular vector is the real cosine at the maximising frequency
    (`top_singular_vector`). On denoise this is the Jacobian of r -> f(A(x + r)).
    """

    def __init__(self, kernel: torch.Tensor):
        super().__init__()
        if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or torch.is_complex(kernel):
            raise ValueError(f"ConvolutionNet: kernel must be a real (n, n) tensor, got {tuple(kernel.shape)}")
        self.register_buffer("kernel", kernel)

    def transfer(self) -> torch.Tensor:
        return torch.fft.fft2(self.kernel)

    def sigma_max(self) -> float:
        return float(self.transfer().abs().max())

    def top_singular_vector(self) -> torch.Tensor:
        n = self.kernel.shape[0]
        k = int(self.transfer().abs().flatten().argmax())
        k1, k2 = divmod(k, n)
        grid = torch.arange(n, dtype=self.kernel.dtype, device=self.kernel.device)
        v = torch.cos(2 * math.pi * (k1 * grid[:, None] + k2 * grid[None, :]) / n)
        return (v / v.norm()).view(1, 1, n, n)

    def forward(self, y: torch.Tensor, physics) -> torch.Tensor:
        h = _real(physics.H(y))
        spectrum = torch.fft.fft2(self.kernel.to(device=h.device, dtype=h.dtype))
        return torch.fft.ifft2(torch.fft.fft2(h) * spectrum).real


def smoothstep(t: torch.Tensor) -> torch.Tensor:
    """C^2 step: 0 for t <= 0, 1 for t >= 1, 6t^5 - 15t^4 + 10t^3 between."""
    t = t.clamp(0.0, 1.0)
    return t * t * t * (t * (6 * t - 15) + 10)


class PlantedRidgeNet(nn.Module):
    """A stable base (f = Re H) plus a narrow ridge of gain K along a unit image direction s.

    With h = Re H(y), h0 = Re H(A x0) (x0: the one clean image the ridge is planted at, (1, 1, n, n)),
    d = h - h0, a = <d, s>, cos = a / ||d||:

        f(y) = h + (K - 1) a psi(cos) s,    psi(c) = smoothstep((c - c0 + width) / (2 width)),

    so d = a s + w (w orthogonal to s) maps to (1 + (K - 1) psi) a s + w and, on denoise (d = r),
    f(A x0) = x0 and the gain of r is a function of its angle to s only:

        G(cos) = sqrt(cos^2 (1 + (K - 1) psi(cos))^2 + 1 - cos^2)   (<= K, = K at cos = 1).

    The gain is K within the cone cos >= c0 + width, 1 outside cos <= c0 - width (smooth between);
    the worst case at every budget eps is r* = eps ||x0|| s, gain K. A random start almost never lies
    in the cone (psi = 0 there, no gradient towards s): this is the needle a search must be given.

    `ball_probability(radius)`: for the centre r* and ball draws v uniform on the sphere of radius
    c ||r*|| (v = A* e rescaled, A = I), u = <v, s> / ||v|| has (u + 1) / 2 ~ Beta((N-1)/2, (N-1)/2)
    (N = n^2) and the draw's cosine to s is (1 + c u) / sqrt(1 + 2 c u + c^2), so P(G >= g) is a
    one-dimensional integral over u, evaluated exactly up to root finding.
    """

    def __init__(self, x0: torch.Tensor, direction: torch.Tensor, gain: float, c0: float, width: float):
        super().__init__()
        if not gain >= 1:
            raise ValueError(f"PlantedRidgeNet: gain must be >= 1, got {gain!r}")
        if not (0 < width and -1 < c0 - width and c0 + width <= 1):
            raise ValueError(f"PlantedRidgeNet: need 0 < width and [c0 - width, c0 + width] inside (-1, 1], "
                             f"got c0={c0!r}, width={width!r}")
        if x0.ndim != 4 or x0.shape[0] != 1 or direction.shape != x0.shape:
            raise ValueError("PlantedRidgeNet: x0 and direction must both be (1, 1, n, n)")
        self.register_buffer("x0", x0)
        self.register_buffer("direction", direction / direction.norm())
        self.gain, self.c0, self.width = float(gain), float(c0), float(width)

    def psi(self, cos: torch.Tensor) -> torch.Tensor:
        return smoothstep((cos - self.c0 + self.width) / (2 * self.width))

    def gain_at(self, cos: torch.Tensor) -> torch.Tensor:
        """G(cos), the gain of a perturbation at cosine `cos` to s (denoise)."""
        lift = 1 + (self.gain - 1) * self.psi(cos)
        return torch.sqrt(cos * cos * lift * lift + 1 - cos * cos)

    def forward(self, y: torch.Tensor, physics) -> torch.Tensor:
        h = _real(physics.H(y))
        x0 = self.x0.to(device=h.device, dtype=h.dtype)
        s = self.direction.to(device=h.device, dtype=h.dtype)
        d = h - _real(physics.H(physics.A(x0)))
        a = _dot(d, s)
        length = torch.sqrt(_dot(d, d) + torch.finfo(h.dtype).tiny)
        return h + (self.gain - 1) * a * self.psi(a / length) * s

    @staticmethod
    def ball_cosine(u, radius: float):
        """Cosine to s of r* + v with ||v|| = radius ||r*||, <v, s> = u ||v|| (r* along s)."""
        return (1 + radius * u) / torch.sqrt(1 + 2 * radius * u + radius * radius) if isinstance(u, torch.Tensor) \
            else (1 + radius * u) / math.sqrt(1 + 2 * radius * u + radius * radius)

    def ball_probability(self, radius: float, threshold: float = 2.0, dim: int | None = None,
                         grid: int = 20001) -> float:
        """P(G(cos of r* + v) >= threshold) for v uniform on the sphere of radius `radius` ||r*||
        in R^dim (default n^2; the denoise ball). Exact up to the grid that brackets the roots."""
        from scipy.optimize import brentq
        from scipy.stats import beta

        n_dim = int(dim if dim is not None else self.x0[0, 0].numel())
        half = (n_dim - 1) / 2

        def excess(u: float) -> float:
            cos = torch.tensor(self.ball_cosine(u, radius), dtype=torch.float64)
            return float(self.gain_at(cos)) - threshold

        us = torch.linspace(-1.0, 1.0, grid, dtype=torch.float64)
        values = (self.gain_at(self.ball_cosine(us, radius)) >= threshold).tolist()
        # Sub-intervals where the excess is >= 0, with their end points refined by root finding.
        edges, inside = [], values[0]
        if inside:
            edges.append(-1.0)
        for i in range(1, grid):
            now = values[i]
            if now != inside:
                edges.append(brentq(excess, float(us[i - 1]), float(us[i]), xtol=1e-14))
                inside = now
        if inside:
            edges.append(1.0)
        cdf = beta(half, half).cdf
        return float(sum(cdf((hi + 1) / 2) - cdf((lo + 1) / 2) for lo, hi in zip(edges[::2], edges[1::2])))


__all__ = ["ConvolutionNet", "IdentityNet", "MatrixNet", "PlantedRidgeNet", "TikhonovNet", "conjugate_gradient",
           "smoothstep"]
