"""How often is a random perturbation bad? P(D(f(y'), f(y)) >= delta) per image, down to rare events.

How often: for each image, perturbation family (survey.perturb), severity and threshold delta,
the probability that a draw y' = family(y, z, severity) of the family (z ~ N(0, I), the family's standard
Gaussian latent) changes the output by at least delta,

    p = P(D(o(y'), o(y)) >= delta),   D = relative_l2 (||o' - o|| / ||o||) or patch (the largest change
                                       over a sliding 8 x 8 window, relative to the image's RMS),

for the network f, the compressed-sensing reference g and the easy reconstruction H (its real part for
real images), on the same settings and the same random streams. Estimators (survey.rare): `mc` (naive
Monte Carlo, exact Clopper-Pearson interval; the check where p is large), `splitting` (adaptive
multilevel splitting with a pCN kernel; with `stop_below` it stops once P < stop_below is certified),
`last-particle` (last-particle splitting: exact Poisson interval and certification), `importance`
(importance sampling at the FORM design points, with ESS; needs a family differentiable in z, so not
poisson; the reference runs unrolled for its gradients). The splitting estimators pool independent runs
and say when they disagree or do not mix (`stop`); settings below the validated ones
(survey.rare.settings) warn and mark rows `validated = false`. Severity: for the gaussian family an
SNR in dB (`scale="snr"`, converted per image to sigma by `sigma_from_snr`, per coil for parallel MRI),
otherwise the family's own unit (photons per bin I0 for poisson).

One row per (image, severity, threshold, distance, estimator, target) with the estimator's `RareResult`
(p, interval, log10 p, calls = network evaluations, levels, ESS, certified bound). Each setting's random
stream is seeded once from `generator` (image-major order), and the three targets start from copies of
it, so a row replays alone and does not depend on which targets or estimators run beside it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from survey.perturb import family_names, make_family
from survey.perturb.gaussian import sigma_from_snr
from survey.rare import importance, last_particle, make_distance, mc, perturbation_score, splitting
from survey.rare.crosscheck import cross_check
from survey.rare.distance import DISTANCES
from survey.rare.settings import VALIDATED, below_floor
from survey.tasks import validate
from survey.tasks.base import LABELS, Column, Task, TaskContext, TaskResult, register
from survey.tasks.budget import differentiable

ESTIMATORS = ("mc", "splitting", "last-particle", "importance")
#: Estimators that run several independent particle runs per estimate.
PARTICLE_ESTIMATORS = ("splitting", "last-particle")
TARGETS = ("network", "reference", "H")
SCALES = ("snr", "family")

RARE_COLUMNS: dict[str, Column] = {
    **LABELS,
    "image_id": Column("stable id of the ground-truth image"),
    "image_index": Column("index of the image in the unit"),
    "family": Column("perturbation family (survey.perturb registry name)"),
    "family_params": Column("the family's parameters as sorted JSON"),
    "severity": Column("the severity as the study gives it, in severity_unit (SNR in dB for scale 'snr')"),
    "severity_name": Column("what the severity measures ('SNR', 'I0', 'sigma', ...)"),
    "severity_unit": Column("unit of the severity ('dB', 'photons per bin', 'px', ...; '' for a plain number)"),
    "family_severity": Column("the severity handed to the family (sigma at the image's SNR; mean over coils for "
                              "parallel MRI)"),
    "threshold": Column("delta: a draw is bad when D(o(y'), o(y)) >= delta"),
    "distance": Column("D: relative_l2 (||o' - o|| / ||o||) or patch (largest 8 x 8 window change / image RMS)"),
    "estimator": Column("mc (naive Monte Carlo), splitting (fixed-proportion multilevel splitting, pCN), "
                        "last-particle (last-particle splitting, exact Poisson interval) or importance (FORM mixture)"),
    "target": Column("the reconstruction scored: network, reference (CS) or H (easy linear reconstruction)"),
    "p": Column("estimate of P(D >= delta) for this image; None when only a certified bound was reached"),
    "ci_low": Column("lower end of the interval at `confidence` (0 under certification)"),
    "ci_high": Column("upper end of the interval at `confidence` (the certified bound under certification)"),
    "log10_p": Column("log10 of p; None when p is None or 0"),
    "calls": Column("reconstructions run for this estimate (network evaluations, gradient ones included)"),
    "grad_calls": Column("of those, evaluations that also took a gradient (importance sampling)"),
    "levels": Column("splitting levels passed (the most over runs); last-particle: the path points kept; None for "
                     "the others"),
    "ess": Column("effective number of failure draws of the importance weights; None for the others"),
    "certified_below": Column("P < this at the one-sided confidence, when splitting or last-particle stopped "
                              "before delta; None otherwise"),
    "stop": Column("how the estimate ended: reached; a certification (stop_below, max_levels, max_moves, flat); "
                   "runs_disagree (the independent runs' estimates differ beyond their errors: a failure mode lost "
                   "by some runs) or mixing (a level's moves did not mix), both with ci_high widened to what the "
                   "runs still defend (1 if nothing); modes_lost (a failure mode that importance sampling found "
                   "holds >= 10% of p and no run reached it) or estimators_disagree (the particle and importance "
                   "intervals do not overlap), both with the interval widened to the hull of the two; or importance's modes_unresolved (restarts kept finding new "
                   "failure modes: p may be far too low, ci_high is 1). Anything but reached: not resolved"),
    "runs": Column("independent runs pooled in the estimate (splitting, last-particle); None for the others"),
    "modes": Column("separate failure regions among the particles that reached delta (the most over runs; "
                    "splitting only); None otherwise"),
    "validated": Column("true when the estimator's settings are at or above those whose coverage the tests "
                        "measure on planted maps (survey.rare.settings); false rows are not certificates"),
    "design_radius": Column("importance: ||z*|| of the nearest design point (FORM reliability index); None "
                            "otherwise"),
    "confidence": Column("confidence level of the interval"),
    "settings": Column("the estimator's settings as sorted JSON (particles, p0, mcmc_steps, draws, ...)"),
}


def _real(image: torch.Tensor) -> torch.Tensor:
    return image.real if torch.is_complex(image) else image


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@register("rare")
@dataclass(kw_only=True)
class Rare(Task):
    """P(D(o(y'), o(y)) >= delta) per image for a perturbation family at physical severities (module docstring).

    family, family_params: the survey.perturb family and its build parameters; severities: the levels, SNR
    in dB when `scale` is "snr" (gaussian only; default for gaussian), else the family's unit (None: "snr"
    for gaussian, "family" otherwise). thresholds: delta values; distances: relative_l2 and/or patch;
    estimators: mc, splitting, last-particle, importance; targets: network, reference, H. mc_draws: naive Monte
    Carlo draws; particles, mcmc_steps, runs: per run of splitting and last-particle, and the independent runs
    pooled per estimate (None: each estimator's validated setting, survey.rare.settings); p0, max_levels:
    splitting; stop_below: both (None: run to delta or the budget); is_draws, restarts, hlrf_iterations:
    importance sampling; cross_check: check splitting and last-particle against importance sampling's design
    points (survey.rare.crosscheck; None: wherever the family is differentiable and the particle settings are
    validated; its calls count on the row);
    batch: perturbed measurements per reconstruction call; confidence: of every interval.
    Settings below the validated ones (cross_check off included) warn at validation and mark the rows
    `validated = false`.
    """

    family: str = "gaussian"
    family_params: dict[str, Any] = field(default_factory=dict)
    severities: list[float] = field(default_factory=lambda: [30.0, 20.0])
    scale: str | None = None
    thresholds: list[float] = field(default_factory=lambda: [0.1])
    distances: list[str] = field(default_factory=lambda: ["relative_l2"])
    estimators: list[str] = field(default_factory=lambda: ["splitting"])
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    mc_draws: int = 1000
    particles: int | None = None
    p0: float = 0.2
    mcmc_steps: int | None = None
    runs: int | None = None
    max_levels: int = 60
    stop_below: float | None = 1e-9
    is_draws: int = 2000
    restarts: int = 32
    hlrf_iterations: int = 50
    cross_check: bool | None = None
    batch: int = 200
    confidence: float = 0.95

    table = "rare"
    title = "How often a random perturbation is bad (rare events)"
    columns = RARE_COLUMNS
    example = dict(family="gaussian", severities=[20.0], thresholds=[0.05], distances=["patch"],
                   estimators=["mc", "splitting", "last-particle", "importance"], mc_draws=8, particles=8,
                   mcmc_steps=1, runs=2, max_levels=2, stop_below=None, is_draws=4, restarts=1, hlrf_iterations=1,
                   batch=16)

    def __post_init__(self):
        name = type(self).__name__
        validate.choice(self, "family", family_names())
        if not isinstance(self.family_params, dict):
            raise ValueError(f"{name}.family_params must be a table of parameters, got {self.family_params!r}")
        try:
            built = self.built()
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}.family_params: {err}") from None
        if self.scale is None:
            self.scale = "snr" if self.family == "gaussian" else "family"
        validate.choice(self, "scale", SCALES)
        if self.scale == "snr" and self.family != "gaussian":
            raise ValueError(f"{name}.scale 'snr' is for the gaussian family; give {self.family!r} severities in "
                             f"its own unit (scale = 'family')")
        if self.scale == "snr":
            validate.sequence(self, "severities", validate.numbers_in(), "SNRs in dB", nonempty=True)
        else:
            validate.sequence(self, "severities", lambda v: _positive(v) or v == math.inf,
                              f"severities > 0 in the family's unit ({built.severity_name})", nonempty=True)
        validate.sequence(self, "thresholds", _positive, "thresholds > 0", nonempty=True)
        for key, choices in (("distances", sorted(DISTANCES)), ("estimators", ESTIMATORS), ("targets", TARGETS)):
            validate.sequence(self, key, lambda v, c=choices: v in c, f"names from {list(choices)}",
                              convert=str, nonempty=True)
            if len(set(getattr(self, key))) != len(getattr(self, key)):
                raise ValueError(f"{name}.{key} names an entry twice: {list(getattr(self, key))}")
        if "importance" in self.estimators and not built.differentiable:
            raise ValueError(f"{name}: the {self.family!r} family is not differentiable in its latent, so "
                             "importance sampling cannot find its design point; use mc or splitting")
        if self.cross_check is not None:
            validate.flag(self, "cross_check")
        if self.cross_check and not built.differentiable:
            raise ValueError(f"{name}.cross_check: the {self.family!r} family is not differentiable in its latent, "
                             "so importance sampling cannot check the particle estimators; set cross_check = false")
        for key, low in (("mc_draws", 1), ("max_levels", 0), ("is_draws", 1), ("restarts", 1),
                         ("hlrf_iterations", 1), ("batch", 1)):
            validate.integer(self, key, low=low)
        for key, low in (("particles", 2), ("mcmc_steps", 1), ("runs", 1)):
            if getattr(self, key) is not None:
                validate.integer(self, key, low=low)
        validate.number(self, "p0", low=0.0, high=1.0, low_open=True, high_open=True)
        validate.number(self, "stop_below", low=0.0, high=1.0, low_open=True, high_open=True, optional=True)
        validate.number(self, "confidence", low=0.0, high=1.0, low_open=True, high_open=True)
        for estimator in self.estimators:
            low = below_floor(estimator, self.estimator_settings(estimator))
            if estimator in PARTICLE_ESTIMATORS and self.checks(estimator):
                low += [f"its cross-check's importance {item}"
                        for item in below_floor("importance", self.estimator_settings("importance"))]
            if low:
                warnings.warn(f"{name}: {estimator} with {', '.join(low)} is below the validated settings "
                              "(survey.rare.settings): its rows get validated = false and are not certificates",
                              UserWarning, stacklevel=2)

    def particle_setting(self, estimator: str, key: str) -> int:
        """particles / mcmc_steps / runs for a particle estimator: the study's value or the validated one."""
        value = getattr(self, key)
        return int(VALIDATED[estimator][key] if value is None else value)

    def estimator_settings(self, estimator: str) -> dict[str, Any]:
        """The estimator's own settings (recorded on every row as JSON)."""
        if estimator == "mc":
            return {"draws": self.mc_draws}
        if estimator == "importance":
            return {"draws": self.is_draws, "restarts": self.restarts, "iterations": self.hlrf_iterations}
        values = {key: self.particle_setting(estimator, key) for key in ("particles", "mcmc_steps", "runs")}
        values["stop_below"] = self.stop_below
        values["cross_check"] = self.checks(estimator, values)
        if estimator == "splitting":
            values.update(p0=self.p0, max_levels=self.max_levels)
        return values

    def checks(self, estimator: str, values: dict[str, Any] | None = None) -> bool:
        """Whether a particle estimator's rows are cross-checked against importance sampling: `cross_check`, or
        when None, wherever the family is differentiable and the other settings are at the validated ones (below
        them the rows are no certificates anyway, and the check would cost more than the estimate)."""
        if self.cross_check is not None:
            return bool(self.cross_check)
        if values is None:
            values = {key: self.particle_setting(estimator, key) for key in ("particles", "mcmc_steps", "runs")}
        return bool(self.built().differentiable) and not below_floor(estimator, values)

    def validated(self, estimator: str) -> bool:
        """At or above the validated settings; a cross-checked particle estimator's check at importance
        sampling's validated settings too."""
        if below_floor(estimator, self.estimator_settings(estimator)):
            return False
        return not (estimator in PARTICLE_ESTIMATORS and self.checks(estimator)
                    and below_floor("importance", self.estimator_settings("importance")))

    def built(self):
        return make_family(self.family, **self.family_params)

    def settings(self, estimator: str) -> str:
        """The estimator's own settings as sorted JSON (recorded on every row)."""
        return json.dumps(self.estimator_settings(estimator), sort_keys=True)

    def estimate(self, estimator: str, score: Callable, dim: int, delta: float, generator: torch.Generator,
                 grad_score: Callable | None = None):
        """One survey.rare estimate of P(score >= delta) with this task's settings; a particle estimate
        cross-checked against importance sampling on grad_score (the same score with gradients) when
        `cross_check` is on."""
        result = self._estimate(estimator, score, dim, delta, generator)
        if estimator in PARTICLE_ESTIMATORS and self.checks(estimator):
            try:
                design = self._estimate("importance", grad_score or score, dim, delta, generator)
            except ValueError as err:   # a solver without gradients: the row stays unchecked, not validated
                return dataclasses.replace(result, info={**result.info, "cross_check_error": str(err)})
            result = cross_check(result, design)
        return result

    def _estimate(self, estimator: str, score: Callable, dim: int, delta: float, generator: torch.Generator):
        if estimator == "mc":
            return mc(score, dim, delta, n=self.mc_draws, generator=generator, batch=self.batch,
                      confidence=self.confidence)
        if estimator in PARTICLE_ESTIMATORS:
            n, steps, runs = (self.particle_setting(estimator, k) for k in ("particles", "mcmc_steps", "runs"))
            if estimator == "splitting":
                return splitting(score, dim, delta, generator=generator, n_particles=n, p0=self.p0, mcmc_steps=steps,
                                 runs=runs, max_levels=self.max_levels, stop_below=self.stop_below,
                                 confidence=self.confidence)
            return last_particle(score, dim, delta, generator=generator, n_particles=n, mcmc_steps=steps, runs=runs,
                                 stop_below=self.stop_below, confidence=self.confidence)
        return importance(score, dim, delta, generator=generator, n=self.is_draws, restarts=self.restarts,
                          iterations=self.hlrf_iterations, batch=self.batch, confidence=self.confidence)

    def solvers(self, ctx: TaskContext) -> dict[str, tuple[Callable, Callable]]:
        """target -> (solver for sampling, solver for gradients) as o(y, physics) -> real image."""
        physics_h = lambda u, phys: _real(phys.H(u))  # noqa: E731
        out: dict[str, tuple[Callable, Callable]] = {}
        for target in self.targets:
            if target == "network":
                out[target] = (ctx.net, ctx.net)
            elif target == "H":
                out[target] = (physics_h, physics_h)
            else:
                if ctx.reference is None:
                    raise ValueError(f"{type(self).__name__}: target 'reference' needs a reference solver in the "
                                     "context")
                ref = ctx.reference
                needs_grad = "importance" in self.estimators or (
                    any(e in PARTICLE_ESTIMATORS and self.checks(e) for e in self.estimators))
                grad_ref = differentiable(ref) if needs_grad else ref
                out[target] = (lambda u, phys, r=ref: _real(r(u, phys)), lambda u, phys, r=grad_ref: _real(r(u, phys)))
        return out

    def run(self, ctx: TaskContext, generator: torch.Generator) -> TaskResult:
        physics, x = ctx.physics, ctx.images
        family = self.built()
        if not family.applies_to(physics):
            raise ValueError(f"{type(self).__name__}: the {self.family!r} family does not apply to the operator kind "
                             f"{getattr(physics, 'kind', '?')!r} (it applies to {list(family.kinds or [])})")
        solvers = self.solvers(ctx)
        shape = tuple(family.latent_shape(physics))
        dim = math.prod(shape)
        settings = [(k, t, d, e) for k in range(len(self.severities)) for t in self.thresholds
                    for d in self.distances for e in self.estimators]
        # one seed per (image, setting), image-major, drawn up front: rows do not depend on the targets run
        seeds = torch.randint(0, 2**62, (x.shape[0], len(settings)), generator=generator,
                              device=generator.device).tolist()
        shared = {"family": self.family, "family_params": json.dumps(family.params(), sort_keys=True),
                  "severity_name": "SNR" if self.scale == "snr" else family.severity_name,
                  "severity_unit": "dB" if self.scale == "snr" else
                  ("photons per bin" if self.family == "poisson" else family.severity_unit or ""),
                  "confidence": self.confidence}
        rows: list[dict[str, Any]] = []
        for b in range(x.shape[0]):
            x_b = x[b:b + 1]
            with torch.no_grad():
                y_b = physics.A(x_b)
                clean = {t: solve(y_b, physics).detach() for t, (solve, _) in solvers.items()}
            levels = [self.family_severity(y_b, level, physics) for level in self.severities]
            for (k, delta, dist, estimator), seed in zip(settings, seeds[b]):
                severity = levels[k]
                for target, (solve, grad_solve) in solvers.items():
                    scores = [perturbation_score(net, physics, y_b, family, severity, distance=make_distance(dist),
                                                 batch=self.batch, clean=clean[target], x=x_b)
                              for net in (grad_solve if estimator == "importance" else solve, grad_solve)]
                    if len(shape) > 1:
                        scores = [_reshaped(score, shape) for score in scores]
                    gen = torch.Generator(device=generator.device)
                    gen.manual_seed(int(seed))
                    result = self.estimate(estimator, scores[0], dim, float(delta), gen, grad_score=scores[1])
                    info = result.info
                    radius = info.get("design_radius")
                    rows.append({"image_id": ctx.image_ids[b], "image_index": b, **shared,
                                 "severity": float(self.severities[k]),
                                 "family_severity": float(torch.as_tensor(severity, dtype=torch.float64).mean()),
                                 "threshold": float(delta), "distance": dist, "estimator": estimator,
                                 "target": target, "p": result.p, "ci_low": float(result.ci_low),
                                 "ci_high": float(result.ci_high), "log10_p": result.log10_p,
                                 "calls": int(result.calls), "grad_calls": int(result.grad_calls),
                                 "levels": result.levels, "ess": result.ess,
                                 "certified_below": result.certified_below,
                                 "stop": _stop(estimator, info),
                                 "design_radius": float(min(radius)) if radius else None,
                                 "runs": info.get("runs") if estimator in PARTICLE_ESTIMATORS else None,
                                 "modes": info.get("modes") if estimator in PARTICLE_ESTIMATORS else None,
                                 "validated": self.validated(estimator) and "cross_check_error" not in info,
                                 "settings": self.settings(estimator)})
        return TaskResult(rows, {})

    def family_severity(self, y: torch.Tensor, level: float, physics):
        """The family's severity for one image at a study level: sigma at an SNR (per coil for parallel MRI)."""
        if self.scale == "snr":
            return sigma_from_snr(y, level, physics)
        return float(level)


def _stop(estimator: str, info: dict) -> str:
    """The `stop` column: the particle estimators' reason (certification, disagreement, mixing), importance's
    unresolved modes, else reached."""
    if estimator in PARTICLE_ESTIMATORS:
        return info.get("stop", "reached")
    if estimator == "importance" and info.get("modes_unresolved"):
        return "modes_unresolved"
    return "reached"


def _reshaped(score: Callable, shape: tuple[int, ...]) -> Callable:
    """A score over flat latents (N, d) for a family whose latent has the shape `shape` per draw."""
    return lambda z: score(z.reshape(z.shape[0], *shape))


__all__ = ["ESTIMATORS", "PARTICLE_ESTIMATORS", "RARE_COLUMNS", "Rare", "SCALES", "TARGETS"]
