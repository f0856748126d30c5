"""The local Jacobian spectrum: how many bad directions there are at an image, and how bad.

At each image x the linearised map of a reconstruction f (network, unrolled reference, H) is

    image domain:        J = d/dr f(A(x + r)) at r = 0          (r: real images (1, n, n))
    measurement domain:  J = d/de f(Ax + P e) at e = 0          (e: measurement-shaped, P: the measured
                                                                 entries, physics.measured_mask())

and its top-k singular values sigma_1 >= ... >= sigma_k with right singular vectors v_i come from Lanczos
on J^T J with full reorthogonalisation (`top_singular`), batched over the images (J is block-diagonal
across the batch; every inner product is per image). No dense Jacobian is formed: the network runs
forward once, with the graph of J^T w built once (`Linearisation`), then every product reuses it:

    J^T u = vjp (one backward pass through the kept graph),
    J v   = d/dw <J^T w, v> (the double-vjp trick: a backward pass through the graph of J^T w).

Reverse-over-reverse rather than torch.func.jvp: the operators' custom autograd Functions (Radon's sparse
product, Tikhonov's conjugate gradients) define a backward pass but no forward-mode rule, and torch.func
refuses Functions without `setup_context`; the double vjp works wherever the backward is differentiable.
Complex perturbations (measurement domain, Fourier) live in the real vector space of (real, imaginary)
parts, with the real inner product Re <a, b>.

Ritz pairs come from Rayleigh-Ritz on the Krylov basis Q with W = J^T J Q kept, so each pair's residual
||J^T J v - sigma^2 v|| / sigma^2 is exact (W s - theta Q s) at no extra cost; iteration stops when the k
residuals fall below `tol` or after `iterations` products. A Krylov space that becomes invariant (H on a
Fourier mask has only the eigenvalues 0, 1/2 and 1) is continued with a fresh random vector, so repeated
singular values come out with their multiplicity.

sigma_rel = sigma ||x|| / ||f(Ax)|| (||Ax|| in the measurement domain) is comparable with the budget
search's gain (tasks/budget.py): a linear f reaches gain sigma_1 ||x|| / ||f(Ax)|| along v_1.
effective_rank = (sum_i sigma_i)^2 / sum_i sigma_i^2 over the k computed: k when all are equal, 1 when
one direction dominates. upper_bound: survey.nets.lipschitz's global bound on ||J|| (None where a layer
has none).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch

from survey.metrics import norms
from survey.tasks import validate
from survey.domain import DOMAINS, domain as as_domain
from survey.numerics import differentiable, eval_mode
from survey.tasks.base import LABELS, Column, Task, TaskContext, TaskResult, register, rows_from_columns


class Linearisation:
    """J of u -> f(y0 + lift(u)) at u = 0, for a batch of B images, applied without forming it.

    domain "image": lift(u) = A u, u shaped like x (real images); "measurement": lift(u) = P u, u shaped
    like y = Ax, P the measured entries. `jvp(v)` = J v (output-shaped, real), `vjp(w)` = J^T w
    (input-shaped); both batched, each sample its own Jacobian. `calls` counts the products made.
    """

    def __init__(self, f: Callable, physics, x: torch.Tensor, domain: str = "image"):
        try:
            self.where = as_domain(domain)
        except ValueError as err:
            raise ValueError(f"Linearisation: {err}") from None
        self.domain, self.physics = self.where.name, physics
        with torch.no_grad():
            self.y = physics.A(x).detach()
        like = self.where.like(x, self.y)
        self.mask = self.where.support(physics, self.y)
        self.shape = like.shape
        self.dtype = like.dtype
        self.complex = torch.is_complex(like)
        with torch.enable_grad():
            self._u = torch.zeros_like(like, requires_grad=True)
            shift = self.where.shift(physics, self._u if self.mask is None else self._u * self.mask)
            out = f(self.y + shift, physics)
            self.out = out
            self._w = torch.zeros_like(out, requires_grad=True)
            (self._g,) = torch.autograd.grad(out, self._u, self._w, create_graph=True)
        if not self._g.requires_grad:
            raise ValueError("Linearisation: J^T w does not depend on w (a backward pass that is not "
                             "differentiable again); the double-vjp product J v needs one that is")
        self.clean = out.detach()
        self.calls = {"jvp": 0, "vjp": 0}

    def vjp(self, w: torch.Tensor) -> torch.Tensor:
        """J^T w: (B, *output) real -> (B, *input)."""
        self.calls["vjp"] += 1
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.out, self._u, w.to(self.out.dtype), retain_graph=True, allow_unused=True)
        return torch.zeros(self.shape, dtype=self.dtype, device=self.y.device) if g is None else g.detach()

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """J v: (B, *input) -> (B, *output) real."""
        self.calls["jvp"] += 1
        with torch.enable_grad():
            inner = _real_inner(self._g, v.to(self._g.dtype)).sum()
            (jv,) = torch.autograd.grad(inner, self._w, retain_graph=True, allow_unused=True)
        return torch.zeros_like(self.clean) if jv is None else jv.detach()

    def gram(self, v: torch.Tensor) -> torch.Tensor:
        """J^T J v."""
        return self.vjp(self.jvp(v))


def _real_inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample real inner product Re <a, b> of two tensors of one dtype: (B, ...) x (B, ...) -> (B,)."""
    return (_flat(a) * _flat(b)).sum(1)


def _flat(t: torch.Tensor) -> torch.Tensor:
    """(B, *shape) real or complex -> (B, D) real (complex as interleaved real and imaginary parts)."""
    return (torch.view_as_real(t) if torch.is_complex(t) else t).reshape(t.shape[0], -1)


def _unflat(t: torch.Tensor, shape: torch.Size, complex_: bool) -> torch.Tensor:
    if complex_:
        return torch.view_as_complex(t.reshape(*shape, 2).contiguous())
    return t.reshape(shape)


#: Block steps Lanczos takes after continuing an invariant Krylov space before it may stop again.
RESTART_STEPS = 3


class SpectrumResult(NamedTuple):
    """Top-k singular triplets per image, B images.

    sigma: (B, k) descending; vectors: (B, k, *input shape) unit right singular vectors (real images, or
    complex measurement-shaped tensors); residual: (B, k) ||J^T J v - sigma^2 v|| / sigma^2 (NaN where
    sigma^2 is below 1e-10 of sigma_1^2: a null direction has no relative residual); iterations: Krylov
    dimension reached; products: J^T J applications made (each one jvp and one vjp); clean: f(Ax).
    """

    sigma: torch.Tensor
    vectors: torch.Tensor
    residual: torch.Tensor
    iterations: int
    products: int
    clean: torch.Tensor


def top_singular(f: Callable, physics, x: torch.Tensor, k: int = 20, *, domain: str = "image",
                 iterations: int | None = None, block: int = 4, tol: float = 1e-4,
                 generator: torch.Generator | None = None) -> SpectrumResult:
    """Top-k singular values and right singular vectors of the local Jacobian of f at each image.

    f: called as f(y, physics) (a network, the reference solver, run unrolled, or IdentityNet for H), put
    in eval mode; x: (B, 1, n, n); k: how many; block: Lanczos block size (vectors multiplied together in one
    batched call; it also resolves singular values of multiplicity up to `block`, which single-vector
    Lanczos cannot: a real convolution's are all double; higher multiplicities are found when the
    Krylov space turns out invariant and is continued with fresh vectors); iterations: most J^T J products per image
    (the Krylov dimension; default max(3k, k + 30), capped by the input dimension); tol: stop once
    every image's k residuals ||J^T J v - sigma^2 v|| / sigma^2 are below it.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"top_singular: k must be an integer >= 1, got {k!r}")
    if int(block) != block or block < 1:
        raise ValueError(f"top_singular: block must be an integer >= 1, got {block!r}")
    block = int(block)
    f = differentiable(f)  # a reference solver runs unrolled (a copy); networks pass through
    with eval_mode(f):
        lin = Linearisation(f, physics, x.repeat_interleave(block, dim=0), domain)
        return _block_lanczos(lin, x.shape[0], block, int(k), iterations, tol, generator)


def _block_lanczos(lin: Linearisation, b: int, p: int, k: int, iterations: int | None, tol: float,
                   generator: torch.Generator | None) -> SpectrumResult:
    """Block Lanczos on J^T J with full reorthogonalisation and Rayleigh-Ritz on the whole basis.

    `lin` is linearised at every image repeated p times (sample b * p + j), so one batched product
    applies J^T J to a block of p vectors per image.
    """
    shape, complex_ = lin.shape, lin.complex
    device = lin.y.device
    one = _flat(torch.zeros((1, *shape[1:]), dtype=lin.dtype, device=device))
    real_dtype, width = one.dtype, one.shape[1]
    mask = None
    if lin.mask is not None:
        mask = (_flat(torch.ones((1, *shape[1:]), dtype=lin.dtype, device=device) * lin.mask) != 0).to(real_dtype)
    dim = int(mask.sum().item()) if mask is not None else width
    k = min(k, dim)
    limit = min(dim, iterations if iterations is not None else max(3 * k, k + 30))
    limit = max(limit, k)
    tiny = torch.finfo(real_dtype).tiny
    # a candidate shorter than this, relative to its size before projection, has nothing new: what is
    # left is rounding (about eps * sqrt(D) after two projections), and normalising it would bring the
    # basis back in (float32 at 64 x 64 turned the identity's sigma = 1 into 3.5 with 1e-8 here)
    dependent = math.sqrt(torch.finfo(real_dtype).eps)

    def random_block() -> torch.Tensor:  # (B, p, D)
        gen_device = generator.device if generator is not None else device
        z = torch.randn((b, p, width), generator=generator, dtype=real_dtype, device=gen_device).to(device)
        return z * mask if mask is not None else z

    def apply(q: torch.Tensor) -> torch.Tensor:  # (B, p, D) -> (B, p, D)
        out = _flat(lin.gram(_unflat(q.reshape(b * p, width), shape, complex_)).to(lin.dtype)).view(b, p, width)
        return out * mask if mask is not None else out

    def project_out(r: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:  # r (B, c, D), basis (B, j, D)
        if basis is None or basis.shape[1] == 0:
            return r
        for _ in range(2):  # twice is enough (Kahan, Parlett)
            r = r - torch.bmm(torch.bmm(r, basis.transpose(1, 2)), basis)
        return r

    def next_block(candidates: torch.Tensor, basis: torch.Tensor | None,
                   scale: torch.Tensor | None = None) -> tuple[torch.Tensor, bool]:
        """Orthonormalise the p candidates against the basis and each other; a candidate that has
        (numerically) nothing new is replaced by a fresh random vector. Also says whether the basis was
        found invariant under J^T J while J^T J is not zero on it (a candidate of size > 1e-10 scale lost):
        eigenvalues of multiplicity above p may then have more copies outside it."""
        size = torch.linalg.vector_norm(candidates, dim=2, keepdim=True)
        candidates = project_out(candidates, basis)
        fresh = None
        invariant = False
        columns: list[torch.Tensor] = []
        for j in range(p):
            r = project_out(candidates[:, j:j + 1], torch.stack(columns, 1)) if columns else candidates[:, j:j + 1]
            length = torch.linalg.vector_norm(r, dim=2, keepdim=True)
            lost = (length <= dependent * size[:, j:j + 1]) | (length <= tiny)
            if bool(lost.any()):
                if scale is not None:
                    invariant |= bool((lost & (size[:, j:j + 1] > 1e-10 * scale.view(-1, 1, 1))).any())
                fresh = random_block() if fresh is None else fresh
                current = torch.cat([t for t in (basis, torch.stack(columns, 1) if columns else None)
                                     if t is not None], 1) if (basis is not None or columns) else None
                r = torch.where(lost, project_out(fresh[:, j:j + 1], current), r)
                length = torch.linalg.vector_norm(r, dim=2, keepdim=True)
            columns.append((r / length.clamp_min(tiny))[:, 0])
        return torch.stack(columns, 1), invariant

    basis, _ = next_block(random_block(), None)
    since_restart = None
    images: torch.Tensor | None = None
    while True:
        moved = apply(basis[:, -p:])
        images = moved if images is None else torch.cat([images, moved], 1)
        m = images.shape[1]
        t = torch.bmm(basis, images.transpose(1, 2))
        values, vectors = torch.linalg.eigh(0.5 * (t + t.transpose(1, 2)))
        theta = values.flip(-1)[:, :k].clamp_min(0)
        s_top = vectors.flip(-1)[:, :, :k]
        ritz = torch.bmm(s_top.transpose(1, 2), basis)
        error = torch.linalg.vector_norm(torch.bmm(s_top.transpose(1, 2), images) - theta[..., None] * ritz, dim=2)
        null = theta <= 1e-10 * theta[:, :1].clamp_min(tiny)
        residual = torch.where(null, torch.full_like(error, math.nan), error / theta.clamp_min(tiny))
        converged = m >= k and bool(((residual < tol) | null).all())
        if m + p > limit:
            break
        new, invariant = next_block(moved, basis, theta[:, 0])
        # After an invariant space the fresh block needs a few steps before its larger eigenvalues show
        # in the Ritz values (as many as the distinct eigenvalues it meets: 3 on a Fourier mask).
        since_restart = 0 if invariant else (None if since_restart is None else since_restart + 1)
        if converged and not invariant and (since_restart is None or since_restart >= RESTART_STEPS):
            break
        basis = torch.cat([basis, new], 1)
    # Sign convention: the entry of largest magnitude is positive (a deterministic choice of +-v).
    ritz = ritz / torch.linalg.vector_norm(ritz, dim=2, keepdim=True).clamp_min(tiny)
    pivot = ritz.gather(2, ritz.abs().argmax(dim=2, keepdim=True))
    ritz = ritz * torch.where(pivot < 0, -1.0, 1.0).to(ritz.dtype)
    vectors = torch.stack([_unflat(ritz[:, i], (b, *shape[1:]), complex_) for i in range(ritz.shape[1])], 1)
    return SpectrumResult(theta.sqrt(), vectors, residual, m, m, lin.clean[::p])


def leading_directions(net: Callable, physics, x: torch.Tensor, count: int = 1, *, domain: str = "image",
                       tol: float = 1e-3, iterations: int | None = None, block: int = 4,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """The top `count` right singular vectors of the local Jacobian of `net` at each image, shaped as
    `survey.tasks.budget.worst_case(..., starts=...)` takes them: (count, B, *input shape), unit norm.

    A thin use of `top_singular` (Lanczos with a residual tolerance `tol`) for search starts: v_1 is the
    direction that a linearisation says moves the output most per unit perturbation.
    """
    found = top_singular(net, physics, x, count, domain=domain, tol=tol, iterations=iterations, block=block,
                         generator=generator)
    return found.vectors.transpose(0, 1).contiguous()


def effective_rank(sigma: torch.Tensor) -> torch.Tensor:
    """(sum sigma)^2 / sum sigma^2 along the last axis: (B, k) -> (B,); NaN when all are 0."""
    total = sigma.sum(-1)
    squares = sigma.square().sum(-1)
    return torch.where(squares > 0, total.square() / squares.clamp_min(torch.finfo(sigma.dtype).tiny),
                       torch.full_like(total, math.nan))


#: Network -> {(domain, physics id): bound}; the bound needs many power iterations, and an engine actor
#: holds one network for many units.
_BOUNDS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def cached_upper_bound(net: Any, physics, domain: str) -> float | None:
    """`survey.nets.lipschitz.lipschitz_bound(net, physics, domain).value`, cached per network object."""
    from survey.nets.lipschitz import lipschitz_bound

    try:
        per = _BOUNDS.setdefault(net, {})
    except TypeError:  # not weak-referenceable: compute every time
        return lipschitz_bound(net, physics, domain=domain).value
    key = (domain, id(physics))
    if key not in per:
        per[key] = lipschitz_bound(net, physics, domain=domain).value
    return per[key]


SPECTRUM_COLUMNS: dict[str, Column] = {
    **LABELS,
    "image_id": Column("id of the image"),
    "image_index": Column("index of the image in its unit (indexes the per_image/ tensors)"),
    "domain": Column("where the perturbation lives: 'image' (r -> f(A(x + r))) or 'measurement' (e -> f(Ax + e), "
                     "e on the measured entries)"),
    "k": Column("rank of the singular value, 1-based (1 is the largest)"),
    "k_computed": Column("how many singular values were computed per image"),
    "sigma": Column("k-th singular value of the network's local Jacobian (output change per unit input change)"),
    "sigma_rel": Column("sigma ||x|| / ||f(Ax)|| (||Ax|| in the measurement domain): comparable with the budget "
                        "search's gain"),
    "residual": Column("||J^T J v - sigma^2 v|| / sigma^2 of the network's k-th pair (None for sigma = 0)"),
    "effective_rank": Column("(sum sigma)^2 / sum sigma^2 over the network's k computed values"),
    "iterations": Column("Krylov dimension reached by the network's Lanczos run (J^T J products)"),
    "upper_bound": Column("global upper bound on the network's Lipschitz constant for this domain's map (layer "
                          "norms along its graph); None where a layer has no bound"),
    "ref_sigma": Column("k-th singular value of the unrolled reference solver's local Jacobian (rows with a "
                        "reference only)"),
    "ref_sigma_rel": Column("ref_sigma ||x|| / ||g(Ax)|| (||Ax|| in the measurement domain)"),
    "ref_residual": Column("||J^T J v - sigma^2 v|| / sigma^2 of the reference's k-th pair"),
    "ref_effective_rank": Column("effective rank of the reference's k computed values"),
    "h_sigma": Column("k-th singular value of the easy reconstruction H's map (Re H(A .) or Re H(P .))"),
    "h_sigma_rel": Column("h_sigma ||x|| / ||Re H(Ax)|| (||Ax|| in the measurement domain)"),
    "h_residual": Column("||J^T J v - sigma^2 v|| / sigma^2 of H's k-th pair"),
    "h_effective_rank": Column("effective rank of H's k computed values"),
}


@register("spectrum")
@dataclass(kw_only=True)
class SpectrumTask(Task):
    """Top-k singular values and vectors of the local Jacobian, for the network, the reference and H.

    k: how many singular values per image; domain: "image" or "measurement"; iterations: most J^T J
    products per image and method (default max(3k, k + 30)); block: vectors per Lanczos block (each
    product runs on images x block samples, so time and memory per product grow with it; 1 is plain
    Lanczos, cheapest at large sizes, a larger block resolves clustered values faster); tol: residual
    tolerance that stops Lanczos early; with_reference / with_h: also the unrolled reference solver and H on the same
    images; keep_vectors: return the singular vectors (tensors "v", "ref_v", "h_v", aligned with the
    rows); upper_bound: compute the network's global Lipschitz bound (survey.nets.lipschitz).
    """

    table = "spectrum"
    title = "Local Jacobian spectrum"
    columns = SPECTRUM_COLUMNS
    example = dict(k=3, iterations=8)
    needs_grad = True

    k: int = 20
    domain: str = "image"
    iterations: int | None = None
    block: int = 4
    tol: float = 1e-4
    with_reference: bool = True
    with_h: bool = True
    keep_vectors: bool = True
    upper_bound: bool = True

    def __post_init__(self):
        validate.integer(self, "k", low=1)
        validate.choice(self, "domain", tuple(DOMAINS))
        if self.iterations is not None:
            validate.integer(self, "iterations", low=1)
        validate.integer(self, "block", low=1)
        validate.positive(self, "tol")
        for key in ("with_reference", "with_h", "keep_vectors", "upper_bound"):
            validate.flag(self, key)

    def run(self, ctx: TaskContext, generator: torch.Generator) -> TaskResult:
        from survey.nets.exact import IdentityNet

        physics, x = ctx.physics, ctx.images
        targets: dict[str, Callable] = {"": ctx.net}
        if self.with_reference and ctx.reference is not None:
            targets["ref_"] = differentiable(ctx.reference)
        if self.with_h:
            targets["h_"] = IdentityNet()
        with torch.no_grad():
            y = physics.A(x)
            scale = as_domain(self.domain).scale(x, y)
        columns: dict[str, Any] = {}
        tensors: dict[str, torch.Tensor] = {}
        count = None
        state = generator.get_state()
        for prefix, f in targets.items():
            generator.set_state(state)  # every method starts from the same random vectors
            found = top_singular(f, physics, x, self.k, domain=self.domain, iterations=self.iterations,
                                 block=self.block, tol=self.tol, generator=generator)
            kk = found.sigma.shape[1]
            count = kk if count is None else min(count, kk)
            rel = found.sigma * (scale / norms(found.clean).clamp_min(torch.finfo(scale.dtype).tiny))[:, None]
            columns[prefix] = (found, rel, effective_rank(found.sigma))
        b = x.shape[0]
        n = count
        index = torch.arange(b).repeat_interleave(n)
        rank = torch.arange(1, n + 1).repeat(b)
        bound = cached_upper_bound(ctx.net, physics, self.domain) if self.upper_bound else None
        cols: dict[str, Any] = {
            "image_id": [ctx.image_ids[i] for i in index.tolist()], "image_index": index.tolist(),
            "domain": [self.domain] * (b * n), "k": rank.tolist(), "k_computed": [n] * (b * n),
            "upper_bound": [bound] * (b * n),
        }
        for prefix, (found, rel, erank) in columns.items():
            cols[f"{prefix}sigma"] = found.sigma[:, :n].reshape(-1)
            cols[f"{prefix}sigma_rel"] = rel[:, :n].reshape(-1)
            cols[f"{prefix}residual"] = [None if math.isnan(v) else v
                                         for v in found.residual[:, :n].reshape(-1).tolist()]
            cols[f"{prefix}effective_rank"] = [None if math.isnan(v) else v
                                               for v in erank.repeat_interleave(n).tolist()]
            if prefix == "":
                cols["iterations"] = [found.iterations] * (b * n)
            if self.keep_vectors:
                tensors[f"{prefix}v"] = found.vectors[:, :n].reshape(b * n, *found.vectors.shape[2:]).detach().cpu()
        return TaskResult(rows_from_columns(cols, b * n), tensors)


__all__ = ["Linearisation", "SPECTRUM_COLUMNS", "SpectrumResult", "SpectrumTask", "cached_upper_bound",
           "effective_rank", "leading_directions", "top_singular"]
