"""Severity sweeps over physical perturbation families: how often does each method fail at a physical severity?

How often: for each image and family (survey.perturb: motion, coil, off-resonance, spike,
rings, view-jitter, poisson, gaussian, ...), a sweep over the family's severities (pixels of motion,
relative map error, cycles of off-resonance, % gain error, degrees, photons per bin, sigma) with `draws`
standard Gaussian latents per level. Draw d of an image uses the same latent z at every severity
(common random numbers: the curves differ only in the severity) and the network f, the reference g and
the easy reconstruction H all see the same y' = family(y, z, severity, x). Rows: one per (image, family,
severity, draw) with PSNR / SSIM against x and the relative output change ||o(y') - o(y)|| / ||o(y)|| of
each method, so P(psnr < X) per severity is a count over draws that share an image (report: the
cluster-exact interval of survey.analysis.estimate).

Families not defined for the network's operator (`family.applies_to`, e.g. motion on a CT network) are
skipped, so one task entry can list the families of several modalities; a task whose families all miss
the operator raises. The latents of all draws are taken from `generator` up front (image-major, then
family, then draw), so rows do not depend on `batch`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from survey.metrics import norms, psnr, ssim
from survey.perturb import family_names, make_family
from survey.numerics import real_image
from survey.tasks import validate
from survey.tasks.base import LABELS, Column, Task, TaskContext, TaskResult, register

#: A sweep per family in its own unit (the identity first: the clean baseline of each draw).
DEFAULT_FAMILIES: dict[str, list[float]] = {
    "motion": [0.0, 0.25, 0.5, 1.0, 2.0],            # RMS displacement, pixels
    "coil": [0.0, 0.02, 0.05, 0.1, 0.2],             # relative RMS map error
    "off-resonance": [0.0, 0.25, 0.5, 1.0, 2.0],     # peak off-resonance x readout duration, cycles
    "spike": [0.0, 0.01, 0.03, 0.1, 0.3],            # spike amplitude / k-space centre
    "rings": [0.0, 0.25, 0.5, 1.0, 2.0],             # RMS detector gain error, %
    "view-jitter": [0.0, 0.1, 0.25, 0.5, 1.0],       # RMS view angle error, degrees
    "poisson": [math.inf, 1e5, 3e4, 1e4, 3e3],       # photons per detector bin
}

SEVERITY_COLUMNS: dict[str, Column] = {
    **LABELS,
    "image_id": Column("stable id of the ground-truth image"),
    "image_index": Column("index of the image in the unit"),
    "family": Column("perturbation family (survey.perturb registry name)"),
    "family_params": Column("the family's parameters as sorted JSON"),
    "severity": Column("the family's severity at this level, in severity_unit (inf: no photon noise)"),
    "severity_name": Column("what the severity measures (e.g. 'RMS displacement')"),
    "severity_unit": Column("the severity's unit ('px', 'mm', '%', 'cycles', 'degrees', 'fraction', 'I0', ...)"),
    "identity": Column("whether this level is the family's identity (y' = y)"),
    "draw": Column("index of the latent draw; the same latent at every severity of a family"),
    "draws": Column("latent draws per (image, family, severity) in the unit"),
    "meas_change_rel": Column("||y' - y|| / ||y||: the relative change of the measurements"),
    "psnr": Column("PSNR of the network's f(y') against x", "dB"),
    "ssim": Column("SSIM of f(y') against x; None unless with_ssim"),
    "out_change_rel": Column("||f(y') - f(y)|| / ||f(y)||"),
    "psnr_clean": Column("PSNR of f(y) against x (the unperturbed image)", "dB"),
    "h_psnr": Column("PSNR of the easy reconstruction H(y') against x (real part for complex H, survey.numerics)", "dB"),
    "h_ssim": Column("SSIM of H(y') against x; None unless with_ssim"),
    "h_out_change_rel": Column("||H(y') - H(y)|| / ||H(y)||"),
    "h_psnr_clean": Column("PSNR of H(y) against x", "dB"),
    "has_reference": Column("whether the reference solver ran on this draw"),
    "ref_psnr": Column("PSNR of the reference's g(y') against x; None where it did not run", "dB"),
    "ref_ssim": Column("SSIM of g(y') against x; None where it did not run or without with_ssim"),
    "ref_out_change_rel": Column("||g(y') - g(y)|| / ||g(y)||; None where it did not run"),
    "ref_psnr_clean": Column("PSNR of g(y) against x; None without the reference", "dB"),
}



def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value) and value >= 0


@register("severity")
@dataclass(kw_only=True)
class Severity(Task):
    """Severity sweep over physical perturbation families; network, reference and H on the same draws.

    families: family name -> list of severities (each in the family's unit; see README "Perturbation
    families"); family_params: family name -> its build parameters (e.g. motion: fov_mm, rotation_per_pixel).
    draws: latent draws per (image, family, severity); batch: at most this many perturbed measurements per
    network call. with_reference: also run the reference on the first `reference_draws` draws (None: all) of
    the levels `reference_levels` (indices into each family's severity list, -1 the last; None: every level):
    the CS reference costs seconds per solve on a CPU. with_ssim: SSIM columns (else None).
    """

    families: dict[str, Any] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_FAMILIES.items()})
    family_params: dict[str, Any] = field(default_factory=dict)
    draws: int = 8
    batch: int = 32
    with_reference: bool = True
    reference_draws: int | None = None
    reference_levels: list[int] | None = None
    with_ssim: bool = True

    table = "severity"
    title = "Physical perturbations at physical severities"
    columns = SEVERITY_COLUMNS
    list_params = ("reference_levels",)
    example = dict(families={"motion": [0.0, 1.0], "coil": [0.05], "off-resonance": [0.5], "spike": [0.1],
                             "rings": [0.0, 1.0], "view-jitter": [0.5], "gaussian": [0.0, 0.05]},
                   draws=2, batch=8, reference_draws=1, reference_levels=[0, -1])

    def __post_init__(self):
        name = type(self).__name__
        for key in ("families", "family_params"):
            if not isinstance(getattr(self, key), dict):
                raise ValueError(f"{name}.{key} must be a table (family name -> ...), got {getattr(self, key)!r}")
        if not self.families:
            raise ValueError(f"{name}.families must name at least one family")
        known = family_names()
        for family, levels in list(self.families.items()) + [(k, None) for k in self.family_params]:
            if family not in known:
                raise ValueError(f"{name}.families: unknown perturbation family {family!r}; choose from {known}")
            if levels is None:
                continue
            if isinstance(levels, (str, bytes, dict)) or not isinstance(levels, (list, tuple)) or not levels \
                    or not all(_number(v) for v in levels):
                raise ValueError(f"{name}.families[{family!r}] must be a non-empty list of severities >= 0, "
                                 f"got {levels!r}")
            self.families[family] = [float(v) for v in levels]
        for family, params in self.family_params.items():
            if not isinstance(params, dict):
                raise ValueError(f"{name}.family_params[{family!r}] must be a table of parameters, got {params!r}")
        self.built()   # family parameters are checked now, not inside a worker
        for key, low in (("draws", 1), ("batch", 1)):
            validate.integer(self, key, low=low)
        if self.reference_draws is not None:
            validate.integer(self, "reference_draws", low=0)
        if self.reference_levels is not None:
            validate.sequence(self, "reference_levels", validate.integers_in(), "integers (level indices, -1 the last)",
                              convert=int)
        for key in ("with_reference", "with_ssim"):
            validate.flag(self, key)

    def built(self) -> dict[str, Any]:
        """family name -> the Family object, in the order of `families`."""
        out = {}
        for family in self.families:
            try:
                out[family] = make_family(family, **self.family_params.get(family, {}))
            except (TypeError, ValueError) as err:
                raise ValueError(f"{type(self).__name__}.family_params[{family!r}]: {err}") from None
        return out

    def applies_to(self, physics) -> str | None:
        """At least one of the task's families must apply to the operator (its `kinds`)."""
        if not any(f.applies_to(physics) for f in self.built().values()):
            return (f"none of the families {list(self.families)} applies to the operator kind "
                    f"{getattr(physics, 'kind', '?')!r}")
        return None

    def run(self, ctx: TaskContext, generator: torch.Generator) -> TaskResult:
        physics, x = ctx.physics, ctx.images
        reference = ctx.reference if self.with_reference else None
        if self.with_reference and reference is None:
            raise ValueError(f"{type(self).__name__}: with_reference=True needs a reference solver in the context")
        families = {k: f for k, f in self.built().items() if f.applies_to(physics)}
        if not families:
            raise ValueError(f"{type(self).__name__}: none of the families {list(self.families)} applies to the "
                             f"operator kind {getattr(physics, 'kind', '?')!r}")
        count = x.shape[0]
        # every latent first: image-major, then family, then draw (rows do not depend on `batch`)
        latents = {name: torch.randn((count, self.draws, *f.latent_shape(physics)), generator=generator,
                                     dtype=torch.float64, device=generator.device).to(x.device)
                   for name, f in families.items()}
        with torch.inference_mode():
            return TaskResult(self._rows(ctx, reference, families, latents), {})

    def _rows(self, ctx: TaskContext, reference, families: dict[str, Any],
              latents: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        physics, x = ctx.physics, ctx.images
        y = physics.A(x)
        solvers = {"": lambda u: ctx.net(u, physics), "h_": lambda u: real_image(physics.H(u))}
        if reference is not None:
            solvers["ref_"] = lambda u: real_image(reference(u, physics))
        clean = {key: solve(y) for key, solve in solvers.items()}
        clean_psnr = {key: psnr(out, x).tolist() for key, out in clean.items()}
        ref_draws = self.draws if self.reference_draws is None else self.reference_draws
        rows: list[dict[str, Any]] = []
        for name, family in families.items():
            levels = self.families[name]
            # (image, severity, draw) in row order
            items = [(b, k, d) for b in range(x.shape[0]) for k in range(len(levels)) for d in range(self.draws)]
            ref_levels = (set(range(len(levels))) if self.reference_levels is None
                          else {k % len(levels) for k in self.reference_levels if -len(levels) <= k < len(levels)})

            def with_ref(item: tuple[int, int, int]) -> bool:   # the identity reuses g(y): free for every draw
                return reference is not None and (levels[item[1]] == family.identity_severity
                                                  or (item[2] < ref_draws and item[1] in ref_levels))
            values: dict[str, list] = {}
            for start in range(0, len(items), self.batch):
                part = items[start:start + self.batch]
                b = torch.tensor([i[0] for i in part], device=x.device)
                d = torch.tensor([i[2] for i in part], device=x.device)
                sev = torch.tensor([levels[i[1]] for i in part], dtype=torch.float64, device=x.device)
                z = latents[name][b, d]
                y_part = family.perturb(y[b], z, sev, physics, x=x[b])
                identity = sev == family.identity_severity
                self._score(values, "meas_change_rel", norms(y_part - y[b]) / norms(y[b]))
                use_ref = torch.tensor([with_ref(i) for i in part], dtype=torch.bool, device=x.device)
                for key, solve in solvers.items():
                    run = ~identity & (use_ref if key == "ref_" else torch.ones_like(identity))
                    out = clean[key][b].clone()
                    if bool(run.any()):
                        out[run] = solve(y_part[run]).to(out.dtype)
                    self._score(values, f"{key}psnr", psnr(out, x[b]))
                    self._score(values, f"{key}out_change_rel", norms(out - clean[key][b]) / norms(clean[key][b]))
                    if self.with_ssim:
                        self._score(values, f"{key}ssim", ssim(out, x[b]))
            shared = {"family": name, "family_params": json.dumps(family.params(), sort_keys=True),
                      "severity_name": family.severity_name, "severity_unit": family.severity_unit or "",
                      "draws": self.draws}
            for n, (b, k, d) in enumerate(items):
                has_ref = with_ref((b, k, d))
                row = {"image_id": ctx.image_ids[b], "image_index": b, **shared, "severity": levels[k],
                       "identity": levels[k] == family.identity_severity, "draw": d,
                       "meas_change_rel": values["meas_change_rel"][n]}
                for key in ("", "h_", "ref_"):
                    ran = key != "ref_" or has_ref
                    row[f"{key}psnr"] = values[f"{key}psnr"][n] if ran else None
                    row[f"{key}out_change_rel"] = values[f"{key}out_change_rel"][n] if ran else None
                    row[f"{key}ssim"] = values[f"{key}ssim"][n] if ran and self.with_ssim else None
                    row[f"{key}psnr_clean"] = clean_psnr[key][b] if key in clean_psnr else None
                row["has_reference"] = has_ref
                rows.append(row)
        return rows

    @staticmethod
    def _score(values: dict[str, list], key: str, value: torch.Tensor) -> None:
        values.setdefault(key, []).extend(float(v) for v in value.detach().cpu().tolist())


__all__ = ["DEFAULT_FAMILIES", "SEVERITY_COLUMNS", "Severity"]
