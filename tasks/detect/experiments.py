"""The detect task's experiments, one strategy each, sharing one `Run` (inputs, detectors, clean maps, rows).

A strategy has the experiment `names` it writes and `run(task, state)`, which reads the task's parameters
and adds rows through `state.add`. They run in `ORDER` (the random stream's order), whatever order a
study lists them in; a new experiment is a strategy here plus its name in `ORDER`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F

from survey.metrics import norms
from survey.numerics import ascent_step, cosine_step, real_image
from survey.tasks.detect.detectors import WithNoise, patch_max


@dataclass
class Run:
    """What every experiment of one unit shares: y0 = A x (+ one noise draw per image), f0 = f(y0), the
    detectors and their clean maps, the generator `g`, and `add(method, experiment, y', ...)` for rows."""

    ctx: Any
    x: torch.Tensor
    y0: torch.Tensor
    noise: torch.Tensor | None
    f0: torch.Tensor
    detectors: dict[str, Any]
    clean_u: dict[str, torch.Tensor]
    g: torch.Generator
    add: Callable[..., None]
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def physics(self):
        return self.ctx.physics

    @property
    def net(self):
        return self.ctx.net


class Experiment:
    names: ClassVar[tuple[str, ...]] = ()

    def run(self, task, state: Run) -> None:
        raise NotImplementedError


def insert_detail(task, x: torch.Tensor, detail: str, size_fraction: float, contrast: float, g):
    """x with a detail pasted at random tissue positions: (x_d, mask, (insertion task, stamp, centres, d))."""
    from survey.tasks.insertion import Insertion
    from survey.tasks.symbols import paste

    size = max(3, round(size_fraction * x.shape[-1]))
    inserting = Insertion(detail=detail, size=size, contrast=contrast, position="random-tissue",
                          tissue_threshold=task.tissue_threshold, keep_tensors=False)
    stamp = inserting.stamp()
    centres = inserting.centres(x, stamp, g)
    profile, mask = paste(stamp, centres, x.shape[-1], dtype=x.dtype, device=x.device)
    return x + contrast * profile, mask, (inserting, stamp, centres, contrast * profile)


class AdvDetect(Experiment):
    """Oala et al.'s AdvDetect: a targeted attack towards a patch-altered reconstruction (module docstring)."""

    names = ("advdetect",)

    def run(self, task, state: Run) -> None:
        y_adv, target_error, r = self.adversarial(task, state)
        with torch.no_grad():
            out_adv = real_image(state.net(y_adv, state.physics))
        for method in state.detectors:
            state.add(method, "advdetect", y_adv, pearson_with=(out_adv - state.f0).abs(), out_new=out_adv,
                      input_change=norms(r) / norms(state.x), extra={"target_error": target_error})

    @staticmethod
    def patch_corners(task, x: torch.Tensor, side: int, g: torch.Generator) -> torch.Tensor:
        """Top-left corners (B, 2) of random side x side patches whose truth mean exceeds the tissue
        threshold (the highest-mean placements when none does)."""
        means = F.avg_pool2d(x, side, stride=1)[:, 0]  # (B, rows, cols)
        allowed = means > task.tissue_threshold
        allowed = torch.where(allowed.flatten(1).any(1).view(-1, 1, 1), allowed,
                              means >= means.flatten(1).amax(1).view(-1, 1, 1))
        draw = torch.rand(allowed.shape, generator=g, device=g.device, dtype=torch.float64).to(x.device)
        choice = torch.where(allowed, draw, torch.full_like(draw, -1.0)).flatten(1).argmax(1)
        cols = allowed.shape[-1]
        return torch.stack([choice // cols, choice % cols], dim=1)

    def adversarial(self, task, state: Run):
        """(y_adv, relative target error, r): Oala et al.'s targeted attack, by Adam on r."""
        physics, net, x, y0, f0, g = state.physics, state.net, state.x, state.y0, state.f0, state.g
        side = max(2, round(task.patch_fraction * x.shape[-1]))
        corners = self.patch_corners(task, x, side, g)
        patch = torch.zeros_like(x, dtype=torch.bool)
        for b, (i, j) in enumerate(corners.tolist()):
            patch[b, 0, i:i + side, j:j + side] = True
        denoising = getattr(physics, "kind", "") == "denoise"
        with torch.no_grad():
            if denoising:
                noise = torch.randn(x.shape, generator=g, device=g.device, dtype=x.dtype).to(x.device)
                target = f0 + patch * task.target_noise * noise
            else:
                mean = (f0 * patch).flatten(1).sum(1) / patch.flatten(1).sum(1)
                target = f0 - patch * task.subtract * mean.view(-1, 1, 1, 1)
        lam = (0.5 if denoising else 0.0) if task.lam is None else task.lam
        r = torch.zeros_like(x, requires_grad=True)
        optimiser = torch.optim.Adam([r], lr=task.adv_lr)
        for _ in range(task.adv_iterations):
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


class ArtDetect(Experiment):
    """Oala et al.'s ArtDetect: salt-and-pepper in one half (denoising) or an inserted silhouette."""

    names = ("artdetect",)

    def run(self, task, state: Run) -> None:
        y_ood, mask, change, contrast = self.atypical(task, state)
        for method in state.detectors:
            state.add(method, "artdetect", y_ood, pearson_with=mask.to(state.x.dtype), input_change=change,
                      extra={"contrast": contrast})

    @staticmethod
    def atypical(task, state: Run):
        """(y_ood, changed-region mask, input change, contrast or None)."""
        physics, x, y0, noise, g = state.physics, state.x, state.y0, state.noise, state.g
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
            sp = torch.where(u < task.saltpepper, salt.to(x.dtype), x)
            y_ood = torch.where(mask, sp, y0)
            return y_ood, mask, norms(y_ood - y0) / norms(x), None
        x_d, mask, _ = insert_detail(task, x, task.art_detail, task.art_size, task.art_contrast, g)
        y_ood = physics.A(x_d) + (noise if noise is not None else 0)
        return y_ood, mask, norms(x_d - x) / norms(x), task.art_contrast


class WorstCase(Experiment):
    """Decision rows: the worst case at `budget`, a Gaussian image of its norm, and (with "adaptive") the
    attacker who knows the detector, starting from the worst case."""

    names = ("worstcase", "gaussian", "adaptive")

    def run(self, task, state: Run) -> None:
        from survey.tasks.budget import worst_case

        physics, net, x, y0, g = state.physics, state.net, state.x, state.y0, state.g
        f = net if state.noise is None else WithNoise(net, state.noise)
        found = worst_case(f, physics, x, [task.budget], iterations=task.budget_iterations,
                           restarts=task.restarts, generator=g)
        r = found.r[0].detach()
        y_wc = y0 + physics.A(r)
        v = torch.randn(x.shape, generator=g, device=g.device, dtype=x.dtype).to(x.device)
        v = v * (norms(r) / norms(v)).view(-1, 1, 1, 1)
        y_g = y0 + physics.A(v)
        extra = {"budget": task.budget}
        for method in state.detectors:
            state.add(method, "worstcase", y_wc, input_change=norms(r) / norms(x), extra=extra)
            state.add(method, "gaussian", y_g, input_change=norms(v) / norms(x), extra=extra)
        if "adaptive" in task.experiments:
            for method, det in state.detectors.items():
                r_ad = self.adaptive(task, state, r, method, det)
                state.add(method, "adaptive", y0 + physics.A(r_ad), input_change=norms(r_ad) / norms(x),
                          extra={**extra, "adaptive_weight": task.adaptive_weight})

    @staticmethod
    def adaptive(task, state: Run, r0: torch.Tensor, method: str, det) -> torch.Tensor:
        """The detector-aware attack: projected normalised ascent from the worst case on the same ball."""
        physics, net, x, y0, f0, g = state.physics, state.net, state.x, state.y0, state.f0, state.g
        u0 = state.clean_u[method]
        radius = (task.budget * norms(x)).view(-1, 1, 1, 1)
        m0 = u0.flatten(1).mean(1).clamp_min(1e-12)
        big0 = patch_max(u0, task.window).clamp_min(1e-12)
        scale = (task.budget * norms(f0)).clamp_min(1e-12)
        r = r0.clone()
        best, best_r = torch.full_like(m0, -math.inf), r0.clone()
        velocity = torch.zeros_like(r)
        for k in range(task.adaptive_iterations + 1):
            with torch.enable_grad():
                r_var = r.detach().requires_grad_(True)
                y = y0 + physics.A(r_var)
                out = real_image(net(y, physics))
                u = task.uncertainty(det, method, y, physics, g, passes=task.attack_passes)
                penalty = (torch.relu(u.flatten(1).mean(1) / m0 - 1).square()
                           + torch.relu(patch_max(u, task.window) / big0 - 1).square())
                objective = norms(out - f0).square() / scale.square() - task.adaptive_weight * penalty
                better = objective.detach() > best
                best = torch.where(better, objective.detach(), best)
                best_r = torch.where(better.view(-1, 1, 1, 1), r.detach(), best_r)
                if k == task.adaptive_iterations:
                    break
                (grad,) = torch.autograd.grad(objective.sum(), r_var)
            alpha = cosine_step(k, task.adaptive_iterations, 0.5, 0.02)
            r, velocity = ascent_step(r.detach(), velocity, grad, radius.flatten(), alpha, momentum=0.5)
        return best_r.detach()


class InsertionLost(Experiment):
    """Decision rows: a detail at each contrast, `lost` when f does not recover it (insertion's rule)."""

    names = ("insertion",)

    def run(self, task, state: Run) -> None:
        physics, net, x, noise, f0, g = state.physics, state.net, state.x, state.noise, state.f0, state.g
        for i, contrast in enumerate(task.insert_contrasts):
            x_d, mask, (inserting, stamp, centres, d) = insert_detail(task, x, task.insert_detail, task.insert_size,
                                                                      contrast, g)
            y_d = physics.A(x_d) + (noise if noise is not None else 0)
            with torch.no_grad():
                out = real_image(net(y_d, physics))
                measured = inserting._measure(out, f0, x_d, d, mask, centres, stamp)
            lost = [not bool(v) for v in measured["recovered"].tolist()]
            for method in state.detectors:
                state.add(method, "insertion", y_d, sample=i, out_new=out, input_change=norms(d) / norms(x),
                          extra={"contrast": float(contrast), "lost": lost})


#: The strategies in the order they run (the order of the random stream).
ORDER: tuple[Experiment, ...] = (AdvDetect(), ArtDetect(), WorstCase(), InsertionLost())
#: Every experiment name a study may list.
EXPERIMENTS: tuple[str, ...] = ("advdetect", "artdetect", "worstcase", "gaussian", "adaptive", "insertion")


def selected(experiments) -> list[Experiment]:
    """The strategies that write any of `experiments` (worstcase writes gaussian and adaptive too)."""
    return [s for s in ORDER if s.names[0] in experiments]


__all__ = ["AdvDetect", "ArtDetect", "EXPERIMENTS", "Experiment", "InsertionLost", "ORDER", "Run", "WorstCase",
           "insert_detail", "selected"]
