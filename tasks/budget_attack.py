"""The worst case at a budget: for each eps in `budgets`, the worst r with ||r|| <= eps ||x||.

(||e|| <= eps ||Ax|| in the measurement domain.) Found by projected normalised-gradient ascent with
momentum (`survey.tasks.budget.worst_case`) from `restarts` zero-mean random directions and, with
`singular_start`, the top singular direction of the local Jacobian, both signs (A v_1 in the measurement
domain). One row per (attacked, image, budget), the best over starts and gradient rules, with
gain = (||f(A(x + r)) - f(Ax)|| / ||f(Ax)||) / (||r|| / ||x||) and the best gain after 25/50/100% of the
iterations. On Radon, gradient="auto" runs every start with A^T and with B = FBP and keeps the better.
`matched` attacks the reference solver (unrolled) and H (the easy linear reconstruction,
`survey.nets.exact.IdentityNet`) with the same search, budgets, iterations, random starts and images in the
same unit (`attacked` = 'reference' / 'H'); the network's rows keep the transferred ref_* columns.

Selected in a study by `name = "attack"` with `search = "budget"` (a variant of the `attack` task: same
table; the columns of BUDGET_COLUMNS besides).

`objective` = "patch" (largest change over a sliding window, the rare task's `patch` distance) or "roi"
(the change inside a region of interest) makes the search ascend that measure instead of the l2 change;
every row reports the gain in the l2 and the patch measure (`gain_l2`, `gain_patch`). `until_level` runs
each search until every (budget, image)'s best gain rose by less than `level_rise` over the last quarter
of its iterations, `iterations` being the cap; `levelled_off` says per row whether it did.
`reference_tolerance` > 0 attacks the reference solved to that tolerance (survey.solvers.converged:
relative change and fixed-point residual, implicit gradients at the fixed point, warm starts) instead of
the fixed-iteration unrolled FISTA; its rows record whether the scoring solve converged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from survey.metrics import norms
from survey.numerics import differentiable, eval_mode
from survey.solvers.converged import ConvergedCS
from survey.solvers.cs import CSReconstructor
from survey.solvers.fixed_point import check_tolerance
from survey.tasks import validate
from survey.tasks.attack_core import ATTACK_COLUMNS, TARGETS, AttackTask, measure, same_starts
from survey.tasks.base import Column, TaskContext, TaskResult, register
from survey.tasks.budget import top_singular_direction, worst_case
from survey.tasks.budget_objectives import OBJECTIVES, change, check_objective

#: Relative residual at which the reference's adjoint CG stops inside a search (at least the solve tolerance).
#: Looser residuals steer the search elsewhere: benchmarks/README.md, "How loosely the adjoint CG may stop".
ADJOINT_TOLERANCE = 1e-3

#: Columns only the budget search writes (beside ATTACK_COLUMNS).
BUDGET_COLUMNS: dict[str, Column] = {
    "search_objective": Column("budget search: the measure ascended, 'l2', 'patch' (largest window change) or "
                               "'roi' (inside a region of interest); `gain` is in this measure"),
    "gain_l2": Column("budget search: the found r's gain in the l2 measure, (||f(u) - f(Ax)|| / ||f(Ax)||) / "
                      "(||r|| / ||x||)"),
    "gain_patch": Column("budget search: the found r's gain in the patch measure (largest window RMS change over "
                         "the RMS of f(Ax), window `window`) over ||r|| / ||x||"),
    "levelled_off": Column("budget search: the best gain rose by less than level_rise (1%) over the last quarter "
                           "of the iterations run"),
    "solver_tolerance": Column("reference solved to this tolerance (relative change and fixed-point residual); "
                               "None: a fixed FISTA iteration count"),
    "solver_converged": Column("the solve scoring this row reached solver_tolerance within its cap (None without "
                               "a tolerance); a row with False is not a converged worst case"),
    "solver_iterations": Column("FISTA iterations of the solve scoring this row (None without a tolerance)"),
}


@register("attack", variant="budget")
@dataclass(kw_only=True)
class BudgetAttack(AttackTask):
    """Worst case at each budget for the target and its matched targets, on the same starts.

    budgets: eps values (relative to ||x||, ||Ax|| in the measurement domain); restarts: random starts per
    image; singular_start: also start from the top singular direction of the local Jacobian
    (`singular_iterations` power iterations); step, momentum: `worst_case`'s first step (a fraction of the
    budget radius) and momentum; gradient: "auto" (both rules on Radon), "adjoint", "fbp" or "both";
    matched: targets attacked with the same search in the same unit ("reference", "H", "network").
    objective: the measure the search maximises, "l2", "patch" or "roi"; window: the patch objective's window
    side in pixels (2 up to the image size); roi: the region of interest [top, left, height, width] in pixels;
    until_level: run until every best gain levelled off, `iterations` the cap; level_rise: the relative rise
    over the last quarter of the iterations below which a search has levelled off; reference_tolerance: solve
    the reference to this tolerance (0: fixed FISTA iterations); reference_max_iterations: the cap per solve.
    The other parameters are `AttackTask`'s (tasks/attack_core.py).
    """

    title = "Worst-case attack at a budget"
    columns = {**ATTACK_COLUMNS, **BUDGET_COLUMNS}
    example = dict(search="budget", budgets=[0.02], iterations=3, restarts=1, singular_start=False)
    search_kind = "budget"
    gradient_rules = ("auto", "adjoint", "fbp", "both")

    budgets: tuple[float, ...] = (0.01, 0.02, 0.05)
    singular_start: bool = True
    singular_iterations: int = 10
    step: float = 2.0
    momentum: float = 0.5
    matched: tuple[str, ...] = ()
    objective: str = "l2"
    window: int = 8
    roi: tuple[int, ...] = ()
    until_level: bool = False
    level_rise: float = 0.01
    reference_tolerance: float = 0.0
    reference_max_iterations: int = 5000
    search: str = "budget"

    def __post_init__(self):
        super().__post_init__()
        name = type(self).__name__
        validate.sequence(self, "budgets", validate.numbers_in(0.0, low_open=True), "budgets > 0", nonempty=True)
        validate.sequence(self, "matched", lambda v: v in TARGETS, f"targets among {list(TARGETS)}", convert=str)
        validate.flag(self, "singular_start")
        validate.integer(self, "singular_iterations", low=1)
        validate.positive(self, "step")
        validate.number(self, "momentum", low=0.0, high=1.0, high_open=True)
        if self.target in self.matched:
            raise ValueError(f"{name}: target {self.target!r} is also in matched {list(self.matched)}")
        validate.choice(self, "objective", OBJECTIVES)
        validate.integer(self, "window", low=2)
        validate.sequence(self, "roi", validate.integers_in(0), "four integers [top, left, height, width] >= 0",
                          convert=int)
        if self.objective == "roi" and len(self.roi) != 4:
            raise ValueError(f"{name}.roi must be four integers [top, left, height, width] for objective 'roi', "
                             f"got {list(self.roi)}")
        validate.flag(self, "until_level")
        validate.number(self, "level_rise", low=0.0, high=1.0, low_open=True, high_open=True)
        validate.integer(self, "reference_max_iterations", low=1)
        validate.number(self, "reference_tolerance", low=0.0, high=0.5, high_open=True)
        if self.reference_tolerance:
            try:
                check_tolerance(float(self.reference_tolerance), self.reference_max_iterations)
            except ValueError as err:
                raise ValueError(f"{name}.reference_tolerance: {err}") from None

    @property
    def differentiated(self) -> tuple[str, ...]:
        """The target and every matched target: each one is searched alike."""
        return (self.target, *self.matched)

    def check_image_size(self, n_rows: int, n_cols: int) -> None:
        """ValueError naming the parameter when the window or the region of interest does not fit."""
        try:
            check_objective(self.objective, self.window if self.objective == "patch" else None,
                            self.roi if self.objective == "roi" else None, min(n_rows, n_cols))
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}.{err}") from None

    def attacked(self, ctx: TaskContext, name: str):
        """As AttackTask's, but the reference solved to `reference_tolerance` when one is given."""
        if name == "reference" and self.reference_tolerance and isinstance(ctx.reference, CSReconstructor):
            # The search needs the gradient's direction only: its CG stops at ADJOINT_TOLERANCE.
            tolerance = float(self.reference_tolerance)
            return ConvergedCS(ctx.reference, tolerance=tolerance, max_iterations=self.reference_max_iterations,
                               adjoint_tolerance=max(tolerance, ADJOINT_TOLERANCE))
        return super().attacked(ctx, name)

    def _starts(self, f, physics, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """The top singular direction of the local Jacobian per image and its negative, (2, B, *shape)
        (A v_1 in the measurement domain), or None without `singular_start`. Both signs: a singular
        vector has no sign, and a network (unlike a linear map) may respond to +v_1 and -v_1 differently."""
        if not self.singular_start:
            return None
        v1 = top_singular_direction(differentiable(f), physics, x, iterations=self.singular_iterations,
                                    generator=generator)
        v1 = self.where.from_image(physics, v1)
        return torch.stack([v1, -v1])

    def run(self, ctx: TaskContext, generator: torch.Generator) -> TaskResult:
        with torch.no_grad():  # `worst_case` turns autograd on for its gradients only
            return self._run(ctx, generator)

    def _run(self, ctx: TaskContext, generator: torch.Generator) -> TaskResult:
        physics, x, where = ctx.physics, ctx.images, self.where
        self.check_image_size(x.shape[-2], x.shape[-1])
        names = (self.target, *self.matched)
        support = self.support_mask(x)
        foreground = self.foreground(x)
        rows: list[dict[str, Any]] = []
        kept: dict[str, list[torch.Tensor]] = {}
        for name, gen in same_starts(generator, names):
            solver = self.attacked(ctx, name)
            with eval_mode(solver):
                starts = self._starts(solver, physics, x, gen)
                found = worst_case(solver, physics, x, self.budgets, domain=self.domain,
                                   iterations=self.iterations, restarts=self.restarts, starts=starts,
                                   step=self.step, momentum=self.momentum, gradient=self.gradient,
                                   support=support, generator=gen, objective=self.objective,
                                   window=self.window, roi=self.roi or None, until_level=self.until_level,
                                   level_rise=self.level_rise)
                reports = []

                def f(u: torch.Tensor, solver=solver) -> torch.Tensor:
                    out = solver(u, physics)
                    if isinstance(solver, ConvergedCS):
                        reports.append(solver.last_report)
                    return out

                columns, tensors = measure(found.r, f, self.transferred(ctx, name), physics, x, where, foreground)
                columns["gain_l2"] = columns["out_change_rel"] / columns["r_rel"]
                columns.update(self._measures(tensors["out"], f(physics.A(x)), columns["r_rel"]))
                if reports:  # the clean solve, then one per budget, then the clean one above
                    columns["solver_converged"] = torch.stack([
                        rep.converged & reports[0].converged & reports[-1].converged for rep in reports[1:-1]])
                    columns["solver_iterations"] = torch.stack([rep.iterations for rep in reports[1:-1]])
            given = 0 if starts is None else starts.shape[0]
            part_rows, order = self._rows(ctx, name, found, columns, given)
            rows += part_rows
            if self.keep_tensors:
                e_idx = torch.tensor([e for e, _ in order])
                b_idx = torch.tensor([b for _, b in order])
                for key, value in tensors.items():
                    kept.setdefault(key, []).append(value.detach().cpu()[e_idx, b_idx])
        # Rows of targets without a transferred reference carry its columns as None (one schema per call).
        ref_keys = sorted({k for row in rows for k in row if k.startswith("ref_")})
        for row in rows:
            for key in ref_keys:
                row.setdefault(key, None)
        return TaskResult(rows, self._stacked(kept, names, x.shape[0]) if self.keep_tensors and rows else {})

    def _measures(self, outs: torch.Tensor, clean: torch.Tensor, r_rel: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gains of the found perturbations in both measures: (E, B) each."""
        diffs = outs - clean[None]
        flat = diffs.flatten(0, 1)
        clean_s = clean.repeat(outs.shape[0], *([1] * (clean.ndim - 1)))
        window = min(self.window, clean.shape[-1], clean.shape[-2])
        shape = outs.shape[:2]
        return {"gain_patch": change("patch", flat, clean_s, window=window).view(shape) / r_rel}

    def _stacked(self, kept: dict[str, list[torch.Tensor]], names, images: int) -> dict[str, torch.Tensor]:
        """Per-target tensors concatenated in row order; ref_out (the network's only) zero elsewhere."""
        count = len(self.budgets) * images
        out: dict[str, torch.Tensor] = {}
        for key in ("r", "out", "ref_out"):
            parts = kept.get(key)
            if parts is None:
                continue
            if len(parts) != len(names):
                like = parts[0]
                parts = [like if name == "network" else torch.zeros((count, *like.shape[1:]), dtype=like.dtype)
                         for name in names]
            out[key] = torch.cat(parts)
        return out

    def _rows(self, ctx: TaskContext, name: str, found, columns, given: int):
        values = {k: v.detach().cpu().tolist() for k, v in columns.items()}
        trace = found.trace.detach().cpu().tolist()
        gain = found.gain.detach().cpu().tolist()
        start = found.start.cpu().tolist()
        rule = found.rule.cpu().tolist()
        shared = {"attacked": name, "search": "budget", "matched": ",".join((self.target, *self.matched)),
                  "preset": self.label, "lam": None, "gamma": float(self.momentum), "eta": None,
                  "tau": None, "p": "fAx", "domain": self.domain, "support": self.support,
                  "max_iterations": int(self.iterations), "restarts": int(self.restarts),
                  "iterations_run": int(found.iterations_run), "search_objective": self.objective,
                  "solver_tolerance": float(self.reference_tolerance) if "solver_converged" in values else None}
        levelled = found.levelled.cpu().tolist()
        rows, order = [], []
        for b, image_id in enumerate(ctx.image_ids):
            for e, eps in enumerate(self.budgets):
                row = {**shared, "gradient": found.rules[rule[e][b]], "image_id": image_id,
                       "restart": int(start[e][b]), "start": "singular" if start[e][b] < given else "random",
                       "snapshot": "budget", "snapshot_target": float(eps), "reached": True,
                       "iteration": int(found.iterations_run), "budget": float(eps), "gain": float(gain[e][b]),
                       "gain_at_25": float(trace[e][b][0]), "gain_at_50": float(trace[e][b][1]),
                       "gain_at_100": float(trace[e][b][2]), "levelled_off": bool(levelled[e][b]),
                       "solver_converged": None, "solver_iterations": None}
                row.update({k: float(v[e][b]) for k, v in values.items()
                            if k not in ("solver_converged", "solver_iterations")})
                if "solver_converged" in values:
                    # A solver stopped at a tolerance: the gain is the fresh solve's whose convergence the row records.
                    row["solver_converged"] = bool(values["solver_converged"][e][b])
                    row["solver_iterations"] = int(values["solver_iterations"][e][b])
                    if self.objective in ("l2", "patch"):
                        row["gain"] = row["gain_l2"] if self.objective == "l2" else row["gain_patch"]
                row["objective"] = None  # Q belongs to the paper's search
                rows.append(row)
                order.append((e, b))
        return rows, order


@register("attack-reference", variant="budget")
@dataclass(kw_only=True)
class BudgetAttackReference(BudgetAttack):
    """The budget search with the unrolled reference solver as the target."""

    title = "Worst-case attack on the reference at a budget"
    columns = {k: v for k, v in {**ATTACK_COLUMNS, **BUDGET_COLUMNS}.items() if not k.startswith("ref_")}
    example = dict(search="budget", budgets=[0.02], iterations=2, restarts=1, singular_start=False)

    target: str = "reference"


__all__ = ["ADJOINT_TOLERANCE", "BUDGET_COLUMNS", "BudgetAttack", "BudgetAttackReference"]
