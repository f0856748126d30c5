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

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from survey.metrics import norms
from survey.numerics import real_image
from survey.tasks import validate
from survey.tasks.base import LABELS, Column, Task, TaskContext, TaskResult, register, rows_from_columns

#: Detectors: the companions' methods, and the model-free control.
METHODS = ("inn", "mcdropout", "probout", "inputnoise")
EXPERIMENTS = ("advdetect", "artdetect", "worstcase", "gaussian", "adaptive", "insertion")

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


class InputNoise(nn.Module):
    """Model-free control detector: u = per-pixel std of f(y + s e) over T passes, e Gaussian on the
    measured entries, s = sigma * RMS(y)."""

    method = "inputnoise"

    def __init__(self, net, sigma: float = 0.02, passes: int = 16):
        super().__init__()
        self.net, self.sigma, self.passes = net, float(sigma), int(passes)

    def uncertainty(self, y: torch.Tensor, physics, generator=None, passes: int | None = None) -> torch.Tensor:
        from survey.tasks.budget import _gaussian, measured_mask

        t = int(passes or self.passes)
        batch = y.shape[0]
        rms = norms(y) / math.sqrt(y[0].numel())
        e = _gaussian((t * batch, *y.shape[1:]), y, generator) * measured_mask(physics, y)
        stacked = y.repeat(t, *([1] * (y.ndim - 1))) + self.sigma * rms.repeat(t).view(-1, *([1] * (y.ndim - 1))) * e
        out = self.net(stacked, physics)
        out = out.real if torch.is_complex(out) else out
        return out.view(t, batch, *out.shape[1:]).std(dim=0)


class _WithNoise(nn.Module):
    """f(u + e): the network at a fixed measurement-noise draw e per image, for searches that build
    their inputs from the noiseless A x (worst_case stacks its samples image-major)."""

    def __init__(self, net, noise: torch.Tensor):
        super().__init__()
        self.net, self.noise = net, noise
        self.eval()  # worst_case restores a module's training flag, which would reach the wrapped net

    def forward(self, u: torch.Tensor, physics) -> torch.Tensor:
        reps = u.shape[0] // self.noise.shape[0]
        return self.net(u + self.noise.repeat_interleave(reps, dim=0), physics)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over each sample's pixels, (N, ...) x2 -> (N,); 0 where either is constant."""
    from survey.tasks.insertion import masked_correlation

    return masked_correlation(a, b, torch.ones_like(a, dtype=torch.bool))


def patch_max(u: torch.Tensor, window: int) -> torch.Tensor:
    """Largest mean of u over window x window patches (stride 1): (N, 1, n, n) -> (N,)."""
    w = min(window, u.shape[-1], u.shape[-2])
    return F.avg_pool2d(u, w, stride=1).flatten(1).amax(1)



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

    def _u(self, detector, method: str, y: torch.Tensor, physics, generator, passes: int | None = None):
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
        rows: list[dict[str, Any]] = []
        tensors: dict[str, list[torch.Tensor]] = {}

        # clean detector maps (shared by every experiment)
        clean_u = {}
        with torch.no_grad():
            for method, det in detectors.items():
                clean_u[method] = self._u(det, method, y0, physics, g)

        def add(method: str, experiment: str, y_new: torch.Tensor, *, u_new=None, sample: int = 0,
                pearson_with=None, input_change=None, out_new=None, extra=None):
            with torch.no_grad():
                u = self._u(detectors[method], method, y_new, physics, g) if u_new is None else u_new
                out = real_image(net(y_new, physics)) if out_new is None else out_new
                u0 = clean_u[method]
                columns = {
                    "image_id": list(ctx.image_ids), "image_index": list(range(x.shape[0])),
                    "method": [method] * x.shape[0], "experiment": [experiment] * x.shape[0],
                    "seed": [self.seed] * x.shape[0], "sample": [sample] * x.shape[0],
                    "pearson": (pearson((u0 - u).abs(), pearson_with) if pearson_with is not None
                                else [None] * x.shape[0]),
                    "u_mean": u.flatten(1).mean(1), "u_max": patch_max(u, self.window),
                    "u_mean_clean": u0.flatten(1).mean(1), "u_max_clean": patch_max(u0, self.window),
                    "out_change_rel": norms(out - f0) / norms(f0).clamp_min(1e-12),
                    "input_change_rel": input_change if input_change is not None else [None] * x.shape[0],
                    "budget": [None] * x.shape[0], "contrast": [None] * x.shape[0], "lost": [None] * x.shape[0],
                    "passes": [self._passes(method)] * x.shape[0], "adaptive_weight": [None] * x.shape[0],
                    "target_error": [None] * x.shape[0],
                }
                for key, value in (extra or {}).items():
                    columns[key] = value if isinstance(value, torch.Tensor) or isinstance(value, list) \
                        else [value] * x.shape[0]
                rows.extend(rows_from_columns(columns, x.shape[0]))
                if self.keep_tensors:
                    tensors.setdefault("u", []).append(u.detach().cpu())
                    tensors.setdefault("u_clean", []).append(u0.detach().cpu())

        if "advdetect" in self.experiments:
            y_adv, target_error, r = self.adversarial(ctx, x, y0, f0, g)
            with torch.no_grad():
                out_adv = real_image(net(y_adv, physics))
            for method in detectors:
                add(method, "advdetect", y_adv, pearson_with=(out_adv - f0).abs(), out_new=out_adv,
                    input_change=norms(r) / norms(x), extra={"target_error": target_error})
        if "artdetect" in self.experiments:
            y_ood, mask, change, contrast = self.atypical(physics, x, y0, noise, g)
            for method in detectors:
                add(method, "artdetect", y_ood, pearson_with=mask.to(x.dtype), input_change=change,
                    extra={"contrast": contrast})
        if "worstcase" in self.experiments:
            self.decisions(ctx, x, y0, noise, f0, detectors, clean_u, add, g)
        if "insertion" in self.experiments:
            self.insertions(ctx, x, noise, f0, detectors, add, g)
        stacked = {k: torch.cat(v) for k, v in tensors.items()}
        return TaskResult(rows, stacked)

    # -- AdvDetect ---------------------------------------------------------------------------------

    def patch_corners(self, x: torch.Tensor, side: int, g: torch.Generator) -> torch.Tensor:
        """Top-left corners (B, 2) of random side x side patches whose truth mean exceeds the tissue
        threshold (the highest-mean placements when none does)."""
        means = F.avg_pool2d(x, side, stride=1)[:, 0]  # (B, rows, cols)
        allowed = means > self.tissue_threshold
        allowed = torch.where(allowed.flatten(1).any(1).view(-1, 1, 1), allowed,
                              means >= means.flatten(1).amax(1).view(-1, 1, 1))
        draw = torch.rand(allowed.shape, generator=g, device=g.device, dtype=torch.float64).to(x.device)
        choice = torch.where(allowed, draw, torch.full_like(draw, -1.0)).flatten(1).argmax(1)
        cols = allowed.shape[-1]
        return torch.stack([choice // cols, choice % cols], dim=1)

    def adversarial(self, ctx: TaskContext, x, y0, f0, g):
        """(y_adv, relative target error, r): Oala et al.'s targeted attack, by Adam on r."""
        physics, net = ctx.physics, ctx.net
        n = x.shape[-1]
        side = max(2, round(self.patch_fraction * n))
        corners = self.patch_corners(x, side, g)
        patch = torch.zeros_like(x, dtype=torch.bool)
        for b, (i, j) in enumerate(corners.tolist()):
            patch[b, 0, i:i + side, j:j + side] = True
        denoising = getattr(physics, "kind", "") == "denoise"
        with torch.no_grad():
            if denoising:
                noise = torch.randn(x.shape, generator=g, device=g.device, dtype=x.dtype).to(x.device)
                target = f0 + patch * self.target_noise * noise
            else:
                mean = (f0 * patch).flatten(1).sum(1) / patch.flatten(1).sum(1)
                target = f0 - patch * self.subtract * mean.view(-1, 1, 1, 1)
        lam = (0.5 if denoising else 0.0) if self.lam is None else self.lam
        r = torch.zeros_like(x, requires_grad=True)
        optimiser = torch.optim.Adam([r], lr=self.adv_lr)
        for _ in range(self.adv_iterations):
            with torch.enable_grad():
                out = real_image(net(y0 + physics.A(r), physics))
                loss = (out - target).square().sum() + lam * r.square().sum()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
            optimiser.step()
        r = r.detach()
        y_adv = y0 + physics.A(r)
        with torch.no_grad():
            err = norms(real_image(net(y_adv, physics)) - target) / norms(target - f0).clamp_min(1e-12)
        return y_adv, err, r

    # -- ArtDetect ---------------------------------------------------------------------------------

    def atypical(self, physics, x, y0, noise, g):
        """(y_ood, changed-region mask, input change, contrast or None): salt-and-pepper in one half
        (denoising) or an inserted silhouette (other operators)."""
        n = x.shape[-1]
        if getattr(physics, "kind", "") == "denoise":
            half = torch.randint(0, 4, (x.shape[0],), generator=g, device=g.device).tolist()
            mask = torch.zeros_like(x, dtype=torch.bool)
            for b, h in enumerate(half):  # left, right, top, bottom
                sl = [slice(None), slice(None)]
                sl[0 if h >= 2 else 1] = slice(0, n // 2) if h % 2 == 0 else slice(n // 2, n)
                mask[b, 0, sl[0], sl[1]] = True
            u = torch.rand(x.shape, generator=g, device=g.device, dtype=x.dtype).to(x.device)
            salt = torch.rand(x.shape, generator=g, device=g.device, dtype=x.dtype).to(x.device) < 0.5
            sp = torch.where(u < self.saltpepper, salt.to(x.dtype), x)
            y_ood = torch.where(mask, sp, y0)
            return y_ood, mask, norms(y_ood - y0) / norms(x), None
        x_d, mask, _ = self._insert(x, self.art_detail, self.art_size, self.art_contrast, g)
        y_ood = physics.A(x_d) + (noise if noise is not None else 0)
        return y_ood, mask, norms(x_d - x) / norms(x), self.art_contrast

    def _insertion_task(self, detail: str, size_fraction: float, contrast: float, n: int):
        from survey.tasks.insertion import Insertion

        size = max(3, round(size_fraction * n))
        return Insertion(detail=detail, size=size, contrast=contrast, position="random-tissue",
                         tissue_threshold=self.tissue_threshold, keep_tensors=False)

    def _insert(self, x, detail, size_fraction, contrast, g):
        from survey.tasks.symbols import paste

        task = self._insertion_task(detail, size_fraction, contrast, x.shape[-1])
        stamp = task.stamp()
        centres = task.centres(x, stamp, g)
        profile, mask = paste(stamp, centres, x.shape[-1], dtype=x.dtype, device=x.device)
        return x + contrast * profile, mask, (task, stamp, centres, contrast * profile)

    # -- decisions ---------------------------------------------------------------------------------

    def decisions(self, ctx, x, y0, noise, f0, detectors, clean_u, add, g):
        from survey.tasks.budget import worst_case

        physics, net = ctx.physics, ctx.net
        f = net if noise is None else _WithNoise(net, noise)
        found = worst_case(f, physics, x, [self.budget], iterations=self.budget_iterations,
                           restarts=self.restarts, generator=g)
        r = found.r[0].detach()
        y_wc = y0 + physics.A(r)
        v = torch.randn(x.shape, generator=g, device=g.device, dtype=x.dtype).to(x.device)
        v = v * (norms(r) / norms(v)).view(-1, 1, 1, 1)
        y_g = y0 + physics.A(v)
        extra = {"budget": self.budget}
        for method in detectors:
            add(method, "worstcase", y_wc, input_change=norms(r) / norms(x), extra=extra)
            add(method, "gaussian", y_g, input_change=norms(v) / norms(x), extra=extra)
        if "adaptive" in self.experiments:
            for method, det in detectors.items():
                r_ad = self.adaptive(ctx, x, y0, f0, r, method, det, clean_u[method], g)
                add(method, "adaptive", y0 + physics.A(r_ad), input_change=norms(r_ad) / norms(x),
                    extra={**extra, "adaptive_weight": self.adaptive_weight})

    def adaptive(self, ctx, x, y0, f0, r0, method, det, u0, g) -> torch.Tensor:
        """The detector-aware attack (module docstring): projected normalised ascent from the worst case."""
        physics, net = ctx.physics, ctx.net
        radius = (self.budget * norms(x)).view(-1, 1, 1, 1)
        m0 = u0.flatten(1).mean(1).clamp_min(1e-12)
        big0 = patch_max(u0, self.window).clamp_min(1e-12)
        scale = (self.budget * norms(f0)).clamp_min(1e-12)
        r = r0.clone()
        best, best_r = torch.full_like(m0, -math.inf), r0.clone()
        velocity = torch.zeros_like(r)
        tiny = torch.finfo(x.dtype).tiny
        for k in range(self.adaptive_iterations + 1):
            with torch.enable_grad():
                r_var = r.detach().requires_grad_(True)
                y = y0 + physics.A(r_var)
                out = real_image(net(y, physics))
                u = self._u(det, method, y, physics, g, passes=self.attack_passes)
                penalty = (torch.relu(u.flatten(1).mean(1) / m0 - 1).square()
                           + torch.relu(patch_max(u, self.window) / big0 - 1).square())
                objective = norms(out - f0).square() / scale.square() - self.adaptive_weight * penalty
                better = objective.detach() > best
                best = torch.where(better, objective.detach(), best)
                best_r = torch.where(better.view(-1, 1, 1, 1), r.detach(), best_r)
                if k == self.adaptive_iterations:
                    break
                (grad,) = torch.autograd.grad(objective.sum(), r_var)
            grad = grad / norms(grad).clamp_min(tiny).view(-1, 1, 1, 1)
            velocity = 0.5 * velocity + grad
            direction = velocity / norms(velocity).clamp_min(tiny).view(-1, 1, 1, 1)
            alpha = 0.02 + 0.48 * 0.5 * (1 + math.cos(math.pi * k / self.adaptive_iterations))
            r = r.detach() + alpha * radius * direction
            r = r * (radius.flatten() / norms(r).clamp_min(tiny)).clamp(max=1.0).view(-1, 1, 1, 1)
        return best_r.detach()

    def insertions(self, ctx, x, noise, f0, detectors, add, g):
        physics, net = ctx.physics, ctx.net
        for i, contrast in enumerate(self.insert_contrasts):
            x_d, mask, (task, stamp, centres, d) = self._insert(x, self.insert_detail, self.insert_size, contrast, g)
            y_d = physics.A(x_d) + (noise if noise is not None else 0)
            with torch.no_grad():
                out = real_image(net(y_d, physics))
                measured = task._measure(out, f0, x_d, d, mask, centres, stamp)
            lost = [not bool(v) for v in measured["recovered"].tolist()]
            for method in detectors:
                add(method, "insertion", y_d, sample=i, out_new=out, input_change=norms(d) / norms(x),
                    extra={"contrast": float(contrast), "lost": lost})


__all__ = ["DETECT_COLUMNS", "Detect", "EXPERIMENTS", "InputNoise", "METHODS", "patch_max", "pearson"]
