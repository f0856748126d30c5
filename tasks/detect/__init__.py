"""Uncertainty as an instability detector: Oala et al.'s two experiments, and detection as a decision.

The detectors are the network's uncertainty companions (survey.nets.uncertainty: "inn", "mcdropout",
"probout"), handed over in `ctx.companions` (method -> model with `uncertainty(y, physics, generator)`),
plus "inputnoise", a model-free control needing no companion: the per-pixel std of f over T copies
of the input with Gaussian measurement noise of `inputnoise_sigma` (relative to the RMS of A x).

Table 1 of Oala et al. (one row per image, method and experiment, column `pearson`):

- AdvDetect: an adversarial target x_tar is made from the reconstruction x_rec = f(y) inside a random
  square patch (side `patch_fraction` of the image side, Oala et al.'s 50 / 512; placed where the
  truth's patch mean exceeds `tissue_threshold`): denoising adds Gaussian noise of sd `target_noise`
  there, other operators subtract `subtract` (1.5) times the patch mean of x_rec. The perturbation
  r minimises ||f(y + A r) - x_tar||^2 + lambda ||r||^2 (lambda 0.5 for denoising, 0 otherwise, as
  Oala et al.) by `adv_iterations` Adam steps (Oala et al.: L-BFGS-B on the network input; here r is an
  image-domain perturbation through A, as the survey's attacks). score = Pearson correlation over the
  image of |u(y) - u(y_adv)| and |f(y) - f(y_adv)|.
- ArtDetect: denoising replaces the Gaussian noise by salt-and-pepper noise (density `saltpepper`) in
  one random half of the image; other operators get an inserted silhouette (`art_detail`, height
  `art_size` of the side, `art_contrast`; survey.tasks.symbols). score = Pearson correlation of
  |u(y) - u(y_ood)| with the changed region's 0/1 mask.

Decision rows (image-level scores u_mean = mean of u, u_max = largest mean over `window` x
`window` patches, each at the perturbed input and, u_*_clean, at the clean one):

- "worstcase": r from tasks/budget.worst_case at `budget` (||r|| <= budget ||x||); "gaussian": a
  Gaussian image of the same norm (the negatives of that ROC); "adaptive": an attacker who knows the
  detector starts from the worst case and maximises ||f(y + A r) - f(y)||^2 / (budget ||f(y)||)^2 -
  `adaptive_weight` * (relu(m / m0 - 1)^2 + relu(M / M0 - 1)^2), m, M the detector's u_mean and u_max
  (m0, M0 clean), on the same ball (MC dropout: `attack_passes` fresh masks per step).
- "insertion": a detail (`insert_detail`, `insert_size`) at each of `insert_contrasts`, `lost` by
  survey.tasks.insertion's recovery rule (not recovered by f); the ROC tells lost from kept.

Operators with a noise model (denoising) get one noise draw per image shared by every input of that
image. `seed` labels the experimental run (Table 1 averages three) and enters the random draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from survey.metrics import norms
from survey.numerics import real_image
from survey.tasks import validate
from survey.tasks.base import LABELS, Column, Task, TaskContext, TaskResult, register, rows_from_columns
from survey.tasks.detect.detectors import METHODS, InputNoise, WithNoise, patch_max, pearson
from survey.tasks.detect.experiments import EXPERIMENTS, Run, insert_detail, selected

DETECT_COLUMNS: dict[str, Column] = {
    **LABELS,
    "image_id": Column("stable id of the ground-truth image"),
    "image_index": Column("index of the image in the unit"),
    "method": Column("uncertainty method: inn, mcdropout, probout (companions) or inputnoise (control)"),
    "experiment": Column("advdetect, artdetect (Oala et al.'s Table 1), worstcase, gaussian, adaptive, insertion"),
    "seed": Column("experimental run (Table 1 averages three)"),
    "sample": Column("index of the input within (image, method, experiment): the contrast index for insertion"),
    "pearson": Column("Table 1 score: Pearson correlation of |u(y) - u(y')| with |f(y) - f(y')| (advdetect) or "
                      "with the changed region's mask (artdetect); None for decision rows"),
    "u_mean": Column("mean of u over the image at the perturbed input", "image units"),
    "u_max": Column("largest mean of u over window x window patches at the perturbed input", "image units"),
    "u_mean_clean": Column("mean of u over the image at the clean input", "image units"),
    "u_max_clean": Column("largest patch mean of u at the clean input", "image units"),
    "out_change_rel": Column("||f(y') - f(y)|| / ||f(y)||"),
    "input_change_rel": Column("||x' - x|| / ||x||, x' - x the image-domain change behind y' (the S&P "
                               "half: y' - y)"),
    "budget": Column("worst-case budget eps (||r|| <= eps ||x||); None outside worstcase/gaussian/adaptive"),
    "contrast": Column("inserted detail's contrast (insertion, artdetect on non-denoising); else None",
                       "image units"),
    "lost": Column("insertion rows: the detail is not recovered by f (survey.tasks.insertion's rule); else None"),
    "passes": Column("MC dropout / inputnoise passes T; None for the other methods"),
    "adaptive_weight": Column("penalty weight of the adaptive attack; None for other rows"),
    "target_error": Column("advdetect: ||f(y_adv) - x_tar|| / ||x_tar - f(y)|| (1 = target not approached); "
                           "else None"),
}


@register("detect")
@dataclass(kw_only=True)
class Detect(Task):
    """Uncertainty companions as instability detectors (module docstring).

    methods: detectors to test (companions from the context, or "inputnoise"); experiments: which of
    EXPERIMENTS to run; seed: experimental run. AdvDetect: patch_fraction, tissue_threshold,
    target_noise, subtract, lam (None = Oala et al.'s: 0.5 denoising, 0 otherwise), adv_iterations,
    adv_lr. ArtDetect: saltpepper (density), art_detail, art_size (fraction of the side),
    art_contrast. Decisions: budget, budget_iterations, restarts, window; adaptive_weight,
    adaptive_iterations, attack_passes; insert_detail, insert_size (fraction), insert_contrasts.
    passes: MC dropout passes T (None: the companion's own, 128); inputnoise_sigma / inputnoise_passes.
    """

    table = "detectors"
    title = "Uncertainty as an instability detector"
    columns = DETECT_COLUMNS
    example = dict(methods=["inputnoise"], inputnoise_passes=4, adv_iterations=2, budget_iterations=2,
                   adaptive_iterations=2, restarts=1, insert_contrasts=[0.1, 0.8], art_size=0.4, insert_size=0.4)
    needs_grad = True
    list_params = ("methods", "experiments", "insert_contrasts")
    parameter_help = {
        "methods": Column("detectors to test: companions of the network (inn, mcdropout, probout) or inputnoise"),
        "experiments": Column(f"which experiments to run, among {list(EXPERIMENTS)}"),
        "seed": Column("experimental run, entering the random draws (Oala et al.'s Table 1 averages three)"),
        "patch_fraction": Column("AdvDetect: side of the altered square patch, a fraction of the image side"),
        "tissue_threshold": Column("AdvDetect and insertions: a patch or detail sits where the truth's mean "
                                   "exceeds this", "image units"),
        "target_noise": Column("AdvDetect on denoising: sd of the Gaussian noise added to the target patch",
                               "image units"),
        "subtract": Column("AdvDetect elsewhere: the target patch loses this many times its mean"),
        "lam": Column("AdvDetect: penalty on ||r||^2 (None: Oala et al.'s, 0.5 denoising, 0 otherwise)"),
        "adv_iterations": Column("AdvDetect: Adam steps of the targeted attack"),
        "adv_lr": Column("AdvDetect: Adam learning rate", "image units"),
        "saltpepper": Column("ArtDetect on denoising: salt-and-pepper density in the chosen half"),
        "art_detail": Column("ArtDetect elsewhere: the inserted silhouette (survey.tasks.symbols)"),
        "art_size": Column("ArtDetect: silhouette height, a fraction of the image side"),
        "art_contrast": Column("ArtDetect: silhouette contrast", "image units"),
        "budget": Column("worstcase / gaussian / adaptive: the budget eps, ||r|| <= eps ||x||"),
        "budget_iterations": Column("worstcase: iterations of the budget search"),
        "restarts": Column("worstcase: random starts of the budget search"),
        "window": Column("side of the patches whose largest mean is u_max", "px"),
        "adaptive_weight": Column("adaptive: weight of the detector penalty in the attacker's objective"),
        "adaptive_iterations": Column("adaptive: iterations of the detector-aware attack"),
        "attack_passes": Column("adaptive: MC dropout / inputnoise passes per step of the attack"),
        "insert_detail": Column("insertion: the inserted detail (survey.tasks.symbols)"),
        "insert_size": Column("insertion: detail size, a fraction of the image side"),
        "insert_contrasts": Column("insertion: the contrasts tried, one row set each", "image units"),
        "passes": Column("MC dropout passes T (None: the companion's own)"),
        "inputnoise_sigma": Column("inputnoise: noise sd relative to the RMS of A x"),
        "inputnoise_passes": Column("inputnoise: passes T"),
        "keep_tensors": Column("return the uncertainty maps u and u_clean"),
    }

    methods: tuple[str, ...] = ("inn", "mcdropout", "probout")
    experiments: tuple[str, ...] = EXPERIMENTS
    seed: int = 0
    patch_fraction: float = 50 / 512
    tissue_threshold: float = 0.1
    target_noise: float = 25 / 255
    subtract: float = 1.5
    lam: float | None = None
    adv_iterations: int = 100
    adv_lr: float = 0.01
    saltpepper: float = 0.1
    art_detail: str = "heart"
    art_size: float = 0.25
    art_contrast: float = 0.5
    budget: float = 0.05
    budget_iterations: int = 40
    restarts: int = 2
    window: int = 8
    adaptive_weight: float = 10.0
    adaptive_iterations: int = 40
    attack_passes: int = 8
    insert_detail: str = "heart"
    insert_size: float = 0.2
    insert_contrasts: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    passes: int | None = None
    inputnoise_sigma: float = 0.02
    inputnoise_passes: int = 16
    keep_tensors: bool = False

    def __post_init__(self):
        from survey.tasks.symbols import DETAILS

        validate.sequence(self, "methods", lambda v: v in METHODS, f"methods among {list(METHODS)}", convert=str,
                          nonempty=True)
        validate.sequence(self, "experiments", lambda v: v in EXPERIMENTS, f"experiments among {list(EXPERIMENTS)}",
                          convert=str, nonempty=True)
        if "adaptive" in self.experiments and "worstcase" not in self.experiments:
            raise ValueError("Detect.experiments: 'adaptive' starts from the worst case; add 'worstcase'")
        validate.sequence(self, "insert_contrasts", validate.numbers_in(0.0, low_open=True), "contrasts > 0",
                          nonempty=True)
        for key in ("seed",):
            validate.integer(self, key, low=0)
        for key, low in (("adv_iterations", 1), ("budget_iterations", 1), ("restarts", 1), ("window", 1),
                         ("adaptive_iterations", 1), ("attack_passes", 2), ("inputnoise_passes", 2)):
            validate.integer(self, key, low=low)
        if self.passes is not None:
            validate.integer(self, "passes", low=2)
        for key in ("patch_fraction", "art_size", "insert_size"):
            validate.number(self, key, low=0.0, high=1.0, low_open=True)
        validate.number(self, "saltpepper", low=0.0, high=1.0, low_open=True)
        for key in ("target_noise", "subtract", "adv_lr", "art_contrast", "budget", "adaptive_weight",
                    "inputnoise_sigma"):
            validate.positive(self, key)
        validate.number(self, "lam", low=0.0, optional=True)
        validate.number(self, "tissue_threshold")
        validate.choice(self, "art_detail", DETAILS)
        validate.choice(self, "insert_detail", DETAILS)
        validate.flag(self, "keep_tensors")

    # -- detectors ---------------------------------------------------------------------------------

    def companions_needed(self) -> tuple[str, ...]:
        """The companion methods this task reads from the context (checked by the engine's preflight)."""
        return tuple(m for m in self.methods if m != "inputnoise")

    def detectors(self, ctx: TaskContext) -> dict[str, Any]:
        companions = getattr(ctx, "companions", None) or {}
        out = {}
        for method in self.methods:
            if method == "inputnoise":
                out[method] = InputNoise(ctx.net, self.inputnoise_sigma, self.inputnoise_passes)
            elif method in companions:
                out[method] = companions[method]
            else:
                raise ValueError(f"detect: network {ctx.network!r} has no {method!r} companion (the engine loads "
                                 f"zoo companions `<net>-{method}`: `survey zoo train {ctx.network}-{method}`); "
                                 f"it has {sorted(companions) or 'none'}")
        return out

    def _passes(self, method: str) -> int | None:
        if method == "mcdropout":
            return self.passes
        if method == "inputnoise":
            return self.inputnoise_passes
        return None

    def uncertainty(self, detector, method: str, y: torch.Tensor, physics, generator, passes: int | None = None):
        """The detector's per-pixel uncertainty map u at y (MC dropout / inputnoise with `passes`)."""
        kwargs = {}
        if method in ("mcdropout", "inputnoise"):
            kwargs["passes"] = passes or self._passes(method)
        u = detector.uncertainty(y, physics, generator, **kwargs)
        return u.abs() if torch.is_complex(u) else u  # an uncertainty map is a size, not an image to score

    # -- run ---------------------------------------------------------------------------------------

    def run(self, ctx: TaskContext, generator: torch.Generator) -> TaskResult:
        physics, x = ctx.physics, ctx.images
        x = x.real if torch.is_complex(x) else x
        g = torch.Generator(device=generator.device)
        g.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device)) + self.seed)
        detectors = self.detectors(ctx)
        net = ctx.net
        noisy = hasattr(physics, "noisy") and getattr(physics, "sigma", 0.0) > 0
        with torch.no_grad():
            noise = physics.noisy(torch.zeros_like(x), g) if noisy else None
            y0 = physics.A(x) if noise is None else physics.A(x) + noise
            f0 = real_image(net(y0, physics))
            clean_u = {method: self.uncertainty(det, method, y0, physics, g) for method, det in detectors.items()}
        rows: list[dict[str, Any]] = []
        tensors: dict[str, list[torch.Tensor]] = {}
        count = x.shape[0]

        def add(method: str, experiment: str, y_new: torch.Tensor, *, u_new=None, sample: int = 0,
                pearson_with=None, input_change=None, out_new=None, extra=None):
            """Rows of one input y' for every image: the detector's scores at y' and at y0."""
            with torch.no_grad():
                u = self.uncertainty(detectors[method], method, y_new, physics, g) if u_new is None else u_new
                out = real_image(net(y_new, physics)) if out_new is None else out_new
                u0 = clean_u[method]
                none = [None] * count
                columns = {
                    "image_id": list(ctx.image_ids), "image_index": list(range(count)),
                    "method": [method] * count, "experiment": [experiment] * count,
                    "seed": [self.seed] * count, "sample": [sample] * count,
                    "pearson": pearson((u0 - u).abs(), pearson_with) if pearson_with is not None else none,
                    "u_mean": u.flatten(1).mean(1), "u_max": patch_max(u, self.window),
                    "u_mean_clean": u0.flatten(1).mean(1), "u_max_clean": patch_max(u0, self.window),
                    "out_change_rel": norms(out - f0) / norms(f0).clamp_min(1e-12),
                    "input_change_rel": input_change if input_change is not None else none,
                    "budget": none, "contrast": none, "lost": none,
                    "passes": [self._passes(method)] * count, "adaptive_weight": none, "target_error": none,
                }
                for key, value in (extra or {}).items():
                    columns[key] = value if isinstance(value, (torch.Tensor, list)) else [value] * count
                rows.extend(rows_from_columns(columns, count))
                if self.keep_tensors:
                    tensors.setdefault("u", []).append(u.detach().cpu())
                    tensors.setdefault("u_clean", []).append(u0.detach().cpu())

        state = Run(ctx, x, y0, noise, f0, detectors, clean_u, g, add)
        for experiment in selected(self.experiments):
            experiment.run(self, state)
        return TaskResult(rows, {k: torch.cat(v) for k, v in tensors.items()})


__all__ = ["DETECT_COLUMNS", "Detect", "EXPERIMENTS", "InputNoise", "METHODS", "WithNoise", "insert_detail",
           "patch_max", "pearson"]
