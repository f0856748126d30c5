"""Certified upper bounds on the spectral norm of dense matrices (batched), and of linear maps small enough to
be written down as one.

Two certificates, both upper bounds in exact arithmetic with their own floating-point error added:

- Gram iteration (Delattre et al., ICML 2023), for batches of small matrices (the per-frequency blocks of a
  convolution): P_0 = W, P_{t+1} = P_t^H P_t, so sigma_1(W)^(2^t) = ||P_t||_2 <= ||P_t||_F, hence
  sigma_1(W) <= ||P_t||_F^(1 / 2^t), which tightens to sigma_1 as t grows (the ratio is at most
  rank^(1 / 2^(t+1))). Each step is rescaled by an exact power of two, and a Frobenius-norm bound e_t on
  the distance between the computed and the exact (rescaled) P_t is carried along:
  e_{t+1} = e_t (2 b_t + e_t) + gamma_k f_t^2 (b_t: a bound on ||P_t||_2, Hoelder's or Frobenius, f_t: on ||P_t||_F, gamma_k = k u / (1 - k u) for
  inner products of length k, doubled for complex arithmetic). The bound at every step is valid; the
  smallest is kept. A lower bound (||P_t||_F - e_t) / sqrt(rank) comes free and prunes blocks that cannot
  hold the maximum.
- Cholesky (Rump, "Verification of positive definiteness", BIT 2006), for one large matrix (and for the
  largest sigma_1 of a batch of blocks at once, `max_bound`): with
  M = fl(W^T W) (||M - W^T W||_F <= gamma_m ||W||_F^2) and a Lanczos estimate lam of lambda_max(M), a
  floating-point Cholesky factorisation of mu I - M - c I that runs to completion, c = 2 gamma_{n+2}
  tr(mu I - M) + 1e-290 (the constant of Rump's theorem, doubled), proves mu I - M positive definite, so
  sigma_1(W)^2 <= mu + gamma_m ||W||_F^2.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

#: Unit roundoff of float64.
UNIT = 2.0 ** -53
#: Largest Gram iteration count (beyond it the bound no longer moves in float64).
MAX_STEPS = 24
#: Real matrices with a smaller side above this go to the (faster) Cholesky certificate instead of Gram iteration.
GRAM_LIMIT = 64


def gamma(k: int, complex_: bool = False) -> float:
    """gamma_k = k u / (1 - k u): relative error bound of a length-k float64 inner product (complex: 2k + 4)."""
    k = 2 * k + 4 if complex_ else k + 1
    return k * UNIT / (1.0 - k * UNIT)


def _fro_up(m: torch.Tensor) -> torch.Tensor:
    """An upper bound on the Frobenius norm of each matrix of a batch (rounding of the sum included)."""
    count = m.shape[-1] * m.shape[-2]
    return torch.linalg.matrix_norm(m, ord="fro") * (1.0 + gamma(count, m.is_complex()))


def _pow2_scale(value: torch.Tensor) -> torch.Tensor:
    """Exponents s with 2^-s value in [0.5, 1): rescaling by 2^-s is exact in floating point."""
    _, exponent = torch.frexp(value.clamp_min(1e-300))
    return exponent.to(torch.float64)


def gram_bound(matrices: torch.Tensor, steps: int = MAX_STEPS, tol: float = 1e-9, only_max: bool = False) -> torch.Tensor:
    """Certified upper bounds on sigma_1 of each matrix of a batch (..., m, n) (float64 or complex128), by
    Gram iteration with tracked rounding error. Stops once no block's bound improves by more than `tol`
    (relative) in a step, or after `steps` steps. Returns (...,) float64 bounds. `only_max`: only the largest
    matters (blocks whose bound falls below a certain lower bound of the largest sigma_1 stop early, so their
    own bounds stay loose)."""
    w = matrices.to(torch.complex128 if matrices.is_complex() else torch.float64)
    batch = w.shape[:-2]
    w = w.reshape(-1, *w.shape[-2:])
    if w.shape[-2] < w.shape[-1]:
        w = w.mH  # same singular values, smaller Gram matrix
    complex_ = w.is_complex()
    count = w.shape[0]
    if count == 0 or w.numel() == 0:
        return torch.zeros(batch, dtype=torch.float64)
    rank = min(w.shape[-2:])
    fro = _fro_up(w)
    zero = fro <= 0
    scale = _pow2_scale(fro)
    g = w * torch.exp2(-scale).view(-1, 1, 1).to(w.dtype)  # exact: a power of two
    log_k = scale * math.log(2.0)          # log of the factor: P_t = 2^K G_t, here as log(2^K) / 2^t
    error = torch.zeros(count, dtype=torch.float64)  # Frobenius distance of G_t to the exact rescaled P_t
    best = torch.full((count,), math.inf, dtype=torch.float64)
    last = torch.full((count,), math.inf, dtype=torch.float64)
    active = torch.arange(count)
    floor = 0.0  # a lower bound on the largest sigma_1 of the batch (only prunes; soundness never rests on it)
    if only_max:  # a good one at once, from LAPACK on the small Gram matrices
        small = w.mH @ w if w.shape[-1] <= w.shape[-2] else w @ w.mH
        floor = float(torch.linalg.eigvalsh(small)[..., -1].clamp_min(0).max().sqrt()) * (1 - 1e-9)
    power = 1.0  # 2^t
    for t in range(steps + 1):
        f = _fro_up(g)
        upper = torch.exp((log_k + torch.log((f + error).clamp_min(1e-300))) / power) * (1.0 + 1e-13)
        best[active] = torch.minimum(best[active], upper)  # (the 1e-13: rounding of exp and log, generously)
        low = (f * (1 - 2 * gamma(g.shape[-1] * g.shape[-2])) - error).clamp_min(1e-300)
        lower = torch.exp((log_k + torch.log(low)) / power - 0.5 * math.log(rank) / power) * (1.0 - 1e-13)
        floor = max(floor, float(lower.max()))
        if t == steps:
            break
        # a block stays while it could hold the maximum and its bound still moves
        keep = upper < last[active] * (1 - tol)
        if only_max:
            keep &= best[active] > floor * (1 + tol)
        last[active] = upper
        if not bool(keep.any()):
            break
        index = torch.nonzero(keep).squeeze(1)
        active, g, f, error, log_k = active[index], g[index], f[index], error[index], log_k[index]
        nxt = g.mH @ g
        # a bound on ||exact G_t||_2: Frobenius, or Hoelder's sqrt(||G||_1 ||G||_inf) (tight on clusters of equal
        # values, where the Frobenius norm would inflate e by sqrt(rank) per step)
        holder = torch.sqrt(g.abs().sum(-2).amax(-1) * g.abs().sum(-1).amax(-1)) * (1 + gamma(g.shape[-1] + g.shape[-2]))
        tau = torch.minimum(f, holder) + error
        new_error = error * (2 * tau + error) + gamma(g.shape[-2], complex_) * f * f + 1e-300
        s = _pow2_scale(_fro_up(nxt))
        factor = torch.exp2(-s)
        g = nxt * factor.view(-1, 1, 1).to(nxt.dtype)
        error = new_error * factor
        log_k = 2 * log_k + s * math.log(2.0)
        power *= 2.0
    best = torch.where(zero, torch.zeros_like(best), best)
    return best.view(batch)


def cholesky_bound(w: torch.Tensor, estimate: float | None = None) -> float:
    """Certified upper bound on sigma_1 of one real matrix (m, n) by a Cholesky certificate (see the module
    docstring); `estimate`: a guess of sigma_1 (default: Lanczos on W^T W)."""
    w = w.to(torch.float64)
    if w.shape[0] < w.shape[1]:
        w = w.T
    inner, n = w.shape
    m = w.T @ w
    m = 0.5 * (m + m.T)
    form_error = gamma(inner) * float(_fro_up(w)) ** 2
    if estimate is None:
        lam = _top_eigenvalue(m)
    else:
        lam = float(estimate) ** 2
    lam = max(lam, 0.0)
    margin = 1e-9
    eye = torch.eye(n, dtype=torch.float64)
    for _ in range(40):
        mu = lam * (1 + margin) + 1e-300
        shifted = mu * eye - m
        c = 2 * gamma(n + 2) * float(torch.diagonal(shifted).abs().sum()) + 1e-290
        _, info = torch.linalg.cholesky_ex(shifted - c * eye)
        if int(info) == 0:
            return math.sqrt(mu + form_error) * (1 + 1e-15)
        margin *= 10.0
        if margin > 1e3:
            lam, margin = max(lam, float(torch.linalg.matrix_norm(m, ord="fro"))), 1e-9
    raise RuntimeError("cholesky_bound: no certificate (the matrix has non-finite entries?)")


def max_bound(blocks: torch.Tensor) -> float:
    """Certified upper bound on the largest sigma_1 over a batch of small matrices (B, m, n), real or complex:
    one shift mu from LAPACK's largest eigenvalue of the Gram matrices, certified for every block at once by
    batched Cholesky factorisations of mu I - K^H K (the Cholesky certificate; complex rounding constants
    doubled), the margin raised for the blocks that do not pass."""
    k = blocks.to(torch.complex128 if blocks.is_complex() else torch.float64)
    if k.shape[-2] < k.shape[-1]:
        k = k.mH
    inner, n = k.shape[-2:]
    complex_ = k.is_complex()
    m = k.mH @ k
    m = 0.5 * (m + m.mH)
    form_error = gamma(inner, complex_) * float(_fro_up(k).max()) ** 2
    lam = float(torch.linalg.eigvalsh(m)[..., -1].max().clamp_min(0))
    eye = torch.eye(n, dtype=m.dtype)
    margin, pending = 1e-9, m
    for _ in range(60):
        mu = lam * (1 + margin) + 1e-300
        shifted = mu * eye - pending
        trace = torch.diagonal(shifted, dim1=-2, dim2=-1).real.abs().sum(-1)
        c = (4 if complex_ else 2) * gamma(n + 2) * trace + 1e-290
        _, info = torch.linalg.cholesky_ex(shifted - c.view(-1, 1, 1) * eye)
        failed = info != 0
        if not bool(failed.any()):
            return math.sqrt(mu + form_error) * (1 + 1e-15)
        pending = pending[failed]
        margin *= 4.0
    raise RuntimeError("max_bound: no certificate (non-finite entries?)")


#: Gram matrices up to this order get LAPACK's eigenvalues directly: cheaper than Lanczos at these orders, which
#: stalls for thousands of products on clustered top spectra (multi-coil A* A).
EIGVALSH_LIMIT = 1024


def _top_eigenvalue(m: torch.Tensor) -> float:
    """An estimate of lambda_max of a symmetric PSD matrix (Lanczos; LAPACK when Lanczos stalls on a cluster):
    only a guess for the certificate, which checks it."""
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    n = m.shape[0]
    if n <= EIGVALSH_LIMIT:
        return float(torch.linalg.eigvalsh(m)[-1])
    try:   # a bounded number of restarts: in a tight top cluster ARPACK can take 10^4+ products to meet its tol
        return float(eigsh(m.numpy(), k=1, which="LA", tol=1e-10, return_eigenvectors=False, v0=np.ones(n),
                           maxiter=20)[0])
    except ArpackNoConvergence:
        return float(torch.linalg.eigvalsh(m)[-1])


def dense_bound(w: torch.Tensor) -> float:
    """Certified upper bound on sigma_1 of one dense matrix: Gram iteration when it is small (or complex),
    the Cholesky certificate otherwise."""
    if min(w.shape[-2:]) <= GRAM_LIMIT or w.is_complex():
        return float(gram_bound(w))
    return cholesky_bound(w)


def map_matrix(apply: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], *,
               complex_: bool = False, mask: torch.Tensor | None = None, chunk: int = 256) -> torch.Tensor:
    """The dense real matrix (outputs, inputs) of a linear map on tensors of `shape` (complex: pairs of
    reals, as the Euclidean norms see them), in float64; `mask`: restrict the inputs to its non-zeros."""
    count = math.prod(shape)
    keep = torch.ones(count * (2 if complex_ else 1), dtype=torch.bool)
    if mask is not None:
        base = torch.broadcast_to(mask != 0, shape).reshape(-1)
        keep = base.repeat_interleave(2) if complex_ else base
    columns = torch.nonzero(keep).squeeze(1)
    blocks = []
    for part in columns.split(chunk):
        basis = torch.zeros(part.numel(), keep.numel(), dtype=torch.float64)
        basis[torch.arange(part.numel()), part] = 1.0
        u = torch.view_as_complex(basis.view(part.numel(), *shape, 2)) if complex_ else basis.view(part.numel(), *shape)
        # the map is applied to a batch of basis tensors: shapes with a leading 1 take the batch there
        u = u.reshape(part.numel(), *shape[1:]) if shape[0] == 1 else u
        out = apply(u)
        out = torch.view_as_real(out) if out.is_complex() else out
        blocks.append(out.reshape(part.numel(), -1).double())
    return torch.cat(blocks).T


def map_bound(apply: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], *, complex_: bool = False,
              mask: torch.Tensor | None = None) -> float:
    """Certified ||L|| of a linear map (batched over a leading axis of size 1 in `shape`), from its dense
    matrix; the rounding of the map's own evaluation is not included (it is exact for 0/1 masks and
    permutations, and at the level of u times the map's condition elsewhere)."""
    return dense_bound(map_matrix(apply, shape, complex_=complex_, mask=mask))


__all__ = ["GRAM_LIMIT", "MAX_STEPS", "UNIT", "cholesky_bound", "max_bound", "dense_bound", "gamma", "gram_bound", "map_bound",
           "map_matrix"]
