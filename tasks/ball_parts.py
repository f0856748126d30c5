"""The Gaussian ball's parts: its row columns, the centre it draws around, the draw directions, and the
recording wrapper through which `survey.tasks.budget.point_gain` also yields the outputs behind PSNR and SSIM."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from survey.tasks.base import LABELS, Column, seed_from_id


def draw_seeds(generator: torch.Generator, draws: int) -> list[int]:
    """One 63-bit seed per draw, derived from one number taken from `generator`."""
    base = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    return [seed_from_id(f"ball:{base}:{d}") for d in range(draws)]


def gaussian_directions(seeds: list[int], like: torch.Tensor, support: torch.Tensor | None = None,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """Standard Gaussian draws shaped (len(seeds), *like.shape), dtype and device of `like`.

    Complex `like` gives complex Gaussian entries (independent real and imaginary parts); entries
    outside `support` are zero. `device`: where the per-draw generators run (default like's device).
    """
    device = torch.device(device) if device is not None else like.device
    draws = []
    for seed in seeds:
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        draws.append(torch.randn(like.shape, generator=gen, dtype=like.dtype, device=device))
    e = torch.stack(draws).to(like.device)
    return e if support is None else e * support.to(like.device)


class Centre(NamedTuple):
    """r: (B, ...) the centre, image- or measurement-shaped; domain: "image" or "measurement";
    info: per image, the columns describing how the centre was found; own: target ("H", "reference") ->
    its own worst case (B, ...) at the same budget (empty when the others are scored on the network's points)."""

    r: torch.Tensor
    domain: str
    info: list[dict[str, Any]]
    own: dict[str, torch.Tensor] = {}


class Recording:
    """Calls `f(y)` as a network `(y, physics) -> image` and keeps every output, so the outputs behind
    `point_gain`'s numbers (PSNR, SSIM, error) need no second pass: `point_gain` calls it on y, on y + A r,
    then on the points in order."""

    def __init__(self, f):
        self.f, self.outputs = f, []

    def __call__(self, y, physics):
        out = self.f(y)
        self.outputs.append(out)
        return out

    def points(self) -> torch.Tensor:
        return torch.cat(self.outputs[2:])


#: Columns of ball rows: one row per (image, radius, draw).
BALL_COLUMNS: dict[str, Column] = {
    **LABELS,
    "center": Column("centre of the ball: 'worst-case' (an attack snapshot) or 'clean' (r = 0)"),
    "centres": Column("'own': network, H and reference each around their own worst case at the budget, same "
                      "draw directions; \"network's\": H and the reference scored on the network's points; "
                      "'clean': every solver around x itself"),
    "center_domain": Column("where the centre lives: 'image' (r) or 'measurement' (e_c)"),
    "level": Column("||r|| / ||x|| of the attack snapshot used as centre; None for a clean centre"),
    "attack": Column("the embedded attack's parameters as sorted JSON; '' for a clean centre"),
    "noise_domain": Column("where the draws live: 'image' (v = A* e) or 'measurement' (e)"),
    "radius_kind": Column("what the radius is relative to: 'relative-r', 'relative-x' or 'absolute'"),
    "draws": Column("draws per (image, radius) in the unit"),
    "bad_threshold": Column("out_change_rel at or above which a draw is bad; None when not set"),
    "image_id": Column("stable id of the ground-truth image"),
    "image_index": Column("index of the image in the unit (first axis of the per_image/ tensors)"),
    "center_reached": Column("whether the attack crossed `level` (else its last iterate is the centre)"),
    "center_iteration": Column("iterate index of the centre in the attack"),
    "center_restart": Column("the attack restart chosen as centre (largest output change)"),
    "attack_iterations_run": Column("updates the embedded attack made"),
    "center_psnr_visibility": Column("PSNR of x + r against x at the centre", "dB"),
    "r_norm": Column("||r|| of the centre (||e_c|| for a measurement centre)", "image units"),
    "r_rel": Column("||r|| / ||x|| (||e_c|| / ||A x|| for a measurement centre)"),
    "center_change_rel": Column("||f(y + s) - f(y)|| / ||f(y)||: the centre's own output change"),
    "psnr_clean": Column("PSNR of f(y) against x", "dB"),
    "psnr_center": Column("PSNR of f(y + s) against x", "dB"),
    "ref_center_change_rel": Column("the reference's ||g(y + s) - g(y)|| / ||g(y)||; None without reference"),
    "ref_psnr_clean": Column("PSNR of the reference's g(y) against x; None without reference", "dB"),
    "center_gain": Column("gain of the centre: (||f(y + s) - f(y)|| / ||f(y)||) / r_rel; None for a clean centre"),
    "h_center_gain": Column("the same gain of H's centre for H (its own worst case with centres = 'own')"),
    "ref_center_gain": Column("the same gain of the reference's centre (its own worst case with centres = 'own'); "
                              "None without reference"),
    "radius": Column("the ball's radius as asked (relative to radius_kind)"),
    "target_norm": Column("the norm t each draw is scaled to", "image or measurement units"),
    "draw": Column("index of the draw (its generator is seeded from the unit's stream and this index)"),
    "noise_norm": Column("||v|| (||e|| for measurement noise) of the draw", "image or measurement units"),
    "noise_rel": Column("||v|| / ||x|| (||e|| / ||A x|| for measurement noise)"),
    "out_change_rel": Column("||f(y') - f(y)|| / ||f(y)|| at the drawn point y'"),
    "err_rel": Column("||f(y') - x|| / ||x||"),
    "psnr": Column("PSNR of f(y') against x", "dB"),
    "ssim": Column("SSIM of f(y') against x; None when with_ssim is off"),
    "persist_rel": Column("||f(y') - f(y + s)|| / ||f(y + s) - f(y)||; None for a clean centre"),
    "artefact_cos": Column("cosine of f(y') - f(y) with the centre's artefact f(y + s) - f(y); None for a "
                           "clean centre"),
    "point_gain": Column("(||f(y') - f(y)|| / ||f(y)||) / (||r + v|| / ||x||): the ball point as a perturbation "
                         "of its own (||s + e|| / ||A x|| in the measurement domain)"),
    "h_point_gain": Column("the same point gain for H (the easy linear reconstruction): around its own centre "
                           "with the same draw direction (centres = 'own'), else on the network's point"),
    "has_reference": Column("whether the reference solver ran on this draw"),
    "ref_out_change_rel": Column("the reference's ||g(y') - g(y)|| / ||g(y)||; None where it did not run"),
    "ref_err_rel": Column("the reference's ||g(y') - x|| / ||x||; None where it did not run"),
    "ref_psnr": Column("PSNR of the reference's g(y') against x; None where it did not run", "dB"),
    "ref_point_gain": Column("the same point gain for the reference (around its own centre with centres = 'own'); "
                             "None where it did not run"),
    "ref_solver_tolerance": Column("the reference solved to this tolerance (the embedded budget search's "
                                   "reference_tolerance, centre and draws alike); None: the unrolled reference"),
    "ref_solver_converged": Column("every reference solve of the unit (centres and draws) reached "
                                   "ref_solver_tolerance within its cap; None without a tolerance"),
    "bad": Column("out_change_rel >= bad_threshold; None when no threshold is set"),
}


__all__ = ["BALL_COLUMNS", "Centre", "Recording", "draw_seeds", "gaussian_directions"]
