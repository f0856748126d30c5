"""Worst case at a budget, and the gain of points of a Gaussian ball.

Pure functions, no Task: the numerical core that the attack and ball tasks call.

Worst case (`worst_case`): for each budget eps (relative to ||x||) solve

    max ||f(A(x + r)) - f(Ax)||   subject to ||r|| <= eps ||x||      (image domain), or
    max ||f(Ax + e) - f(Ax)||     subject to ||e|| <= eps ||Ax||, e on the measured entries  (measurement),

by projected normalised-gradient ascent with momentum, for every image, start and budget stacked into
one batch (one network call per iteration):

    g = grad_r 1/2 ||f(u) - f(Ax)||^2 (times the support mask),  m <- mu m + g / ||g||,
    r <- Proj(r + alpha_k rho m / ||m||),   rho = eps ||x||,   Proj = scaling back onto the ball,

alpha_k decaying (cosine) from `step` to `final_step`. For a linear f the iteration is a power iteration
on J^T J on the sphere of radius rho, so it reaches the top singular vector; for a network it is a
local search, hence several starts: zero-mean Gaussian directions (not the tau * Unif[0, 1] of
Algorithm 1, whose mean points at the constant image) put on the sphere, and optional given
directions (e.g. the top singular vector of the local Jacobian, `top_singular_direction`). Every
iterate is scored on the forward pass the gradient needs anyway; the best one per sample is kept, and
per (image, budget) the best over starts and gradient rules.

gain = (||f(A(x + r)) - f(Ax)|| / ||f(Ax)||) / (||r|| / ||x||) (||e|| / ||Ax|| in the measurement domain):
1 is what a faithful method does, a linear f(A .) = L reaches sigma_1(L) ||x|| / ||L x||.

Gradient rules (image domain): "adjoint" maps the measurement gradient through A* (real part for real
images): the true gradient. "fbp" maps it through B = physics.H scaled by ||A||^2 (Algorithm 2 of
tasks/attack.py): B ~ A^+ ~ A*/||A||^2, so the scale makes B's output as long as A*'s and keeps the
unnormalised step of Algorithm 2 comparable. Here the step is normalised, so the scale cancels: B only
changes the direction, to a ramp-filtered (preconditioned) one that is not the steepest ascent but
weights the poorly conditioned high frequencies up. "both" (the default on Radon, "auto") runs each
start with each rule and keeps the better.

The same search applies to any differentiable f(y, physics): a network, the easy reconstruction H
(`survey.nets.exact.IdentityNet`), or the reference solver unrolled (`differentiable`); `paired_worst_case`
runs them on identical starts, budgets, iterations and images.

Ball point gain (`point_gain`): given a centre r and draws v (v = Re A* e rescaled to ||v|| = c ||r||,
`ball_directions`), the gain of each ball point r + v as a perturbation of its own,

    point_gain = (||f(y + A(r + v)) - f(y)|| / ||f(y)||) / (||r + v|| / ||x||),

the quantity whose exceedance P(point_gain >= g) is the ball's bad event; the same draws go to the
network, H and the reference.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch

from survey.domain import DOMAINS as _DOMAINS, domain as as_domain
from survey.metrics import norms
from survey.numerics import differentiable, eval_mode as _eval, measured_mask as _measured_mask
from survey.numerics import per_sample as _view, real_dtype, real_like as _real_like, squared_error
from survey.numerics import best_of, standard_gaussian as _gaussian

DOMAINS = tuple(_DOMAINS)
GRADIENTS = ("auto", "adjoint", "fbp", "both")
#: Fractions of the iterations at which the best-so-far gain is recorded (the convergence trace).
TRACE_FRACTIONS = (0.25, 0.5, 1.0)


class BudgetResult(NamedTuple):
    """The best perturbation per (budget, image); E budgets, B images.

    r: (E, B, *shape) image- or measurement-shaped; gain, out_change_rel (||f(u) - f(Ax)|| / ||f(Ax)||),
    norm_ratio (||r|| / ||x|| or ||e|| / ||Ax||): (E, B); trace: (E, B, len(TRACE_FRACTIONS)) the
    best-so-far gain after those fractions of the iterations; start: (E, B) index of the winning
    start (given starts first, then random ones); rule: (E, B) index into `rules`.
    """

    budgets: tuple[float, ...]
    domain: str
    r: torch.Tensor
    gain: torch.Tensor
    out_change_rel: torch.Tensor
    norm_ratio: torch.Tensor
    trace: torch.Tensor
    start: torch.Tensor
    rule: torch.Tensor
    rules: tuple[str, ...]
    iterations: int


def measured_mask(physics, y: torch.Tensor) -> torch.Tensor:
    """0/1 mask (real dtype of y, broadcastable to y) of the measurement entries really measured
    (`physics.measured_mask()`; `survey.numerics.measured_mask`)."""
    return _measured_mask(physics, y)


def _gradient_rules(gradient: str, physics, domain: str) -> tuple[str, ...]:
    if gradient not in GRADIENTS:
        raise ValueError(f"worst_case: gradient {gradient!r} is not one of {list(GRADIENTS)}")
    if domain == "measurement":
        if gradient in ("fbp", "both"):
            raise ValueError("worst_case: the fbp rule needs domain='image'")
        return ("adjoint",)
    if gradient == "auto":
        # both rules where the paper's attack uses Algorithm 2 on the operator (Radon)
        return ("adjoint", "fbp") if getattr(physics, "attack_gradient", "adjoint") == "fbp" else ("adjoint",)
    return ("adjoint", "fbp") if gradient == "both" else (gradient,)


def worst_case(net: Callable, physics, x: torch.Tensor, budgets: Sequence[float], *, domain: str = "image",
               iterations: int = 100, restarts: int = 2, starts: torch.Tensor | None = None,
               step: float = 2.0, final_step: float = 0.05, momentum: float = 0.5, gradient: str = "auto",
               support: torch.Tensor | None = None, generator: torch.Generator | None = None) -> BudgetResult:
    """Worst perturbation of x within each budget, for every image (see the module docstring).

    net: called as net(y, physics) -> (N, 1, n, n), differentiable in y, samples independent (it is
    put in eval mode); x: (B, 1, n, n); budgets: eps values (relative to ||x||, or ||Ax|| in the
    measurement domain); restarts: random zero-mean starts per image; starts: optional given start
    directions (S, B or 1, *shape) (image- or measurement-shaped), rescaled onto each budget's sphere;
    step, final_step: first and last step as a fraction of the budget radius (cosine decay);
    momentum: weight of the previous direction; gradient: "adjoint", "fbp", "both" or "auto"
    (both on Radon in the image domain); support: optional 0/1 image mask broadcastable to x
    (image domain; measurement perturbations are always confined to the measured entries).
    The random starts are shared across budgets (the same direction, scaled), so the budgets are
    compared on common random numbers; a copy of `generator` gives another f the same starts.
    """
    try:
        where = as_domain(domain)
    except ValueError as err:
        raise ValueError(f"worst_case: {err}") from None
    budgets = tuple(float(b) for b in budgets)
    if not budgets or any(not b > 0 for b in budgets):
        raise ValueError(f"worst_case: budgets must be > 0, got {budgets}")
    if int(iterations) != iterations or iterations < 0 or int(restarts) != restarts or restarts < 0:
        raise ValueError("worst_case: iterations and restarts must be integers >= 0")
    if restarts == 0 and starts is None:
        raise ValueError("worst_case: no start (restarts=0 and no starts given)")
    if where.name == "measurement" and support is not None:
        raise ValueError("worst_case: support masks are for image-domain perturbations")
    rules = _gradient_rules(gradient, physics, where.name)
    net = differentiable(net)
    with _eval(net), torch.no_grad():
        y = physics.A(x)
        clean = net(y, physics)
        like = where.like(x, y)
        mask = support.to(real_dtype(like)) if support is not None else where.support(physics, y)
        scale = norms(like)
        # Start directions (S, B, *shape): given ones, then random zero-mean Gaussian ones.
        given = []
        if starts is not None:
            starts = starts.to(device=like.device, dtype=like.dtype)
            if starts.ndim != like.ndim + 1:
                raise ValueError(f"worst_case: starts must be (S, B or 1, {', '.join(map(str, like.shape[1:]))})")
            given = [starts.expand(starts.shape[0], *like.shape)]
        if restarts:
            given.append(_gaussian((restarts, *like.shape), like, generator))
        directions = torch.cat(given)
        if mask is not None:
            directions = directions * mask
        lengths = torch.linalg.vector_norm(directions.flatten(2), dim=2).clamp_min(torch.finfo(scale.dtype).tiny)
        directions = directions / lengths.view(*lengths.shape, *([1] * (like.ndim - 1)))
        n_budgets, n_images, n_starts, n_rules = len(budgets), like.shape[0], directions.shape[0], len(rules)
        eps = torch.tensor(budgets, dtype=scale.dtype, device=scale.device)
        # Stacked layout (E, B, S, Q) -> N samples.
        shape5 = (n_budgets, n_images, n_starts, n_rules)
        radius = (eps.view(-1, 1, 1, 1) * scale.view(1, -1, 1, 1)).expand(shape5).reshape(-1)
        r = directions.transpose(0, 1)[None, :, :, None].expand(*shape5, *like.shape[1:]).reshape(-1, *like.shape[1:])
        r = r * _view(radius, r.ndim)

        def stack(t: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (N, ...)
            return t[None, :, None, None].expand(*shape5, *t.shape[1:]).reshape(-1, *t.shape[1:])

        y_s, clean_s, clean_norm, scale_s = stack(y), stack(clean), stack(norms(clean)), stack(scale)
        mask_s = mask if mask is None or mask.shape[0] == 1 else stack(mask)
        rule_of = torch.arange(n_rules, device=r.device).repeat(n_budgets * n_images * n_starts)
        fbp_scale = physics.norm() ** 2 if "fbp" in rules else 1.0
        velocity = torch.zeros_like(r)
        best_change = torch.full_like(radius, -math.inf)
        best_gain = torch.zeros_like(radius)
        best_r = r.clone()
        checkpoints = [(math.ceil(f * iterations), i) for i, f in enumerate(TRACE_FRACTIONS)]
        trace = torch.zeros(len(TRACE_FRACTIONS), radius.shape[0], dtype=radius.dtype, device=radius.device)
        tiny = torch.finfo(radius.dtype).tiny
        for k in range(iterations + 1):
            need_grad = k < iterations
            with torch.enable_grad():
                u = y_s + where.shift(physics, r)
                u = u.detach().requires_grad_(need_grad)
                out = net(u, physics)
                diff = out - clean_s
                if need_grad:
                    loss = 0.5 * squared_error(diff).sum()
                    (grad_u,) = torch.autograd.grad(loss, u)
            change = norms(diff.detach())
            gain = (change / clean_norm) / (norms(r) / scale_s).clamp_min(tiny)
            better = change > best_change
            best_change = torch.where(better, change, best_change)
            best_gain = torch.where(better, gain, best_gain)
            best_r = torch.where(_view(better, r.ndim), r, best_r)
            for at, i in checkpoints:
                if k == at:
                    trace[i] = best_gain
            if not need_grad:
                break
            grad = torch.empty_like(r)
            for q, rule in enumerate(rules):
                rows = rule_of == q
                grad[rows] = _real_like(fbp_scale * physics.H(grad_u[rows]), r) if rule == "fbp" else \
                    where.pull_back(physics, grad_u[rows], r)
            if mask_s is not None:
                grad = grad * mask_s
            unit = grad / _view(norms(grad).clamp_min(tiny), grad.ndim)
            velocity = momentum * velocity + unit
            direction = velocity / _view(norms(velocity).clamp_min(tiny), r.ndim)
            alpha = final_step + (step - final_step) * 0.5 * (1 + math.cos(math.pi * k / max(iterations, 1)))
            r = r + alpha * _view(radius, r.ndim) * direction
            r = r * _view((radius / norms(r).clamp_min(tiny)).clamp(max=1.0), r.ndim)

        # Per (budget, image): the best over starts and rules.
        winner, flat = best_of(best_change, n_budgets * n_images, n_starts * n_rules)
        winner = winner.view(n_budgets, n_images)
        r_best = best_r[flat].view(n_budgets, n_images, *like.shape[1:])
        change = best_change[flat].view(n_budgets, n_images)
        norm_ratio = (norms(best_r[flat]) / scale_s[flat]).view(n_budgets, n_images)
        # At each checkpoint, the best over starts and rules (as the final answer is).
        trace_best = trace.T.reshape(n_budgets, n_images, n_starts * n_rules, -1).max(dim=2).values
        change_rel = change / norms(clean).view(1, -1)
        return BudgetResult(budgets, where.name, r_best, best_gain[flat].view(n_budgets, n_images), change_rel,
                            norm_ratio, trace_best, winner // n_rules, winner % n_rules, rules, int(iterations))


def paired_worst_case(targets: dict[str, Callable], physics, x: torch.Tensor, budgets: Sequence[float], *,
                      generator: torch.Generator | None = None, **options) -> dict[str, BudgetResult]:
    """`worst_case` for several f (network, H, reference...) on identical starts, budgets, iterations
    and images: each gets a copy of `generator` in the same state. A reference solver with an
    `unrolled` flag is run unrolled (`differentiable`)."""
    results = {}
    state = generator.get_state() if generator is not None else None
    for name, f in targets.items():
        gen = None
        if generator is not None:
            gen = torch.Generator(device=generator.device)
            gen.set_state(state)
        results[name] = worst_case(differentiable(f), physics, x, budgets, generator=gen, **options)
    if generator is not None:
        generator.set_state(gen.get_state())
    return results


def top_singular_direction(net: Callable, physics, x: torch.Tensor, iterations: int = 20,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Top right singular vector of the Jacobian of r -> f(A(x + r)) at r = 0, per image, by power
    iteration on J^T J (J v by the double-vjp trick, J^T w by a vjp): unit images (B, 1, n, n)."""
    with _eval(net):
        y = physics.A(x).detach()
        v = _gaussian(x.shape, x, generator)
        v = v / _view(norms(v), v.ndim)
        for _ in range(iterations):
            with torch.enable_grad():
                r = torch.zeros_like(x, requires_grad=True)
                out = net(y + physics.A(r), physics)
                w = torch.zeros_like(out, requires_grad=True)
                (jt_w,) = torch.autograd.grad((out * w).sum(), r, create_graph=True)
                (j_v,) = torch.autograd.grad((jt_w * v).sum(), w)           # J v
                (jt_j_v,) = torch.autograd.grad((out * j_v).sum(), r)       # J^T J v
            v = jt_j_v.detach()
            v = v / _view(norms(v).clamp_min(torch.finfo(v.dtype).tiny), v.ndim)
    return v


# -- Gaussian ball ------------------------------------------------------------------------------


class PointGain(NamedTuple):
    """Per (draw, image), shapes (D, B): gain of the ball point r + v as a perturbation of its own;
    out_change_rel = ||f(y') - f(y)|| / ||f(y)||; norm_rel = ||r + v|| / ||x||; and the replaced
    persistence statistics persist_ratio = ||f(y') - f(y)|| / ||f(y + A r) - f(y)|| and artefact_cos,
    the cosine of f(y') - f(y) to f(y + A r) - f(y)."""

    gain: torch.Tensor
    out_change_rel: torch.Tensor
    norm_rel: torch.Tensor
    persist_ratio: torch.Tensor
    artefact_cos: torch.Tensor


def ball_directions(physics, x: torch.Tensor, r: torch.Tensor, radius: float, draws: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Ball draws as the ball task makes them: e standard Gaussian on the measured entries (complex for
    complex measurements), v = A* e (real part for real images), rescaled to ||v|| = radius ||r||.
    x, r: (B, 1, n, n) -> v: (D, B, 1, n, n)."""
    with torch.no_grad():
        y = physics.A(x)
        e = _gaussian((draws * x.shape[0], *y.shape[1:]), y, generator) * measured_mask(physics, y)
        v = _real_like(physics.A_adjoint(e), x).view(draws, *x.shape)
        target = radius * norms(r)
        return v * (target.view(1, -1, *([1] * (x.ndim - 1))) / norms(v.flatten(0, 1)).view(draws, x.shape[0],
                                                                                             *([1] * (x.ndim - 1))))


def point_gain(net: Callable, physics, x: torch.Tensor, r: torch.Tensor, v: torch.Tensor,
               batch: int = 256) -> PointGain:
    """Gain of every ball point x + r + v (see the module docstring); x, r: (B, 1, n, n) image-domain
    centre, v: (D, B, 1, n, n). The network is called on at most `batch` samples at a time."""
    draws, count = v.shape[0], v.shape[1]
    with _eval(net), torch.no_grad():
        y = physics.A(x)
        clean = net(y, physics)
        artefact = net(y + physics.A(r), physics) - clean
        x_norm, clean_norm, artefact_norm = norms(x), norms(clean), norms(artefact)
        points = (r[None] + v).flatten(0, 1)  # draw-major: sample = d * B + b
        index = torch.arange(draws * count, device=x.device) % count
        outs = []
        for part in torch.arange(draws * count, device=x.device).split(batch):
            outs.append(net(y[index[part]] + physics.A(points[part]), physics) - clean[index[part]])
        moved = torch.cat(outs)
        moved_norm = norms(moved)
        change_rel = moved_norm / clean_norm[index]
        norm_rel = norms(points) / x_norm[index]
        inner = (moved.conj() * artefact[index]).real.flatten(1).sum(1) if torch.is_complex(moved) else \
            (moved * artefact[index]).flatten(1).sum(1)
        cos = inner / (moved_norm * artefact_norm[index]).clamp_min(torch.finfo(moved_norm.dtype).tiny)

        def shaped(t):
            return t.view(draws, count)

        return PointGain(shaped(change_rel / norm_rel), shaped(change_rel), shaped(norm_rel),
                         shaped(moved_norm / artefact_norm[index]), shaped(cos))


def old_persistence_rule(found: PointGain) -> torch.Tensor:
    """The replaced bad event 'the artefact persists': out_change >= 0.5 centre_change and cosine to
    the artefact >= 0.5 (analysis/report.py). Any smooth map passes it, the identity included (see
    tests/test_budget.py), so it is kept only to document why point_gain replaced it. (D, B) bool."""
    return (found.persist_ratio >= 0.5) & (found.artefact_cos >= 0.5)


__all__ = ["BudgetResult", "DOMAINS", "GRADIENTS", "PointGain", "TRACE_FRACTIONS", "ball_directions",
           "differentiable", "measured_mask", "old_persistence_rule", "paired_worst_case", "point_gain",
           "top_singular_direction", "worst_case"]
