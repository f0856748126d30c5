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
table, same columns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from survey.numerics import differentiable, eval_mode
from survey.tasks import validate
from survey.tasks.attack_core import ATTACK_COLUMNS, TARGETS, AttackTask, measure, same_starts
from survey.tasks.base import TaskContext, TaskResult, register
from survey.tasks.budget import top_singular_direction, worst_case


@register("attack", variant="budget")
@dataclass(kw_only=True)
class BudgetAttack(AttackTask):
    """Worst case at each budget for the target and its matched targets, on the same starts.

    budgets: eps values (relative to ||x||, ||Ax|| in the measurement domain); restarts: random starts per
    image; singular_start: also start from the top singular direction of the local Jacobian
    (`singular_iterations` power iterations); step, momentum: `worst_case`'s first step (a fraction of the
    budget radius) and momentum; gradient: "auto" (both rules on Radon), "adjoint", "fbp" or "both";
    matched: targets attacked with the same search in the same unit ("reference", "H", "network").
    The other parameters are `AttackTask`'s (tasks/attack_core.py).
    """

    title = "Worst-case attack at a budget"
    example = dict(search="budget", budgets=[0.02], iterations=3, restarts=1, singular_start=False)
    search_kind = "budget"
    gradient_rules = ("auto", "adjoint", "fbp", "both")

    budgets: tuple[float, ...] = (0.01, 0.02, 0.05)
    singular_start: bool = True
    singular_iterations: int = 10
    step: float = 2.0
    momentum: float = 0.5
    matched: tuple[str, ...] = ()
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
                                   support=support, generator=gen)

                def f(u: torch.Tensor, solver=solver) -> torch.Tensor:
                    return solver(u, physics)

                columns, tensors = measure(found.r, f, self.transferred(ctx, name), physics, x, where, foreground)
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


@register("attack-reference", variant="budget")
@dataclass(kw_only=True)
class BudgetAttackReference(BudgetAttack):
    """The budget search with the unrolled reference solver as the target."""

    title = "Worst-case attack on the reference at a budget"
    columns = {k: v for k, v in ATTACK_COLUMNS.items() if not k.startswith("ref_")}
    example = dict(search="budget", budgets=[0.02], iterations=2, restarts=1, singular_start=False)

    target: str = "reference"


__all__ = ["BudgetAttack", "BudgetAttackReference"]
