"""Bracket the worst case at a budget: attack (lower bound) <= local sigma_1 (estimate) and certified upper bound;
and the certified output radius of center smoothing.

`bracket`: per image and budget eps (relative to ||x||, or ||Ax|| in the measurement domain), for the network,
H and the reference solver on the same images:

    lower_bound      the budget search's gain (survey.tasks.budget.worst_case): reached, so a lower bound on
                     the worst gain over the ball ||r|| <= eps ||x||;
    sigma_estimate   sigma_1 of the local Jacobian as a gain (tasks/spectrum.py, Lanczos): an estimate of the
                     worst gain as eps -> 0, neither a lower nor an upper bound at a finite eps;
    certified_upper  a certified upper bound on that worst gain: the least of the local bound by linear bound
                     propagation with back-substitution over the ball (survey.certify.backsub), the local
                     bound with the deviations carried as intervals (survey.certify.propagate) and the
                     certified global Lipschitz bound (survey.nets.lipschitz), all as gains (all sound; `method`
                     names the one used); None, with the layer that lacks a rule in `missing`, where a target has
                     no certificate (the reference solver's soft thresholds).

gain = (||f(A(x + r)) - f(Ax)|| / ||f(Ax)||) / eps. The certificate holds for every r in the ball, smaller ones
included (the local bound over rho is non-decreasing in rho), so lower_bound <= certified_upper always;
gap = certified_upper / lower_bound says how far apart the two sides are (1: the worst case is known).
The dense Jacobian needs (inputs)^2 doubles: images with more than `max_inputs` inputs are refused.

`smoothing`: center smoothing (survey.certify.smoothing) of the network, H and the reference with Gaussian
noise of std `noise` per pixel: its certified output radius at input radius eps ||x||, the confidence, the
samples spent and the PSNR it costs.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch

from survey.metrics import norms, psnr
from survey.tasks import validate
from survey.tasks.base import LABELS, Column, Task, TaskContext, TaskResult, register, rows_from_columns
from survey.tasks.budget import DOMAINS, differentiable, worst_case
from survey.tasks.spectrum import leading_directions, top_singular

TARGETS = ("network", "H", "reference")

BRACKET_COLUMNS: dict[str, Column] = {
    **LABELS,
    "image_id": Column("id of the image"),
    "image_index": Column("index of the image in its unit"),
    "domain": Column("where the perturbation lives: 'image' or 'measurement'"),
    "target": Column("what is bracketed: 'network', 'H' (the easy reconstruction) or 'reference' (unrolled CS)"),
    "budget": Column("eps: the ball ||r|| <= eps ||x|| (||e|| <= eps ||Ax|| in the measurement domain)"),
    "lower_bound": Column("the budget search's gain at eps (reached: a lower bound on the worst gain; run in the network's "
                          "precision, so in float32 it can exceed a tight certificate by rounding, ~1e-6 relative)"),
    "sigma_estimate": Column("local sigma_1 ||x|| / ||f(Ax)|| (Lanczos): an estimate of the worst gain as eps -> 0"),
    "certified_upper": Column("certified upper bound on the worst gain over the ball (min of local and global); "
                              "None where the target has no certificate"),
    "gap": Column("certified_upper / lower_bound (1: the worst case is pinned down)"),
    "local_upper": Column("the bound propagation's certified gain over the ball: the least of back-substitution "
                          "and intervals (None without a rule)"),
    "backsub_upper": Column("linear bound propagation with back-substitution, as a gain (None without a rule)"),
    "interval_upper": Column("the deviations carried as intervals (boxes through |W|), as a gain (None without a rule)"),
    "method": Column("which bound certified_upper is: 'back-substitution', 'interval' or 'global' ('' without one)"),
    "global_upper": Column("the certified global Lipschitz bound as a gain (None without a rule or certificate)"),
    "linear_part": Column("eps ||J||_cert as a gain: the linearisation's share of local_upper"),
    "remainder_part": Column("the nonlinear units' share of local_upper, as a gain"),
    "unstable_fraction": Column("fraction of the nonlinear units that can leave their clean piece over the ball"),
    "missing": Column("why there is no certificate ('' when there is): the layer without a bound rule"),
}


#: Network -> {(domain, physics id): certified global bound or None}.
_GLOBAL: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def global_bound(net: Any, physics, domain: str) -> float | None:
    """The certified global Lipschitz bound of `net` (None where a layer has none or a factor is only an
    estimate), cached per network object."""
    from survey.nets.lipschitz import lipschitz_bound

    def compute():
        found = lipschitz_bound(net, physics, domain=domain, estimate=False)
        return found.value if found.certified else None

    try:
        per = _GLOBAL.setdefault(net, {})
    except TypeError:
        return compute()
    key = (domain, id(physics))
    if key not in per:
        per[key] = compute()
    return per[key]


def input_count(size: int, domain: str, physics=None) -> int:
    """Real inputs of the map the certificate linearises (pixels, or measured real coordinates)."""
    if domain == "image" or physics is None:
        return size * size
    mask = physics.measured_mask()
    return int((mask != 0).sum()) * (2 if physics.complex_measurements else 1)


@register("bracket")
@dataclass(kw_only=True)
class BracketTask(Task):
    """Attack, estimate and certificate of the worst gain at each budget, for the network, H and the reference.

    budgets: eps values relative to ||x|| (||Ax|| in the measurement domain), in (0, 1]; domain: "image" or
    "measurement"; iterations, restarts: the budget search's (worst_case), started also from the top singular
    vector; tol: Lanczos tolerance for sigma_estimate; targets: among "network", "H", "reference";
    max_inputs: largest input count certified (the dense Jacobian holds max_inputs^2 doubles); chunk: input
    basis vectors per tangent pass; pushed_units: most units that may flip pushed one by one in the
    back-substitution, over all layers (a layer beyond: as one box); backward: also the backward pass with chord relaxations (2 x outputs
    objectives per budget) for the output's remainder.
    """

    table = "bracket"
    title = "Bracket of the worst case (attack, estimate, certificate)"
    columns = BRACKET_COLUMNS
    example = dict(budgets=[0.01], iterations=3, restarts=1, targets=["network", "H"])
    needs_grad = True
    list_params = ("budgets", "targets")

    budgets: tuple[float, ...] = (0.0001, 0.001, 0.01)
    domain: str = "image"
    iterations: int = 60
    restarts: int = 4
    tol: float = 1e-3
    targets: tuple[str, ...] = TARGETS
    max_inputs: int = 4096
    chunk: int = 128
    pushed_units: int = 4096
    backward: bool = True

    def __post_init__(self):
        validate.sequence(self, "budgets", validate.numbers_in(0.0, 1.0, low_open=True), "budgets in (0, 1]",
                          nonempty=True)
        validate.choice(self, "domain", DOMAINS)
        validate.integer(self, "iterations", low=1)
        validate.integer(self, "restarts", low=1)
        validate.positive(self, "tol")
        validate.sequence(self, "targets", lambda v: v in TARGETS, f"targets among {list(TARGETS)}", convert=str,
                          nonempty=True)
        validate.integer(self, "max_inputs", low=1, high=16384)
        validate.integer(self, "chunk", low=1)
        validate.integer(self, "pushed_units", low=1)
        validate.flag(self, "backward")

    def check_image_size(self, n_rows: int, n_cols: int) -> None:
        """ValueError when the dense Jacobian of n_rows x n_cols images would not fit (see `max_inputs`)."""
        count = n_rows * n_cols
        if count > self.max_inputs:
            need = count * count * 8 * 2 / 2 ** 30
            raise ValueError(f"bracket: {n_rows} x {n_cols} images have {count} inputs, above max_inputs="
                             f"{self.max_inputs}: the dense Jacobian and its Gram matrix would need {need:.1f} GiB")

    def _targets(self, ctx: TaskContext) -> dict[str, Callable]:
        from survey.nets.exact import IdentityNet

        out: dict[str, Callable] = {}
        for name in self.targets:
            if name == "network":
                out[name] = ctx.net
            elif name == "H":
                out[name] = IdentityNet()
            elif ctx.reference is not None:
                out[name] = differentiable(ctx.reference)
        return out

    def run(self, ctx: TaskContext, generator: torch.Generator) -> TaskResult:
        from survey.certify.programs import certify_local
        from survey.certify.propagate import Unsupported

        physics, x = ctx.physics, ctx.images
        n = x.shape[-1]
        self.check_image_size(x.shape[-2], n)
        if self.domain == "measurement" and input_count(n, "measurement", physics) > self.max_inputs:
            raise ValueError(f"bracket: {input_count(n, 'measurement', physics)} measured real inputs, above "
                             f"max_inputs={self.max_inputs}")
        state = generator.get_state()
        cols: dict[str, list] = {k: [] for k in BRACKET_COLUMNS if k not in LABELS}
        with torch.no_grad():
            y = physics.A(x)
            scale = norms(x) if self.domain == "image" else norms(y)
        for name, f in self._targets(ctx).items():
            gen = torch.Generator(device=generator.device)
            gen.set_state(state)
            starts = leading_directions(f, physics, x, 1, domain=self.domain, tol=self.tol, generator=gen)
            found = worst_case(f, physics, x, self.budgets, domain=self.domain, iterations=self.iterations,
                               restarts=self.restarts, starts=starts, generator=gen)
            spectrum = top_singular(f, physics, x, 1, domain=self.domain, tol=self.tol, generator=gen)
            with torch.no_grad():
                clean = norms(f(y, physics))
            sigma_rel = spectrum.sigma[:, 0] * scale / clean
            missing, glob = "", None
            try:
                glob = global_bound(f, physics, self.domain) if name != "reference" else None
            except Exception as err:  # a rule that cannot read this network: no global number, said so
                missing = f"global bound: {err}"
            for i in range(x.shape[0]):
                radii = [eps * float(scale[i]) for eps in self.budgets]
                try:
                    local = certify_local(f, physics, x[i:i + 1], radii, domain=self.domain, chunk=self.chunk,
                                          columns=self.pushed_units, backward=self.backward)
                    why = ""
                except Unsupported as err:
                    local, why = None, str(err)
                for e, eps in enumerate(self.budgets):
                    unit = float(clean[i]) * eps  # change -> gain
                    lb = float(found.gain[e, i])
                    gl = None if glob is None else glob * float(scale[i]) * eps / unit
                    lo = None if local is None else local.bounds[e].bound / unit
                    back = None if local is None else local.bounds[e].backsub / unit
                    box = None if local is None else local.bounds[e].interval / unit
                    candidates = {k: v for k, v in (("back-substitution", back), ("interval", box), ("global", gl))
                                  if v is not None}
                    method = min(candidates, key=candidates.get) if candidates else ""
                    cert = candidates[method] if candidates else None
                    cols["image_id"].append(ctx.image_ids[i])
                    cols["image_index"].append(i)
                    cols["domain"].append(self.domain)
                    cols["target"].append(name)
                    cols["budget"].append(eps)
                    cols["lower_bound"].append(lb)
                    cols["sigma_estimate"].append(float(sigma_rel[i]))
                    cols["certified_upper"].append(cert)
                    cols["gap"].append(None if cert is None or lb <= 0 else cert / lb)
                    cols["local_upper"].append(lo)
                    cols["backsub_upper"].append(back)
                    cols["interval_upper"].append(box)
                    cols["method"].append(method)
                    cols["global_upper"].append(gl)
                    cols["linear_part"].append(None if local is None else local.bounds[e].linear / unit)
                    cols["remainder_part"].append(None if local is None else local.bounds[e].remainder / unit)
                    cols["unstable_fraction"].append(None if local is None or not local.bounds[e].units else
                                                     local.bounds[e].unstable / local.bounds[e].units)
                    cols["missing"].append("" if cert is not None else (why or missing or "no certificate"))
        return TaskResult(rows_from_columns(cols, len(cols["budget"])), {})


def _supported() -> str:
    from survey.certify.programs import SUPPORTED_LAYERS

    return "\n\n    Layers with a bound rule: " + "; ".join(SUPPORTED_LAYERS) + "."


BracketTask.__doc__ = (BracketTask.__doc__ or "") + _supported()


class ZooGap(NamedTuple):
    """The bound of a zoo network beside the largest local sigma_1 seen over `image_ids`: gap = bound / sigma."""

    name: str
    bound: Any
    sigma: list[float]
    image_ids: list[str]

    @property
    def gap(self) -> float | None:
        return None if self.bound.value is None or not self.sigma else self.bound.value / max(self.sigma)


def zoo_gap(name: str, *, count: int = 2, domain: str = "image", dataset: str | None = None,
            split: str = "test") -> ZooGap:
    """Certified global bound of zoo network `name` (with its estimate) and sigma_1 of its local Jacobian at
    `count` images of its dataset (default: the one it was trained on)."""
    from survey.data import load_dataset
    from survey.nets.lipschitz import lipschitz_bound
    from survey.nets.zoo import entry, load_network

    net, physics = load_network(name)
    bound = lipschitz_bound(net, physics, domain=domain, estimate=True)
    sigma, ids = [], []
    if count > 0:
        data = load_dataset(dataset or entry(name).dataset, split=split, size=physics.size, count=count)
        found = top_singular(net, physics, data.images, 1, domain=domain, tol=1e-4,
                             generator=torch.Generator().manual_seed(0))
        sigma, ids = found.sigma[:, 0].tolist(), list(data.ids)
    return ZooGap(name, bound, sigma, ids)


SMOOTHING_COLUMNS: dict[str, Column] = {
    **LABELS,
    "image_id": Column("id of the image"),
    "image_index": Column("index of the image in its unit"),
    "target": Column("what is smoothed: 'network', 'H' or 'reference'"),
    "budget": Column("eps: input radius eps ||x|| of the certificate"),
    "noise": Column("std of the Gaussian noise added to every pixel", "image intensity"),
    "p": Column("the quantile the certificate needs, Phi(Phi^-1(1/2 + margin) + eps ||x|| / noise)"),
    "certified_radius": Column("certified bound on ||smoothed(x') - smoothed(x)|| over ||x' - x|| <= eps ||x|| "
                               "(None where it cannot be certified)", "image intensity (l2)"),
    "certified_gain": Column("certified_radius / ||smoothed(x)|| / eps: on the scale of the bracket's gains"),
    "quantile_low": Column("lower end of the two-sided band (level 1 - alpha) for the p-quantile radius"),
    "quantile_high": Column("upper end of that band (None when the samples cannot reach it)"),
    "confidence": Column("1 - alpha: the certificate's confidence"),
    "samples": Column("noisy evaluations spent (centre and certificate)"),
    "psnr": Column("PSNR of f(Ax) against x", "dB"),
    "smoothed_psnr": Column("PSNR of the smoothed reconstruction against x", "dB"),
    "psnr_price": Column("psnr - smoothed_psnr: what the smoothing costs", "dB"),
    "reason": Column("why there is no certificate ('' when there is)"),
}


@register("smoothing")
@dataclass(kw_only=True)
class SmoothingTask(Task):
    """Center smoothing of the network, H and the reference: certified output radius at input radius eps.

    budgets: eps relative to ||x||; noise: Gaussian std per pixel (image intensity); n_center, n_cert:
    samples for the centre and for the radius; alpha: 1 - confidence; margin: the half-mass margin Delta;
    targets: among "network", "H", "reference"; batch: noisy inputs per network call.
    """

    table = "smoothing"
    title = "Center smoothing: certified output radius"
    columns = SMOOTHING_COLUMNS
    example = dict(budgets=[0.01], noise=0.1, n_center=8, n_cert=16, targets=["H"])
    list_params = ("budgets", "targets")

    budgets: tuple[float, ...] = (0.001, 0.01)
    noise: float = 0.05
    n_center: int = 64
    n_cert: int = 512
    alpha: float = 0.01
    margin: float = 0.05
    targets: tuple[str, ...] = TARGETS
    batch: int = 32

    def __post_init__(self):
        validate.sequence(self, "budgets", validate.numbers_in(0.0, 1.0, low_open=True), "budgets in (0, 1]",
                          nonempty=True)
        validate.positive(self, "noise")
        validate.integer(self, "n_center", low=3)
        validate.integer(self, "n_cert", low=2)
        validate.number(self, "alpha", low=0.0, high=0.5, low_open=True, high_open=True)
        validate.number(self, "margin", low=0.0, high=0.5, low_open=True, high_open=True)
        validate.sequence(self, "targets", lambda v: v in TARGETS, f"targets among {list(TARGETS)}", convert=str,
                          nonempty=True)
        validate.integer(self, "batch", low=1)

    def run(self, ctx: TaskContext, generator: torch.Generator) -> TaskResult:
        from survey.certify.smoothing import center_smooth

        physics, x = ctx.physics, ctx.images
        cols: dict[str, list] = {k: [] for k in SMOOTHING_COLUMNS if k not in LABELS}
        targets = BracketTask._targets(self, ctx)
        for name, f in targets.items():
            with torch.no_grad():
                clean = f(physics.A(x), physics)
            base_psnr = psnr(clean.clamp(0, 1), x)
            for i in range(x.shape[0]):
                xi = x[i:i + 1]

                def smoothed_input(u, f=f):
                    return f(physics.A(u), physics)

                for eps in self.budgets:
                    radius = eps * float(norms(xi)[0])
                    found = center_smooth(smoothed_input, xi, self.noise, radius, n_center=self.n_center,
                                          n_cert=self.n_cert, alpha=self.alpha, margin=self.margin,
                                          batch=self.batch, generator=generator)
                    centre = found.centre.view_as(xi).to(xi.dtype)
                    sm = float(psnr(centre.clamp(0, 1), xi)[0])
                    cols["image_id"].append(ctx.image_ids[i])
                    cols["image_index"].append(i)
                    cols["target"].append(name)
                    cols["budget"].append(eps)
                    cols["noise"].append(self.noise)
                    cols["p"].append(found.p)
                    cols["certified_radius"].append(found.radius)
                    cols["certified_gain"].append(None if found.radius is None else
                                                  found.radius / float(norms(centre)[0]) / eps)
                    cols["quantile_low"].append(found.quantile_low)
                    cols["quantile_high"].append(found.quantile_high)
                    cols["confidence"].append(1 - self.alpha)
                    cols["samples"].append(found.samples)
                    cols["psnr"].append(float(base_psnr[i]))
                    cols["smoothed_psnr"].append(sm)
                    cols["psnr_price"].append(float(base_psnr[i]) - sm)
                    cols["reason"].append(found.reason)
        return TaskResult(rows_from_columns(cols, len(cols["budget"])), {})


__all__ = ["BRACKET_COLUMNS", "BracketTask", "SMOOTHING_COLUMNS", "SmoothingTask", "TARGETS", "ZooGap", "global_bound", "input_count",
           "zoo_gap"]
