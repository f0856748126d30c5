"""The paper's attack: Algorithms 1 and 2 of Antun et al. (PNAS 2020, Methods), kept as published.

Maximise Q(r) = 1/2 ||f(y + A r) - p(x)||^2 - lam/2 ||r||^2 by gradient ascent with momentum

    v <- gamma v + eta grad Q(r),   r <- r + v,   r0 = tau * Unif[0, 1]^N,

with grad Q(r) = Re A* grad_u g(u) - lam r, g(u) = 1/2 ||f(u) - p(x)||^2 at u = y + A r (grad_u by
autograd). Algorithm 2 (Radon) replaces A* by the FBP operator B = physics.H scaled by ||A||^2: B
approximates the pseudo-inverse, B ~ A*/||A||^2, so unscaled it makes steps ||A||^2 times shorter than A*;
scaled, B keeps its direction and eta means the same for both algorithms and every operator. p(x) = f(Ax)
("fAx") or x ("x"). As printed, Algorithm 2 leaves lam r outside eta and the paper's eq. (12) drops the 1/2
of g; here both algorithms take the step eta (grad - lam r) with g as above. In the measurement domain the
search runs on e (complex for Fourier, on the measured entries), u = y + e, and grad_u is used directly.

The iteration does not converge when lam is below the squared local gain: ||r|| grows geometrically, so
its iterates are points on a diverging ascent, not worst cases at a budget (tasks/budget_attack.py answers
that). Snapshots are taken when ||r|| / ||x|| first crosses given levels (`snapshot_levels`) as well as at
fixed iterations, and the search stops once every snapshot has fired. Defaults (eta = tau = 1e-3) suit
images in [0, 1]; the paper's Deep MRI setting eta = tau = 1e-2 (preset "deepmri") overshoots small norms.

All images x restarts are stacked into one batch (the objective is the sum of per-sample objectives, whose
gradient is the per-sample gradients as long as the method treats samples independently: eval mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch

from survey.domain import Domain, domain as as_domain
from survey.metrics import norms
from survey.numerics import eval_mode, real_dtype, real_like, squared_error
from survey.tasks import validate
from survey.tasks.attack_core import ATTACK_COLUMNS, BUDGET_ONLY, AttackTask, measure
from survey.tasks.base import TaskContext, TaskResult, register

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


def search(f: Callable[[torch.Tensor], torch.Tensor], physics, x: torch.Tensor, p_target: torch.Tensor,
           r0: torch.Tensor, *, lam: float, gamma: float, eta: float, iterations: int,
           snapshots: list[Snapshot], domain: "str | Domain" = "image", gradient: str = "adjoint",
           support: torch.Tensor | None = None) -> SearchResult:
    """Run the momentum ascent on Q for a stacked batch; the attack's numerical core.

    f: y -> image, (N, ...) measurements to (N, 1, n, n); x: (N, 1, n, n) ground truths;
    p_target: (N, 1, n, n) the p(x) of Q; r0: (N, 1, n, n) (image domain) or measurement-shaped
    (measurement domain) starting point; gradient: "adjoint" (Algorithm 1) or "fbp" (Algorithm 2,
    image domain only); support: optional 0/1 mask broadcastable to r0, applied to r0 and every step.
    A level snapshot fires at the first iterate i with ||r_i|| / ||x|| >= level (||A x|| in the
    measurement domain); an iteration snapshot k keeps r_k.
    """
    where = as_domain(domain)
    y = physics.A(x)
    scale = where.scale(x, y)
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
            u = (y + where.shift(physics, r)).detach().requires_grad_(True)
            loss = 0.5 * squared_error(f(u) - p_target).sum()
            (grad_u,) = torch.autograd.grad(loss, u)
        if gradient == "fbp":
            grad = real_like(fbp_scale * physics.H(grad_u), r)
        else:
            grad = where.pull_back(physics, grad_u, r)
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


def uniform_start(like: torch.Tensor, tau: float, generator: torch.Generator) -> torch.Tensor:
    """r0 = tau * Unif[0, 1] shaped like `like` (real and imaginary parts each for complex measurements)."""
    dtype = real_dtype(like)
    draw = torch.rand(like.shape, generator=generator, device=generator.device, dtype=dtype)
    if torch.is_complex(like):
        draw = torch.complex(draw, torch.rand(like.shape, generator=generator, device=generator.device, dtype=dtype))
    return (tau * draw).to(like.device)


@register("attack")
@dataclass(kw_only=True)
class Attack(AttackTask):
    """Algorithm 1 (Algorithm 2 for Radon): the paper's momentum ascent on Q, with snapshots.

    lam, gamma, eta, tau: Q's penalty, momentum, learning rate, r0 scale (images in [0, 1]).
    p: "fAx" (move away from the clean reconstruction) or "x" (away from the truth).
    iterations: at most M updates; snapshot_iterations: iterate counts to keep; snapshot_levels:
    ||r||/||x|| levels (||e||/||Ax|| in the measurement domain), kept at the first crossing.
    restarts: independent r0 per image. search: "paper" here; `search = "budget"` in a study selects
    the budget search (tasks/budget_attack.py) under the same task name. The other parameters are
    `AttackTask`'s (tasks/attack_core.py).
    """

    title = "Worst-case attack"
    example = dict(iterations=4, eta=0.01, snapshot_iterations=[0, 4], snapshot_levels=[0.005])
    search_kind = "paper"
    #: The parameter that picks the search; its other values run in variant classes.
    variant_key = "search"

    lam: float = 0.01
    gamma: float = 0.9
    eta: float = 1e-3
    tau: float = 1e-3
    p: str = "fAx"
    snapshot_iterations: tuple[int, ...] = ()
    snapshot_levels: tuple[float, ...] = (0.01, 0.02, 0.05)
    search: str = "paper"

    def __post_init__(self):
        super().__post_init__()
        validate.choice(self, "p", P_CHOICES)
        for key in ("lam", "gamma"):
            validate.number(self, key, low=0.0)
        for key in ("eta", "tau"):
            validate.positive(self, key)
        validate.sequence(self, "snapshot_iterations", validate.integers_in(0, self.iterations),
                          f"iteration counts in 0..iterations={self.iterations}", convert=int)
        validate.sequence(self, "snapshot_levels", validate.numbers_in(0.0, low_open=True), "levels > 0")

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
        rule = getattr(physics, "attack_gradient", "adjoint")
        return rule if rule in self.where.gradient_rules else "adjoint"

    def run(self, ctx: TaskContext, generator: torch.Generator) -> TaskResult:
        attacked = self.attacked(ctx, self.target)
        reference = self.transferred(ctx, self.target)
        x = ctx.images.repeat_interleave(self.restarts, dim=0)  # sample n = image * restarts + restart
        with eval_mode(attacked), torch.no_grad():  # `search` turns autograd on for its gradient only
            return self._run(ctx, attacked, reference, ctx.physics, x, generator)

    def _run(self, ctx: TaskContext, attacked, reference, physics, x: torch.Tensor,
             generator: torch.Generator) -> TaskResult:
        def f(u: torch.Tensor) -> torch.Tensor:
            return attacked(u, physics)

        where = self.where
        y = physics.A(x)
        p_target = f(y) if self.p == "fAx" else x
        r0 = uniform_start(where.like(x, y), self.tau, generator)
        support = where.support(physics, y)
        if support is None:
            support = self.support_mask(x)
        rule = self.gradient_rule(physics)
        plan = snapshot_plan(self.iterations, self.snapshot_iterations, self.snapshot_levels)
        found = search(f, physics, x, p_target, r0, lam=self.lam, gamma=self.gamma, eta=self.eta,
                       iterations=self.iterations, snapshots=plan, domain=where, gradient=rule, support=support)
        columns, tensors = measure(found.perturbations, f, reference, physics, x, where, self.foreground(x),
                                   p_target=p_target, lam=self.lam)
        return self._rows(ctx, found, columns, tensors, rule)

    def _rows(self, ctx: TaskContext, found: SearchResult, columns, tensors, rule: str) -> TaskResult:
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
                for s, snap in enumerate(found.snapshots):
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


@register("attack-reference")
@dataclass(kw_only=True)
class AttackReference(Attack):
    """The same search on the unrolled reference solver: the reference's own worst case."""

    title = "Worst-case attack on the reference"
    #: No ref_* columns: the reference is the attacked solver here.
    columns = {k: v for k, v in ATTACK_COLUMNS.items() if not k.startswith("ref_")}
    example = dict(iterations=2, eta=0.01, snapshot_iterations=[0, 2], snapshot_levels=[])

    target: str = "reference"


__all__ = ["Attack", "AttackReference", "P_CHOICES", "PRESETS", "SearchResult", "Snapshot", "search",
           "snapshot_plan", "uniform_start"]
