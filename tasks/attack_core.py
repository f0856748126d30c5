"""What the two attack searches share: the row schema, the measurement of a perturbation, the targets.

A search (tasks/paper_attack.py: Algorithms 1 / 2; tasks/budget_attack.py: the worst case at a budget)
produces perturbations r (image domain) or e (measurement domain); `measure` scores each one the same way
for whichever method was attacked (network, unrolled reference, H), and for the network also the
reference on the same perturbed data (the transferred ref_* columns). `AttackTask` holds the parameters
both searches take, resolves a target name to the method attacked, and gives paired targets the same
starts (`same_starts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import torch
import torch.nn.functional as F

from survey.domain import DOMAINS, Domain, domain
from survey.metrics import norms, psnr, ssim
from survey.nets.exact import IdentityNet
from survey.numerics import copy_generator, differentiable, real_dtype
from survey.tasks import validate
from survey.tasks.base import LABELS, Column, Task, TaskContext

SUPPORTS = ("none", "foreground")
TARGETS = ("network", "reference", "H")
#: "paper": Algorithms 1 and 2 with snapshots (the default); "budget": the worst case at each budget.
SEARCHES = ("paper", "budget")
#: Columns only budget rows fill (None on paper rows).
BUDGET_ONLY = ("budget", "gain_at_25", "gain_at_50", "gain_at_100", "start", "matched")


def foreground_support(x: torch.Tensor, threshold: float, dilation: int) -> torch.Tensor:
    """0/1 mask of pixels with |x| > threshold, grown by `dilation` pixels: (N, 1, n, n) same dtype."""
    mask = (x.abs() > threshold).to(real_dtype(x))
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


def measure(perturbations: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor], reference, physics,
            x: torch.Tensor, where: Domain, foreground: torch.Tensor, *, p_target: torch.Tensor | None = None,
            lam: float = 0.0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Score S sets of N perturbations of x: the columns as (S, N) tensors and the tensors worth keeping.

    perturbations: (S, N, *shape) in `where`'s domain; f: u -> image, the attacked method; reference:
    also scored on the same perturbed data (the ref_* columns), or None; foreground: (N, 1, n, n) 0/1
    mask for `r_outside_frac`; p_target: Algorithm 1's p(x), giving the `objective` column Q(r).
    """
    y = physics.A(x)
    clean = f(y)
    x_norm, clean_norm = norms(x), norms(clean)
    scale = where.scale(x, y)
    ref_clean = reference(y, physics) if reference is not None else None
    cols: dict[str, list[torch.Tensor]] = {}
    keep: dict[str, list[torch.Tensor]] = {"r": [], "out": []}
    if reference is not None:
        keep["ref_out"] = []

    def add(name: str, value: torch.Tensor) -> None:
        cols.setdefault(name, []).append(value)

    for r in perturbations:
        r_image = where.as_image(physics, r, x)
        shift = where.shift(physics, r)
        u = y + shift
        out = f(u)
        r_norm = norms(r)
        change = norms(out - clean)
        add("r_norm", r_norm)
        add("r_rel", r_norm / scale)
        add("Ar_norm", norms(shift))
        add("out_change", change)
        add("out_change_rel", change / clean_norm)
        add("err_rel", norms(out - x) / x_norm)
        add("psnr", psnr(out, x))
        add("ssim", ssim(out, x))
        add("psnr_visibility", psnr(x + r_image, x))
        add("ratio", change / r_norm)
        add("r_outside_frac", norms(r_image * (1 - foreground)).square() / norms(r_image).square())
        if p_target is not None:
            add("objective", 0.5 * norms(out - p_target).square() - 0.5 * lam * r_norm.square())
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
    shape = (perturbations.shape[0], x.shape[0])
    columns["psnr_clean"] = psnr(clean, x).expand(shape)
    columns["ssim_clean"] = ssim(clean, x).expand(shape)
    columns["err_rel_clean"] = (norms(clean - x) / x_norm).expand(shape)
    if reference is not None:
        columns["ref_psnr_clean"] = psnr(ref_clean, x).expand(shape)
        columns["ref_ssim_clean"] = ssim(ref_clean, x).expand(shape)
    return columns, {k: torch.stack(v) for k, v in keep.items()}


def same_starts(generator: torch.Generator, names) -> Iterator[tuple[str, torch.Generator]]:
    """(name, generator) for each target, every generator a copy of `generator`'s state (the same random
    starts); afterwards `generator` continues from where the copies ended."""
    twin = None
    for name in names:
        twin = copy_generator(generator)
        yield name, twin
    if twin is not None:
        generator.set_state(twin.get_state())


@dataclass(kw_only=True)
class AttackTask(Task):
    """Parameters both searches take, writing the `attacks` table.

    domain: "image" (r in image space) or "measurement" (e in measurement space, confined to the measured
    entries, `physics.measured_mask()`). gradient: the image-domain gradient rule ("adjoint": A*,
    Algorithm 1; "fbp": B = physics.H, Algorithm 2; "auto": the operator's `attack_gradient`).
    iterations: the search's iteration budget; restarts: random starts per image. support: "none" or
    "foreground" (image domain only): r confined to the object's pixels. support_threshold: the foreground
    is |x| > support_threshold (images in [0, 1]); support_dilation: grown by this many pixels.
    target: what is attacked, "network", "reference" (the unrolled reference solver) or "H" (the easy
    linear reconstruction). keep_tensors: return r and the outputs. with_reference: also reconstruct
    every found perturbation with the reference solver (the transferred ref_* columns, network rows
    only). label: free text recorded in the rows' `preset` column. search: which search runs, "paper"
    (Algorithms 1 / 2) or "budget" (the worst case at each budget); it picks the class.
    """

    table = "attacks"
    columns = ATTACK_COLUMNS
    needs_grad = True  # the ascent differentiates the attacked method; everything else runs without autograd
    #: The value of `search` this class runs.
    search_kind = ""
    #: Gradient rules this search accepts.
    gradient_rules: ClassVar[tuple[str, ...]] = ("auto", "adjoint", "fbp")

    domain: str = "image"
    gradient: str = "auto"
    iterations: int = 300
    restarts: int = 1
    support: str = "none"
    support_threshold: float = 0.05
    support_dilation: int = 2
    target: str = "network"
    keep_tensors: bool = True
    with_reference: bool = True
    label: str = ""
    search: str = ""

    def __post_init__(self):
        name = type(self).__name__
        if self.search != self.search_kind:
            hint = (f" (search={self.search!r} runs in another class: build it with make_task('attack', "
                    f"search={self.search!r}))" if self.search in SEARCHES else "")
            raise ValueError(f"{name}.search: {self.search!r} is not one of {[self.search_kind]}{hint}")
        for key, choices in (("domain", tuple(DOMAINS)), ("gradient", self.gradient_rules), ("support", SUPPORTS),
                             ("target", TARGETS)):
            validate.choice(self, key, choices)
        validate.number(self, "support_threshold", low=0.0)
        for key, low in (("iterations", 0), ("restarts", 1), ("support_dilation", 0)):
            validate.integer(self, key, low=low)
        for key in ("keep_tensors", "with_reference"):
            validate.flag(self, key)
        validate.text(self, "label")
        if self.gradient in ("fbp", "both") and "fbp" not in self.where.gradient_rules:
            raise ValueError(f"{name}: gradient={self.gradient!r} (Algorithm 2's B) needs domain='image'")
        if self.support != "none" and not self.where.takes_image_support:
            raise ValueError(f"{name}: support masks apply to image-domain perturbations only")

    @property
    def where(self) -> Domain:
        """The perturbation's `Domain`."""
        return domain(self.domain)

    @property
    def differentiated(self) -> tuple[str, ...]:
        """The targets the search differentiates through."""
        return (self.target,)

    @property
    def backprops_reference(self) -> bool:
        """Whether the search backpropagates through the unrolled reference solver, whose memory then counts
        beside the network's (survey.engine.cost); a reference solved to `reference_tolerance` (implicit
        gradients) does not unroll."""
        return "reference" in self.differentiated and not getattr(self, "reference_tolerance", 0.0)

    def foreground(self, x: torch.Tensor) -> torch.Tensor:
        return foreground_support(x, self.support_threshold, self.support_dilation)

    def support_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """The image-domain support r is confined to, or None."""
        return self.foreground(x) if self.support == "foreground" else None

    def attacked(self, ctx: TaskContext, name: str) -> Any:
        """The method a target name attacks: the network, H (`IdentityNet`) or the unrolled reference."""
        if name == "network":
            return ctx.net
        if name == "H":
            return IdentityNet()
        if ctx.reference is None:
            raise ValueError(f"{type(self).__name__}: attacking the reference needs a reference solver in the context")
        return differentiable(ctx.reference)

    def transferred(self, ctx: TaskContext, name: str) -> Any:
        """The reference scored on the network's perturbations (ref_* columns), or None."""
        return ctx.reference if name == "network" and self.with_reference else None


__all__ = ["ATTACK_COLUMNS", "AttackTask", "BUDGET_ONLY", "SEARCHES", "SUPPORTS", "TARGETS", "foreground_support",
           "measure", "same_starts"]
