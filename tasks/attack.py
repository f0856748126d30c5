"""Worst-case perturbations: Algorithms 1 and 2 of Antun et al. (PNAS 2020, Methods).

Maximise Q(r) = 1/2 ||f(y + A r) - p(x)||^2 - lam/2 ||r||^2 by gradient ascent with momentum

    v <- gamma v + eta grad Q(r),   r <- r + v,   r0 = tau * Unif[0, 1]^N,

with grad Q(r) = Re A* grad_u g(u) - lam r, g(u) = 1/2 ||f(u) - p(x)||^2 at u = y + A r
(grad_u by autograd). Algorithm 2 (Radon) replaces A* by the FBP operator B = physics.H, scaled by
||A||^2: B approximates the pseudo-inverse, B ~ A*/||A||^2 (||A|| ~ 56 for 50 views at 64 x 64), so
the unscaled B makes steps thousands of times shorter than A* and r barely moves (measured: ||r||/||x||
0.0015 after 200 iterations at eta = 1e-3). Scaled, B keeps its direction and eta means the same for
both algorithms and every operator.
p(x) = f(Ax) ("fAx") or x ("x"). As printed, Algorithm 2 leaves lam r outside eta and the paper's
eq. (12) drops the 1/2 of g; here both algorithms take the step eta (grad - lam r) with g as above,
so lam and eta mean the same thing for every operator. With domain="measurement" the search runs on e in measurement
space (complex for Fourier), u = y + e, and grad_u is used directly.

The iteration does not converge when lam is below the squared local gain: ||r|| grows
geometrically. Snapshots are therefore taken when ||r|| / ||x|| first
crosses given levels (`snapshot_levels`) as well as at fixed iterations, and the search stops
once every snapshot has fired. Defaults (eta = tau = 1e-3) suit images in [0, 1]: the paper's
Deep MRI setting eta = tau = 1e-2 (preset "deepmri") overshoots small norms.

All images x restarts are stacked into one batch, so each network call handles B * R samples;
the objective is the sum of per-sample objectives, whose gradient is the per-sample gradients
as long as the network treats samples independently (it is run in eval mode).

Measured on our zoo (4 test images each, default settings, eta = 1e-3, 300 iterations at most; mean
relative output change ||f(A(x+r)) - f(Ax)|| / ||f(Ax)|| at the snapshot where ||r|| / ||x|| first
passes 2%, network against the compressed-sensing reference on the same perturbed data):

    automap (MRI, 32 x 32)   0.119 vs 0.023  (5.2x)     ell50 (CT, 50 views)      0.043 vs 0.021 (2.1x)
    deepmri (MRI)            0.058 vs 0.028  (2.1x)     med50 (CT, 50 views)      0.038 vs 0.022 (1.7x)
    dagan   (MRI)            0.043 vs 0.027  (1.6x)     lactunet (CT, 150 deg)    0.033 vs 0.019 (1.7x)
    mrivn   (parallel MRI)   0.048 vs 0.029  (1.7x)     dncnn (denoising)         0.021 vs 0.018 (1.1x)

so every reconstruction network amplifies its worst case well beyond the reference, AUTOMAP most;
the denoiser does not (its worst case is barely worse than TV denoising's response). Those reference
numbers are transferred (the reference on the network's perturbation), not the reference's own worst case.

`search="budget"` answers the referee's question instead: for each
budget eps in `budgets`, the worst r with ||r|| <= eps ||x|| (||e|| <= eps ||Ax|| in the measurement
domain) by projected normalised-gradient ascent with momentum (`survey.tasks.budget.worst_case`),
starts: `restarts` zero-mean random directions and, with `singular_start`, the top singular direction
of the local Jacobian, both signs (A v_1 in the measurement domain); one row per (attacked, image, budget), the
best over starts and gradient rules, with gain = (||f(A(x + r)) - f(Ax)|| / ||f(Ax)||) / (||r|| / ||x||)
and the best gain after 25/50/100% of the iterations. On Radon, gradient="auto" runs every start with
A^T and with B = FBP and keeps the better; B is scaled by ||A||^2 (so B ~ A^+ ~ A^T / ||A||^2 is as long
as A^T), which the normalised step makes irrelevant: B changes the direction only. `matched` attacks
the reference solver (unrolled) and H (the easy linear reconstruction, `survey.nets.exact.IdentityNet`)
with the same search, budgets, iterations, random starts and images in the same unit
(`attacked` = 'reference' / 'H'); the network's rows keep the transferred ref_* columns.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F

from survey.metrics import norms, psnr, ssim
from survey.nets.exact import IdentityNet
from survey.tasks import validate
from survey.tasks.budget import differentiable, top_singular_direction, worst_case
from survey.tasks.base import LABELS, Column, Task, TaskContext, TaskResult, eval_mode, register

#: Parameter sets of the paper's Table 1 (Antun et al., PNAS 2020, SI). The paper's text around Fig. 7 swaps the
#: two AUTOMAP p choices relative to the table; the table is followed here.
PRESETS: dict[str, dict[str, Any]] = {
    "deepmri": dict(lam=1e-3, gamma=0.9, eta=1e-2, tau=1e-2, p="fAx"),
    "automap-fig2": dict(lam=0.1, gamma=0.9, eta=1e-3, tau=1e-5, p="fAx"),
    "automap-fig7": dict(lam=0.1, gamma=0.9, eta=1e-3, tau=1e-5, p="x"),
    "mrivn": dict(lam=1.0, gamma=0.9, eta=5e-3, tau=1e-3, p="fAx"),
    "med50": dict(lam=20.0, gamma=0.9, eta=5e-3, tau=5e-3, p="fAx"),
}

P_CHOICES = ("fAx", "x")
DOMAINS = ("image", "measurement")
GRADIENT_RULES = ("auto", "adjoint", "fbp", "both")
SUPPORTS = ("none", "foreground")
TARGETS = ("network", "reference", "H")
#: "paper": Algorithms 1 and 2 with snapshots (the default); "budget": the worst case at each budget.
SEARCHES = ("paper", "budget")
#: Columns only budget rows fill (None on paper rows).
BUDGET_ONLY = ("budget", "gain_at_25", "gain_at_50", "gain_at_100", "start", "matched")


class Snapshot(NamedTuple):
    kind: str      # "iteration" or "level"
    target: float  # the iteration count, or the ||r|| / ||x|| level


class SearchResult(NamedTuple):
    """Perturbations at each snapshot for a stacked batch of N samples.

    perturbations: (S, N, *r.shape[1:]); iteration: (S, N) long, the iterate index (0 = r0);
    reached: (S, N) bool, False when a level was never crossed (then the last iterate is kept);
    iterations_run: how many updates were made before stopping.
    """

    snapshots: list[Snapshot]
    perturbations: torch.Tensor
    iteration: torch.Tensor
    reached: torch.Tensor
    iterations_run: int


def snapshot_plan(iterations: int, snapshot_iterations, snapshot_levels) -> list[Snapshot]:
    """Iteration snapshots (ascending) then level snapshots (ascending); the final iterate if none."""
    plan = [Snapshot("iteration", float(k)) for k in sorted(set(int(k) for k in snapshot_iterations))]
    plan += [Snapshot("level", float(v)) for v in sorted(set(float(v) for v in snapshot_levels))]
    return plan or [Snapshot("iteration", float(iterations))]


def _squared_error(diff: torch.Tensor) -> torch.Tensor:
    return diff.abs().square() if torch.is_complex(diff) else diff.square()


def search(f: Callable[[torch.Tensor], torch.Tensor], physics, x: torch.Tensor, p_target: torch.Tensor,
           r0: torch.Tensor, *, lam: float, gamma: float, eta: float, iterations: int,
           snapshots: list[Snapshot], domain: str = "image", gradient: str = "adjoint",
           support: torch.Tensor | None = None) -> SearchResult:
    """Run the momentum ascent on Q for a stacked batch; the attack's numerical core.

    f: y -> image, (N, ...) measurements to (N, 1, n, n); x: (N, 1, n, n) ground truths;
    p_target: (N, 1, n, n) the p(x) of Q; r0: (N, 1, n, n) (image domain) or measurement-shaped
    (measurement domain) starting point; gradient: "adjoint" (Algorithm 1) or "fbp" (Algorithm 2,
    image domain only); support: optional 0/1 mask broadcastable to r0, applied to r0 and every step.
    A level snapshot fires at the first iterate i with ||r_i|| / ||x|| >= level (||A x|| in the
    measurement domain); an iteration snapshot k keeps r_k.
    """
    y = physics.A(x)
    scale = norms(x) if domain == "image" else norms(y)
    fbp_scale = physics.norm() ** 2 if gradient == "fbp" else 1.0
    r = r0 if support is None else r0 * support
    velocity = torch.zeros_like(r)
    count = r.shape[0]
    kept = r.new_zeros((len(snapshots), *r.shape))
    taken = torch.zeros(len(snapshots), count, dtype=torch.bool, device=r.device)
    at_iteration = torch.full((len(snapshots), count), -1, dtype=torch.long, device=r.device)
    level_rows = [s for s, snap in enumerate(snapshots) if snap.kind == "level"]
    last_fixed = max((int(snap.target) for snap in snapshots if snap.kind == "iteration"), default=0)

    def grad_q(r: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            u = (y + physics.A(r) if domain == "image" else y + r).detach().requires_grad_(True)
            loss = 0.5 * _squared_error(f(u) - p_target).sum()
            (grad_u,) = torch.autograd.grad(loss, u)
        if domain == "image":
            grad = fbp_scale * physics.H(grad_u) if gradient == "fbp" else physics.A_adjoint(grad_u)
            if torch.is_complex(grad) and not torch.is_complex(r):
                grad = grad.real
        else:
            grad = grad_u
        grad = grad - lam * r
        return grad if support is None else grad * support

    step = 0
    while True:
        ratio = norms(r) / scale
        for s, snap in enumerate(snapshots):
            if snap.kind == "iteration":
                hit = torch.full_like(taken[s], step == int(snap.target))
            else:
                hit = (ratio >= snap.target) & ~taken[s]
            kept[s] = torch.where(hit.view(-1, *([1] * (r.ndim - 1))), r, kept[s])
            taken[s] |= hit
            at_iteration[s] = torch.where(hit, torch.full_like(at_iteration[s], step), at_iteration[s])
        if step >= iterations:
            break
        if step >= last_fixed and bool(taken[level_rows].all()):
            break
        velocity = gamma * velocity + eta * grad_q(r)
        r = r + velocity
        step += 1
    # Levels never crossed keep the last iterate, flagged reached=False.
    missing = ~taken
    for s in range(len(snapshots)):
        kept[s] = torch.where(missing[s].view(-1, *([1] * (r.ndim - 1))), r, kept[s])
        at_iteration[s] = torch.where(missing[s], torch.full_like(at_iteration[s], step), at_iteration[s])
    return SearchResult(snapshots, kept, at_iteration, taken, step)


def _differentiable(reference: Any) -> Any:
    """The reference solver in its unrolled (autograd-carrying) mode, without touching the original."""
    if hasattr(reference, "unrolled") and not reference.unrolled:
        reference = copy.copy(reference)
        reference.unrolled = True
    return reference


def foreground_support(x: torch.Tensor, threshold: float, dilation: int) -> torch.Tensor:
    """0/1 mask of pixels with |x| > threshold, grown by `dilation` pixels: (N, 1, n, n) same dtype."""
    mask = (x.abs() > threshold).to(x.real.dtype if torch.is_complex(x) else x.dtype)
    if dilation > 0:
        mask = F.max_pool2d(mask, 2 * dilation + 1, stride=1, padding=dilation)
    return mask


#: Columns of attack rows: one row per (image, restart, snapshot).
ATTACK_COLUMNS: dict[str, Column] = {
    **LABELS,
    "attacked": Column("what the search attacked: 'network', 'reference' (the unrolled CS solver) or 'H' (the "
                       "easy linear reconstruction)"),
    "search": Column("'paper' (Algorithms 1 / 2, snapshots of the ascent) or 'budget' (worst case at each budget)"),
    "budget": Column("budget eps: ||r|| <= eps ||x|| (||e|| <= eps ||A x|| in the measurement domain); None on "
                     "paper rows"),
    "gain": Column("(||f(y + A r) - f(y)|| / ||f(y)||) / (||r|| / ||x||) (||e|| / ||A x|| in the measurement "
                   "domain): 1 is what a faithful method does"),
    "gain_at_25": Column("budget search: best gain after 25% of the iterations (convergence)"),
    "gain_at_50": Column("budget search: best gain after 50% of the iterations"),
    "gain_at_100": Column("budget search: best gain after all iterations (= gain)"),
    "start": Column("budget search: the winning start, 'singular' (top singular direction) or 'random'"),
    "matched": Column("budget search: the targets attacked with the same search in the unit, comma-separated"),
    "preset": Column("name of the paper's Table 1 parameter set, '' when none"),
    "lam": Column("penalty lambda of Q on ||r||^2"),
    "gamma": Column("momentum of the ascent"),
    "eta": Column("learning rate of the ascent"),
    "tau": Column("scale of the uniform start r0", "image units"),
    "p": Column("target p(x) of Q: 'fAx' (the clean reconstruction) or 'x' (the truth)"),
    "domain": Column("where r lives: 'image' or 'measurement'"),
    "gradient": Column("gradient rule used: 'adjoint' (Algorithm 1) or 'fbp' (Algorithm 2); for budget rows "
                       "the winning rule"),
    "support": Column("support mask of image-domain r: 'none' or 'foreground'"),
    "max_iterations": Column("iteration budget of the search"),
    "restarts": Column("independent starts per image"),
    "iterations_run": Column("updates made before every snapshot had fired (for the whole batch)"),
    "image_id": Column("stable id of the ground-truth image"),
    "restart": Column("index of the start r0 of this image (budget rows: of the winning start, given ones first)"),
    "snapshot": Column("how the snapshot was taken: 'iteration' or 'level' ('budget' for budget rows)"),
    "snapshot_target": Column("the snapshot's iteration count, or its ||r||/||x|| level (the budget)"),
    "reached": Column("False when a level was never crossed (the last iterate is reported)"),
    "iteration": Column("iterate index of the snapshot (0 = r0)"),
    "r_norm": Column("||r|| of the perturbation (||e|| in the measurement domain)", "image units"),
    "r_rel": Column("||r|| / ||x|| (||e|| / ||A x|| in the measurement domain)"),
    "Ar_norm": Column("||A r||, the perturbation's size in measurement space", "measurement units"),
    "out_change": Column("||f(y + A r) - f(y)||", "image units"),
    "out_change_rel": Column("||f(y + A r) - f(y)|| / ||f(y)||"),
    "err_rel": Column("||f(y + A r) - x|| / ||x||"),
    "psnr": Column("PSNR of f(y + A r) against x", "dB"),
    "ssim": Column("SSIM of f(y + A r) against x"),
    "psnr_visibility": Column("PSNR of x + r against x: how visible the perturbation is", "dB"),
    "ratio": Column("||f(y + A r) - f(y)|| / ||r||: output change per unit of perturbation"),
    "r_outside_frac": Column("share of ||r||^2 outside the foreground support"),
    "objective": Column("Q(r) = 1/2 ||f(y + A r) - p(x)||^2 - lam/2 ||r||^2"),
    "psnr_clean": Column("PSNR of the clean reconstruction f(y) against x", "dB"),
    "ssim_clean": Column("SSIM of the clean reconstruction f(y) against x"),
    "err_rel_clean": Column("||f(y) - x|| / ||x||"),
    "ref_out_change": Column("the reference solver's ||g(y + A r) - g(y)|| on the same data (rows with a "
                             "reference only)", "image units"),
    "ref_out_change_rel": Column("the reference's ||g(y + A r) - g(y)|| / ||g(y)||"),
    "ref_err_rel": Column("the reference's ||g(y + A r) - x|| / ||x||"),
    "ref_psnr": Column("PSNR of the reference's g(y + A r) against x", "dB"),
    "ref_ssim": Column("SSIM of the reference's g(y + A r) against x"),
    "ref_ratio": Column("the reference's ||g(y + A r) - g(y)|| / ||r||"),
    "ref_psnr_clean": Column("PSNR of the reference's g(y) against x", "dB"),
    "ref_ssim_clean": Column("SSIM of the reference's g(y) against x"),
}


@register("attack")
@dataclass(kw_only=True)
class Attack(Task):
    """Worst-case perturbation search (Algorithm 1; Algorithm 2 for Radon) with snapshots.

    lam, gamma, eta, tau: Q's penalty, momentum, learning rate, r0 scale (images in [0, 1]).
    p: "fAx" (move away from the clean reconstruction) or "x" (away from the truth).
    domain: "image" (r in image space) or "measurement" (e in measurement space).
    gradient: "adjoint" (Algorithm 1), "fbp" (Algorithm 2, B = physics.H), "auto" (the operator's
    `attack_gradient` in the image domain: fbp on Radon, as the paper; adjoint in the measurement domain).
    iterations: at most M updates; snapshot_iterations: iterate counts to keep; snapshot_levels:
    ||r||/||x|| levels (||e||/||Ax|| in the measurement domain), kept at the first crossing.
    restarts: independent r0 per image. support: "none" or "foreground" (|x| > support_threshold,
    dilated by support_dilation pixels; image domain only). Measurement-domain perturbations are
    always confined to the measured entries (`physics.measured_mask()`). target: "network", or "reference" to
    attack the unrolled reference solver with the same budget, "H" the easy linear reconstruction.
    keep_tensors: return r and outputs. with_reference: also reconstruct every snapshot with the
    reference solver (the transferred ref_* columns). label: free text recorded in rows (set to the
    preset name by `Attack.preset`).
    search: "paper" (the above, the default) or "budget" (see the module docstring), whose own
    parameters are budgets (eps values), restarts (random starts), singular_start (also start from the
    top singular direction of the local Jacobian, `singular_iterations` power iterations), step and
    momentum (`worst_case`'s), gradient ("auto": both rules on Radon; "both"), matched (targets
    attacked with the same search in the same unit: "reference", "H"). lam, eta, tau, p and the
    snapshots are the paper search's and unused by the budget search.
    """

    table = "attacks"
    title = "Worst-case attack"
    columns = ATTACK_COLUMNS
    example = dict(iterations=4, eta=0.01, snapshot_iterations=[0, 4], snapshot_levels=[0.005])
    needs_grad = True  # the ascent differentiates the network; everything else runs without autograd

    lam: float = 0.01
    gamma: float = 0.9
    eta: float = 1e-3
    tau: float = 1e-3
    p: str = "fAx"
    domain: str = "image"
    gradient: str = "auto"
    iterations: int = 300
    snapshot_iterations: tuple[int, ...] = ()
    snapshot_levels: tuple[float, ...] = (0.01, 0.02, 0.05)
    restarts: int = 1
    support: str = "none"
    support_threshold: float = 0.05
    support_dilation: int = 2
    target: str = "network"
    keep_tensors: bool = True
    with_reference: bool = True
    label: str = ""
    search: str = "paper"
    budgets: tuple[float, ...] = (0.01, 0.02, 0.05)
    singular_start: bool = True
    singular_iterations: int = 10
    step: float = 2.0
    momentum: float = 0.5
    matched: tuple[str, ...] = ()

    def __post_init__(self):
        name = type(self).__name__
        for key, choices in (("p", P_CHOICES), ("domain", DOMAINS), ("gradient", GRADIENT_RULES),
                             ("support", SUPPORTS), ("target", TARGETS), ("search", SEARCHES)):
            validate.choice(self, key, choices)
        validate.sequence(self, "budgets", validate.numbers_in(0.0, low_open=True), "budgets > 0", nonempty=True)
        validate.sequence(self, "matched", lambda v: v in TARGETS, f"targets among {list(TARGETS)}", convert=str)
        validate.flag(self, "singular_start")
        validate.integer(self, "singular_iterations", low=1)
        validate.positive(self, "step")
        validate.number(self, "momentum", low=0.0, high=1.0, high_open=True)
        if self.search == "paper" and (self.gradient == "both" or self.matched):
            raise ValueError(f"{name}: gradient='both' and matched targets belong to search='budget'")
        if self.target in self.matched:
            raise ValueError(f"{name}: target {self.target!r} is also in matched {list(self.matched)}")
        for key in ("lam", "gamma", "support_threshold"):
            validate.number(self, key, low=0.0)
        for key in ("eta", "tau"):
            validate.positive(self, key)
        for key, low in (("iterations", 0), ("restarts", 1), ("support_dilation", 0)):
            validate.integer(self, key, low=low)
        validate.sequence(self, "snapshot_iterations", validate.integers_in(0, self.iterations),
                          f"iteration counts in 0..iterations={self.iterations}", convert=int)
        validate.sequence(self, "snapshot_levels", validate.numbers_in(0.0, low_open=True), "levels > 0")
        validate.flag(self, "keep_tensors")
        validate.flag(self, "with_reference")
        validate.text(self, "label")
        if self.domain == "measurement" and self.gradient == "fbp":
            raise ValueError(f"{name}: gradient='fbp' (Algorithm 2) needs domain='image'")
        if self.domain == "measurement" and self.support != "none":
            raise ValueError(f"{name}: support masks apply to image-domain perturbations only")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "Attack":
        """An attack with the paper's Table 1 parameters `name` (see PRESETS), fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown attack preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], "label": name, **overrides})

    def gradient_rule(self, physics) -> str:
        """The rule used on `physics`: the asked one, or for "auto" the operator's own image-domain rule."""
        if self.gradient != "auto":
            return self.gradient
        return getattr(physics, "attack_gradient", "adjoint") if self.domain == "image" else "adjoint"

    def run(self, ctx: TaskContext, generator: torch.Generator) -> TaskResult:
        if self.search == "budget":
            with torch.no_grad():  # `worst_case` turns autograd on for its gradients only
                return self._run_budget(ctx, generator)
        physics, x_images = ctx.physics, ctx.images
        if self.target == "H":
            attacked = IdentityNet()
        elif self.target == "reference":
            if ctx.reference is None:
                raise ValueError(f"{type(self).__name__}: target='reference' needs a reference solver in the context")
            attacked = _differentiable(ctx.reference)
        else:
            attacked = ctx.net
        reference = ctx.reference if self.target == "network" and self.with_reference else None
        x = x_images.repeat_interleave(self.restarts, dim=0)  # sample n = image * restarts + restart
        with eval_mode(attacked), torch.no_grad():  # `search` turns autograd on for its gradient only
            return self._run(ctx, attacked, reference, physics, x, generator)

    def _run(self, ctx: TaskContext, attacked, reference, physics, x: torch.Tensor,
             generator: torch.Generator) -> TaskResult:
        def f(u: torch.Tensor) -> torch.Tensor:
            return attacked(u, physics)

        y = physics.A(x)
        clean = f(y)
        p_target = clean if self.p == "fAx" else x
        r0 = self._initial(y if self.domain == "measurement" else x, generator)
        if self.domain == "measurement":
            support = physics.measured_mask().to(device=y.device, dtype=y.real.dtype)
        elif self.support == "foreground":
            support = foreground_support(x, self.support_threshold, self.support_dilation)
        else:
            support = None
        rule = self.gradient_rule(physics)
        plan = snapshot_plan(self.iterations, self.snapshot_iterations, self.snapshot_levels)
        found = search(f, physics, x, p_target, r0, lam=self.lam, gamma=self.gamma, eta=self.eta,
                       iterations=self.iterations, snapshots=plan, domain=self.domain, gradient=rule,
                       support=support)
        columns, tensors = self._measure(found, f, reference, physics, x, y, clean)
        return self._rows(ctx, found, columns, tensors, rule)

    def _initial(self, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """r0 = tau * Unif[0, 1] (real and imaginary parts each for complex measurements)."""
        real_dtype = like.real.dtype if torch.is_complex(like) else like.dtype
        draw = torch.rand(like.shape, generator=generator, device=generator.device, dtype=real_dtype)
        if torch.is_complex(like):
            draw = torch.complex(draw, torch.rand(like.shape, generator=generator, device=generator.device,
                                                  dtype=real_dtype))
        return (self.tau * draw).to(like.device)

    def _measure(self, found: SearchResult, f, reference, physics, x, y, clean):
        """Per-snapshot metrics as (S, N) tensors, and the tensors worth keeping as (S, N, ...)."""
        image_domain = self.domain == "image"
        x_norm, y_norm, clean_norm = norms(x), norms(y), norms(clean)
        fg = foreground_support(x, self.support_threshold, self.support_dilation)
        ref_clean = reference(y, physics) if reference is not None else None
        cols: dict[str, list[torch.Tensor]] = {}
        keep: dict[str, list[torch.Tensor]] = {"r": [], "out": []}
        if reference is not None:
            keep["ref_out"] = []

        def add(name: str, value: torch.Tensor) -> None:
            cols.setdefault(name, []).append(value)

        for r in found.perturbations:
            r_image = r if image_domain else physics.H(r)
            r_image = r_image.real if torch.is_complex(r_image) and not torch.is_complex(x) else r_image
            shift = physics.A(r) if image_domain else r
            u = y + shift
            out = f(u)
            r_norm = norms(r)
            change = norms(out - clean)
            add("r_norm", r_norm)
            add("r_rel", r_norm / (x_norm if image_domain else y_norm))
            add("Ar_norm", norms(shift))
            add("out_change", change)
            add("out_change_rel", change / clean_norm)
            add("err_rel", norms(out - x) / x_norm)
            add("psnr", psnr(out, x))
            add("ssim", ssim(out, x))
            add("psnr_visibility", psnr(x + r_image, x))
            add("ratio", change / r_norm)
            add("r_outside_frac", norms(r_image * (1 - fg)).square() / norms(r_image).square())
            p_target = clean if self.p == "fAx" else x
            add("objective", 0.5 * norms(out - p_target).square() - 0.5 * self.lam * r_norm.square())
            keep["r"].append(r)
            keep["out"].append(out)
            if reference is not None:
                ref_out = reference(u, physics)
                ref_change = norms(ref_out - ref_clean)
                add("ref_out_change", ref_change)
                add("ref_out_change_rel", ref_change / norms(ref_clean))
                add("ref_err_rel", norms(ref_out - x) / x_norm)
                add("ref_psnr", psnr(ref_out, x))
                add("ref_ssim", ssim(ref_out, x))
                add("ref_ratio", ref_change / r_norm)
                keep["ref_out"].append(ref_out)
        columns = {k: torch.stack(v) for k, v in cols.items()}
        shape = (len(found.snapshots), x.shape[0])
        columns["psnr_clean"] = psnr(clean, x).expand(shape)
        columns["ssim_clean"] = ssim(clean, x).expand(shape)
        columns["err_rel_clean"] = (norms(clean - x) / x_norm).expand(shape)
        if reference is not None:
            columns["ref_psnr_clean"] = psnr(ref_clean, x).expand(shape)
            columns["ref_ssim_clean"] = ssim(ref_clean, x).expand(shape)
        return columns, {k: torch.stack(v) for k, v in keep.items()}

    def _rows(self, ctx: TaskContext, found: SearchResult, columns, tensors, rule: str) -> TaskResult:
        snapshots = found.snapshots
        values = {k: v.detach().cpu().tolist() for k, v in columns.items()}
        iteration = found.iteration.cpu().tolist()
        reached = found.reached.cpu().tolist()
        shared = {"attacked": self.target, "search": "paper", **dict.fromkeys(BUDGET_ONLY),
                  "preset": self.label, "lam": float(self.lam),
                  "gamma": float(self.gamma), "eta": float(self.eta), "tau": float(self.tau), "p": self.p,
                  "domain": self.domain, "gradient": rule, "support": self.support,
                  "max_iterations": int(self.iterations), "restarts": int(self.restarts),
                  "iterations_run": int(found.iterations_run)}
        rows: list[dict[str, Any]] = []
        order: list[tuple[int, int]] = []
        for b, image_id in enumerate(ctx.image_ids):
            for restart in range(self.restarts):
                n = b * self.restarts + restart
                for s, snap in enumerate(snapshots):
                    row = {**shared, "image_id": image_id, "restart": restart, "snapshot": snap.kind,
                           "snapshot_target": snap.target, "reached": bool(reached[s][n]),
                           "iteration": int(iteration[s][n])}
                    row.update({k: float(v[s][n]) for k, v in values.items()})
                    row["gain"] = row["out_change_rel"] / row["r_rel"] if row["r_rel"] > 0 else None
                    rows.append(row)
                    order.append((s, n))
        kept: dict[str, torch.Tensor] = {}
        if self.keep_tensors and rows:
            s_idx = torch.tensor([s for s, _ in order])
            n_idx = torch.tensor([n for _, n in order])
            kept = {k: v.detach().cpu()[s_idx, n_idx] for k, v in tensors.items()}
        return TaskResult(rows, kept)


    # -- the budget search --------------------------------------------------------------------
    def _solver(self, ctx: TaskContext, name: str):
        if name == "network":
            return ctx.net
        if name == "H":
            return IdentityNet()
        if ctx.reference is None:
            raise ValueError(f"{type(self).__name__}: attacking the reference needs a reference solver in the context")
        return ctx.reference

    def _starts(self, f, physics, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """The top singular direction of the local Jacobian per image and its negative, (2, B, *shape)
        (A v_1 in the measurement domain), or None without `singular_start`. Both signs: a singular
        vector has no sign, and a network (unlike a linear map) may respond to +v_1 and -v_1 differently."""
        if not self.singular_start:
            return None
        v1 = top_singular_direction(differentiable(f), physics, x, iterations=self.singular_iterations,
                                    generator=generator)
        v1 = v1 if self.domain == "image" else physics.A(v1)
        return torch.stack([v1, -v1])

    def _run_budget(self, ctx: TaskContext, generator: torch.Generator) -> TaskResult:
        physics, x = ctx.physics, ctx.images
        names = (self.target, *self.matched)
        solvers = {name: self._solver(ctx, name) for name in names}
        support = (foreground_support(x, self.support_threshold, self.support_dilation)
                   if self.domain == "image" and self.support == "foreground" else None)
        state = generator.get_state()
        rows: list[dict[str, Any]] = []
        kept: dict[str, list[torch.Tensor]] = {}
        for name, solver in solvers.items():
            # Every target gets the generator in the same state: the same random starts.
            gen = torch.Generator(device=generator.device)
            gen.set_state(state)
            with eval_mode(solver):
                starts = self._starts(solver, physics, x, gen)
                found = worst_case(solver, physics, x, self.budgets, domain=self.domain,
                                   iterations=self.iterations, restarts=self.restarts, starts=starts,
                                   step=self.step, momentum=self.momentum, gradient=self.gradient,
                                   support=support, generator=gen)
                transferred = ctx.reference if name == "network" and self.with_reference else None

                def f(u: torch.Tensor, solver=solver) -> torch.Tensor:
                    return solver(u, physics)

                y = physics.A(x)
                snapshots = [Snapshot("budget", eps) for eps in self.budgets]
                as_search = SearchResult(snapshots, found.r, None, None, self.iterations)
                columns, tensors = self._measure(as_search, f, transferred, physics, x, y, f(y))
            given = 0 if starts is None else starts.shape[0]
            part_rows, order = self._budget_rows(ctx, name, found, columns, given)
            rows += part_rows
            if self.keep_tensors:
                e_idx = torch.tensor([e for e, _ in order])
                b_idx = torch.tensor([b for _, b in order])
                for key, value in tensors.items():
                    kept.setdefault(key, []).append(value.detach().cpu()[e_idx, b_idx])
        generator.set_state(gen.get_state())
        # Rows of targets without a transferred reference carry its columns as None (one schema per call).
        ref_keys = sorted({k for row in rows for k in row if k.startswith("ref_")})
        for row in rows:
            for key in ref_keys:
                row.setdefault(key, None)
        tensors_out: dict[str, torch.Tensor] = {}
        if self.keep_tensors and rows:
            counts = [len(self.budgets) * x.shape[0]] * len(solvers)
            for key in ("r", "out", "ref_out"):
                parts = kept.get(key)
                if parts is None:
                    continue
                if len(parts) != len(solvers):  # ref_out only for the network: zeros elsewhere
                    like = parts[0]
                    parts = [like if name == "network" else torch.zeros((c, *like.shape[1:]), dtype=like.dtype)
                             for name, c in zip(solvers, counts)]
                tensors_out[key] = torch.cat(parts)
        return TaskResult(rows, tensors_out)

    def _budget_rows(self, ctx: TaskContext, name: str, found, columns, given: int):
        values = {k: v.detach().cpu().tolist() for k, v in columns.items()}
        trace = found.trace.detach().cpu().tolist()
        gain = found.gain.detach().cpu().tolist()
        start = found.start.cpu().tolist()
        rule = found.rule.cpu().tolist()
        shared = {"attacked": name, "search": "budget", "matched": ",".join((self.target, *self.matched)),
                  "preset": self.label, "lam": None, "gamma": float(self.momentum), "eta": None,
                  "tau": None, "p": "fAx", "domain": self.domain, "support": self.support,
                  "max_iterations": int(self.iterations), "restarts": int(self.restarts),
                  "iterations_run": int(self.iterations)}
        rows, order = [], []
        for b, image_id in enumerate(ctx.image_ids):
            for e, eps in enumerate(self.budgets):
                row = {**shared, "gradient": found.rules[rule[e][b]], "image_id": image_id,
                       "restart": int(start[e][b]), "start": "singular" if start[e][b] < given else "random",
                       "snapshot": "budget", "snapshot_target": float(eps), "reached": True,
                       "iteration": int(self.iterations), "budget": float(eps), "gain": float(gain[e][b]),
                       "gain_at_25": float(trace[e][b][0]), "gain_at_50": float(trace[e][b][1]),
                       "gain_at_100": float(trace[e][b][2])}
                row.update({k: float(v[e][b]) for k, v in values.items()})
                row["objective"] = None  # Q belongs to the paper's search
                rows.append(row)
                order.append((e, b))
        return rows, order


@register("attack-reference")
@dataclass(kw_only=True)
class AttackReference(Attack):
    """The same search on the unrolled reference solver: the reference's own worst case."""

    title = "Worst-case attack on the reference"
    #: No ref_* columns: the reference is the attacked solver here.
    columns = {k: v for k, v in ATTACK_COLUMNS.items() if not k.startswith("ref_")}
    example = dict(iterations=2, eta=0.01, snapshot_iterations=[0, 2], snapshot_levels=[])

    target: str = "reference"


__all__ = ["ATTACK_COLUMNS", "Attack", "AttackReference", "PRESETS", "SEARCHES", "SearchResult", "Snapshot",
           "foreground_support", "search", "snapshot_plan"]
