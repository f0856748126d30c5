"""Gaussian-ball checks around a centre: does an artefact survive random noise? (paper Fig. 2).

Antun et al. (arXiv 1902.05300, Fig. 2) draw e complex Gaussian in measurement space, set v = A* e rescaled
to ||v|| = ||r|| / 4 around a worst-case perturbation r, and see the artefact of r again at
x + r + v. Thousands of draws per centre turn that into a probability.

Centre: `center="worst-case"` runs an embedded `Attack` (parameters `attack`, the same generator
stream, so a unit replays alone from its id) and takes the snapshot where ||r|| / ||x|| first
crosses `level` (the last iterate, flagged `center_reached=False`, if it never does); with several
restarts the one with the largest output change is kept. With `attack = {search = "budget", ...}` the
centre is the worst case at the budget `level` instead (best over its starts). `center="clean"` is r = 0.
An attack in the measurement domain gives a measurement-space centre e_c (level = ||e_c|| / ||A x||).

Draws, with s = A r (or e_c) the centre's shift of the measurements y = A x:
  noise_domain="image":       e Gaussian in measurement space (complex for Fourier, real for Radon),
                              v = A* e (real part for real images) rescaled to ||v|| = t,
                              y' = y + s + A v;
  noise_domain="measurement": e rescaled to ||e|| = t, y' = y + s + e.
Measurement noise e lives on the operator's measured entries only (`physics.measured_mask()`: the
sampled k-space of a Fourier mask, the detector bins that see a pixel for Radon). Image noise needs
no mask: A* ignores what is not measured (exactly off a Fourier mask; a Radon bin outside the mask
sees no pixel, or grazes one with a weight below 1e-6). t = radius * ||r|| ("relative-r"; ||s|| for measurement noise),
radius * ||x|| ("relative-x"; ||A x|| for measurement noise), or t = radius ("absolute", a norm).

Matched centres (`centres="own"`, the default wherever it applies: a budget-search centre in the image
domain with image noise): network, H and the reference each get their OWN worst case at the same budget,
found by the same search with the same starts on the same images (the embedded attack with matched
targets), and their balls use the same draw directions, each scaled to its own radius; every point gain
comes from the tested `survey.tasks.budget.point_gain`. The rows then pair network, H and reference per image
and draw (`centres = 'own'`). Elsewhere (the paper's search, measurement-domain centres or noise) H and
the reference are scored on the network's points (`centres = "network's"`, a transferred number: it says
how they respond where the network is weak, not how stable they are).

The bad event: a point of the ball is itself a bad perturbation. Every draw
gets its point gain, with p = r + v the point's perturbation (s + e in the measurement domain):

    point_gain = (||f(y') - f(y)|| / ||f(y)||) / (||p|| / ||x||)      (||p|| / ||A x|| for measurement p),

and the same for H (`h_point_gain`, H = Re physics.H, every draw) and the reference (`ref_point_gain`, the
reference draws), on the same points; P(point_gain >= g) is then compared network vs H vs reference.
The persistence statistics persist_rel and artefact_cos are still recorded but are not evidence: a
cosine >= 0.5 to the artefact and half its size hold for any smooth map, the identity and a Tikhonov
smoother included (tests/test_ball_controls.py).

Draw d uses its own generator seeded from (unit stream, d), so rows do not depend on `batch` and
the first k draws are the same for any `draws >= k`. A list of radii in one unit shares the centre
and the draw directions (common random numbers across radii).

Rows: one per (image, radius, draw), see `Ball.__call__`. Tensors: the centre is one per image,
not per draw, so they are returned under keys starting with `PER_IMAGE` ("per_image/r", ...), whose
first axis is the image index in the context, recorded in each row as `image_index` (not the row
index that `TaskResult.tensors` otherwise uses).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from survey.metrics import norms, psnr, ssim
from survey.solvers.converged import ConvergedSolver
from survey.tasks import validate
from survey.tasks.attack import Attack
from survey.tasks.ball_parts import BALL_COLUMNS, Centre, Recording, draw_seeds, gaussian_directions
from survey.tasks.base import PER_IMAGE, Task, TaskContext, TaskResult, make_task, register
from survey.tasks.budget import point_gain

CENTERS = ("worst-case", "clean")
NOISE_DOMAINS = ("image", "measurement")
CENTRE_MODES = ("auto", "own", "network")
RADIUS_KINDS = ("relative-r", "relative-x", "absolute")
#: Attack parameters the ball sets itself.
RESERVED_ATTACK_KEYS = ("snapshot_levels", "snapshot_iterations", "keep_tensors", "target", "budgets", "matched")


@register("ball")
@dataclass(kw_only=True)
class Ball(Task):
    """Gaussian-ball test around a worst-case perturbation (or the clean image).

    center: "worst-case" or "clean"; level: ||r|| / ||x|| of the attack snapshot used as centre.
    attack: keyword parameters of the embedded `Attack` (a "preset" key picks a Table 1 set);
    snapshots, target and tensor keeping are set by the ball.
    noise_domain: "image" (v = A* e) or "measurement" (e); radius: one value or a list of values
    (one unit, shared centre and directions); radius_kind: "relative-r", "relative-x", "absolute".
    draws: draws per (image, radius); batch: at most this many samples per network call (but at
    least one draw of every image and radius). with_reference: also run the reference solver on the
    first `reference_draws` draws (solved to the embedded budget search's `reference_tolerance` when it
    sets one, as its centre was: `ref_solver_tolerance`, `ref_solver_converged`). bad_threshold:
    optional, rows get bad = out_change_rel >= it.
    with_ssim: also SSIM per draw (on by default: `survey.metrics.ssim` costs 2-3% of a small U-Net's
    forward pass, benchmarks/ssim_speed.py; off, rows hold None).
    keep_tensors: return the per-image centre, clean and centre outputs and the first draw's output.
    centres: "own" (H and the reference around their own worst cases, see the module docstring), "network"
    (scored on the network's points), or "auto" (own wherever it applies).
    """

    center: str = "worst-case"
    level: float = 0.02
    attack: dict[str, Any] = field(default_factory=dict)
    noise_domain: str = "image"
    radius: float | tuple[float, ...] = 0.25
    radius_kind: str = "relative-r"
    draws: int = 1000
    batch: int = 128
    with_reference: bool = False
    reference_draws: int = 64
    bad_threshold: float | None = None
    with_ssim: bool = True
    keep_tensors: bool = True
    centres: str = "auto"

    table = "ball"
    title = "Gaussian ball around a worst case"
    columns = BALL_COLUMNS
    example = dict(radius=[0.1, 0.5], draws=3, batch=8, reference_draws=2, with_reference=True, bad_threshold=0.01,
                   attack=dict(iterations=3, eta=0.01))
    #: Takes a flat list as one value (several radii in one unit); a list of lists is a grid.
    list_params = ("radius",)

    def __post_init__(self):
        name = type(self).__name__
        for key, choices in (("center", CENTERS), ("noise_domain", NOISE_DOMAINS), ("radius_kind", RADIUS_KINDS),
                             ("centres", CENTRE_MODES)):
            validate.choice(self, key, choices)
        if isinstance(self.radius, (list, tuple)):
            validate.sequence(self, "radius", validate.numbers_in(0.0), "numbers >= 0", nonempty=True)
        else:
            self.radius = validate.number(self, "radius", low=0.0)
        validate.positive(self, "level")
        for key, low in (("draws", 1), ("batch", 1), ("reference_draws", 0)):
            validate.integer(self, key, low=low)
        validate.number(self, "bad_threshold", low=0.0, optional=True)
        for key in ("with_reference", "with_ssim", "keep_tensors"):
            validate.flag(self, key)
        if self.center == "clean" and self.radius_kind == "relative-r":
            raise ValueError(f"{name}: center='clean' has r = 0, so radius_kind='relative-r' is meaningless; "
                             "use 'relative-x' or 'absolute'")
        if not isinstance(self.attack, dict):
            raise ValueError(f"{name}.attack must be a table of Attack parameters, got {self.attack!r}")
        reserved = sorted(set(self.attack) & set(RESERVED_ATTACK_KEYS))
        if reserved:
            raise ValueError(f"{name}.attack: {reserved} are set by the ball (use Ball.level for the snapshot)")
        attack = self.attack_task()  # validates the attack parameters now, not inside a worker
        if (self.center == "worst-case" and attack.domain == "measurement" and self.noise_domain == "image"
                and self.radius_kind == "relative-r"):
            raise ValueError(f"{name}: a measurement-domain centre has no image norm ||r||; with "
                             "radius_kind='relative-r' use noise_domain='measurement'")
        if self.centres == "own" and not self.own_centres:
            raise ValueError(f"{name}: centres='own' needs center='worst-case' with attack search='budget' in the "
                             "image domain and noise_domain='image'")

    @property
    def own_centres(self) -> bool:
        """Whether H and the reference get their own worst cases (see `centres`)."""
        if self.centres == "network" or self.center != "worst-case":
            return False
        attack = self.attack_task()
        return attack.search == "budget" and attack.domain == "image" and self.noise_domain == "image"

    @property
    def centre_targets(self) -> tuple[str, ...]:
        """The targets searched beside the network for their own centres (see `centres`)."""
        if not self.own_centres:
            return ()
        return ("H", "reference") if self.with_reference else ("H",)

    @property
    def backprops_reference(self) -> bool:
        """Whether the centre's search backpropagates through the unrolled reference (survey.engine.cost)."""
        return self.center != "clean" and self.attack_task(self.centre_targets).backprops_reference

    @property
    def radii(self) -> tuple[float, ...]:
        return self.radius if isinstance(self.radius, tuple) else (self.radius,)

    def attack_task(self, matched: tuple[str, ...] = ()) -> Attack:
        """The embedded attack: `attack` parameters with one level snapshot at `level` (the paper's search)
        or the one budget `level` (search = "budget"), with `matched` targets attacked alike."""
        if self.attack.get("search") == "budget":
            params = {**self.attack, "budgets": [self.level], "keep_tensors": True, "matched": list(matched)}
        else:
            params = {**self.attack, "snapshot_levels": [self.level], "snapshot_iterations": [], "keep_tensors": True}
        try:
            return make_task("attack", **params)
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}.attack: {err}") from None

    # -- the centre ---------------------------------------------------------------------------
    def _centre(self, ctx: TaskContext, generator: torch.Generator) -> Centre:
        x = ctx.images
        if self.center == "clean":
            info = {"center_reached": None, "center_iteration": None, "center_restart": None,
                    "attack_iterations_run": None, "center_psnr_visibility": None}
            return Centre(torch.zeros_like(x), "image", [dict(info) for _ in range(x.shape[0])])
        own = self.own_centres
        matched = self.centre_targets
        attack = self.attack_task(matched)
        # The reference's numbers at the network's snapshot are not needed: the ball computes its own.
        if own:
            attack = dataclasses.replace(attack, with_reference=False)
        rows, tensors = attack(ctx if "reference" in matched else dataclasses.replace(ctx, reference=None), generator)
        if own:   # rows and tensors: target-major (network, H, reference), one per image at the one budget
            count = x.shape[0]
            r_all = tensors["r"].to(x.device)
            own_r = {name: r_all[(i + 1) * count:(i + 2) * count] for i, name in enumerate(matched)}
            rows, tensors = rows[:count], {"r": r_all[:count]}
        else:
            own_r = {}
        restarts = attack.restarts
        picked, info = [], []
        budget = attack.search == "budget"  # one row per image, the best over starts
        for b in range(x.shape[0]):
            candidates = [b] if budget else [
                n for n in range(b * restarts, (b + 1) * restarts)
                if rows[n]["snapshot"] == "level" and rows[n]["snapshot_target"] == float(self.level)]
            best = max(candidates, key=lambda n: rows[n]["out_change_rel"])
            row = rows[best]
            picked.append(best)
            info.append({"center_reached": bool(row["reached"]), "center_iteration": int(row["iteration"]),
                         "center_restart": int(row["restart"]),
                         "attack_iterations_run": int(row["iterations_run"]),
                         "center_psnr_visibility": float(row["psnr_visibility"])})
        r = tensors["r"][picked].to(x.device)
        return Centre(r, attack.domain, info, own_r)

    # -- the test -----------------------------------------------------------------------------
    def run(self, ctx: TaskContext, generator: torch.Generator) -> TaskResult:
        """Rows, one per (image, radius, draw), image-major then radius then draw, with columns:

        image_id, image_index, center, center_domain, level, radius_kind, radius, target_norm, draw,
        noise_norm (||v|| or ||e||), noise_rel (over ||x|| or ||A x||), r_norm, r_rel (||r||/||x||,
        ||e_c||/||A x|| for a measurement centre), center_change_rel = ||f(y+s) - f(y)|| / ||f(y)||,
        out_change_rel = ||f(y') - f(y)|| / ||f(y)||, persist_rel = ||f(y') - f(y+s)|| /
        ||f(y+s) - f(y)||, artefact_cos (cosine of f(y') - f(y) with f(y+s) - f(y)), err_rel =
        ||f(y') - x|| / ||x||, psnr, ssim, psnr_clean, psnr_center, bad; has_reference with
        ref_out_change_rel, ref_err_rel, ref_psnr (None where the reference was not run), and
        ref_center_change_rel, ref_psnr_clean; centre facts center_reached, center_iteration,
        center_restart, attack_iterations_run, center_psnr_visibility. persist_rel and artefact_cos
        are None for a clean centre.
        """
        if self.with_reference and ctx.reference is None:
            raise ValueError(f"{type(self).__name__}: with_reference=True needs a reference solver in the context")
        reference = self.reference_solver(ctx) if self.with_reference else None
        centre = self._centre(ctx, generator)
        seeds = draw_seeds(generator, self.draws)
        with torch.inference_mode():
            result = self._run(ctx, reference, centre, seeds, generator.device)
        solved = isinstance(reference, ConvergedSolver)
        tolerance = reference.tolerance if solved else None
        # every solve the ball made (clean, centres and draws) reached the tolerance within its cap
        converged = reference.stats["not_converged"] == 0 if solved else None
        for row in result.rows:
            row["ref_solver_tolerance"], row["ref_solver_converged"] = tolerance, converged
        return result

    def reference_solver(self, ctx: TaskContext):
        """The reference the draws are scored on: the one the centre's search attacked, i.e. solved to the
        embedded budget search's `reference_tolerance` when it has one (one solution map for centre and
        draws), else the context's (unrolled) reference."""
        attack = self.attack_task() if self.center != "clean" else None
        if attack is not None and getattr(attack, "reference_tolerance", 0.0):
            solver = attack.attacked(ctx, "reference")
            if isinstance(solver, ConvergedSolver):
                return solver
        return ctx.reference

    def _run(self, ctx: TaskContext, reference, centre: Centre, seeds: list[int],
             draw_device: torch.device) -> TaskResult:
        physics, x = ctx.physics, ctx.images
        real_images = not torch.is_complex(x)

        def f(u: torch.Tensor) -> torch.Tensor:
            return ctx.net(u, physics)

        def h(u: torch.Tensor) -> torch.Tensor:
            out = physics.H(u)
            return out.real if real_images and torch.is_complex(out) else out

        def ref(u: torch.Tensor) -> torch.Tensor:
            return torch.cat([reference(part, physics) for part in u.split(self.batch)])

        count = x.shape[0]
        y = physics.A(x)
        shift = physics.A(centre.r) if centre.domain == "image" else centre.r
        y_centre = y + shift
        clean, at_centre = f(y), f(y_centre)
        artefact = at_centre - clean
        own = dict(centre.own)   # H / reference -> its own worst case (image domain)
        h_clean = h(y)
        h_centre = h(y + physics.A(own["H"])) if "H" in own else h(y_centre)
        x_norm, y_norm, clean_norm = norms(x), norms(y), norms(clean)
        artefact_norm = norms(artefact)
        image_noise = self.noise_domain == "image"

        if self.radius_kind == "relative-r":
            scale = norms(centre.r) if image_noise else norms(shift)
        elif self.radius_kind == "relative-x":
            scale = x_norm if image_noise else y_norm
        else:
            scale = torch.ones_like(x_norm)
        radii = torch.tensor(self.radii, dtype=x_norm.dtype, device=x.device)
        targets = scale[:, None] * radii[None, :]  # (B, R)
        n_radii = len(self.radii)
        m_shape, i_shape = tuple(y.shape[1:]), tuple(x.shape[1:])
        m_ones, i_ones = (1,) * len(m_shape), (1,) * len(i_shape)
        support = None if image_noise else physics.measured_mask()
        chunk = max(1, self.batch // (count * n_radii))
        point_image = centre.domain == "image" and image_noise
        with_ref = reference is not None and self.reference_draws > 0
        ref_clean = ref(y) if reference is not None else None
        ref_centre = None
        if reference is not None:
            ref_centre = ref(y + physics.A(own["reference"])) if "reference" in own else ref(y_centre)

        def own_targets(r_own: torch.Tensor) -> torch.Tensor:   # (B, R) radii of a ball around r_own
            own_scale = norms(r_own) if self.radius_kind == "relative-r" else scale
            return own_scale[:, None] * radii[None, :]

        def own_balls(g, r_own: torch.Tensor, unit_dm: torch.Tensor, t_own: torch.Tensor):
            """Per radius, `point_gain` of g around r_own on draws unit_dm (D, B, ...) scaled to t_own (B, R):
            (gains, out_change_rel, artefact_cos) each (B, R, D), outputs (B * R * D, ...) in row order."""
            found, outputs = [], []
            for k in range(n_radii):
                recorder = Recording(g)
                found.append(point_gain(recorder, physics, x, r_own, t_own[:, k].view(1, count, *i_ones) * unit_dm,
                                        batch=self.batch))
                outputs.append(recorder.points().view(unit_dm.shape[0], count, *i_shape).transpose(0, 1))
            stacked = [torch.stack([getattr(pg, name).T for pg in found], dim=1)
                       for name in ("gain", "out_change_rel", "artefact_cos")]
            return (*stacked, torch.stack(outputs, dim=1).reshape(-1, *i_shape))

        cols: dict[str, list[torch.Tensor]] = {}
        first_out = None

        def add(name: str, value: torch.Tensor, drawn: int) -> None:
            cols.setdefault(name, []).append(value.reshape(count, n_radii, drawn))

        for start in range(0, self.draws, chunk):
            stop = min(self.draws, start + chunk)
            drawn = stop - start
            e = gaussian_directions(seeds[start:stop], y, support, draw_device)  # (c, B, *m)
            e = e.transpose(0, 1).reshape(count * drawn, *m_shape)
            if image_noise:
                v = physics.A_adjoint(e)
                v = v.real if real_images and torch.is_complex(v) else v
                unit = v / norms(v).view(-1, *i_ones)
                unit_shift = physics.A(unit)
            else:
                unit = e / norms(e).view(-1, *m_ones)
                unit_shift = unit
            t = targets.view(count, n_radii, 1, *m_ones)
            u = y_centre.view(count, 1, 1, *m_shape) + t * unit_shift.view(count, 1, drawn, *m_shape)
            u = u.reshape(-1, *m_shape)
            if own:   # every target's ball through the tested point_gain, one direction per draw for all
                unit_dm = unit.view(count, drawn, *i_shape).transpose(0, 1)
                net_gain, net_change, net_cos, out = own_balls(f, centre.r, unit_dm, targets)
            else:
                out = f(u)
            if first_out is None:
                first_out = out.view(count, n_radii, drawn, *i_shape)[:, :, 0]
            n = out.shape[0]

            def per_sample(z: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (B * R * c, ...)
                return z.view(count, 1, 1, *z.shape[1:]).expand(count, n_radii, drawn, *z.shape[1:]).reshape(
                    n, *z.shape[1:])

            noise_norm = targets[:, :, None] * norms(unit).view(count, 1, drawn)
            # The point's own perturbation: r + v (image centre, image noise), else s + A v or s + e.
            if point_image:
                point = (centre.r.view(count, 1, 1, *i_shape)
                         + t.view(count, n_radii, 1, *i_ones) * unit.view(count, 1, drawn, *i_shape))
                point_rel = norms(point.reshape(n, *i_shape)) / per_sample(x_norm)
            else:
                point_rel = norms(u - per_sample(y)) / per_sample(y_norm)
            point_rel = point_rel.clamp_min(torch.finfo(point_rel.dtype).tiny)
            x_s = per_sample(x)
            moved = out - per_sample(clean)
            moved_norm = norms(moved)
            add("noise_norm", noise_norm, drawn)
            add("noise_rel", noise_norm / (x_norm if image_noise else y_norm).view(count, 1, 1), drawn)
            if own:
                add("out_change_rel", net_change, drawn)
                add("point_gain", net_gain, drawn)
                add("h_point_gain", own_balls(h, own["H"], unit_dm, own_targets(own["H"]))[0], drawn)
                add("artefact_cos", net_cos, drawn)
            else:
                add("out_change_rel", moved_norm / per_sample(clean_norm), drawn)
                add("point_gain", moved_norm / per_sample(clean_norm) / point_rel, drawn)
                h_change = norms(h(u) - per_sample(h_clean)) / per_sample(norms(h_clean))
                add("h_point_gain", h_change / point_rel, drawn)
                inner = (moved.conj() * per_sample(artefact)).real.reshape(n, -1).sum(dim=1)
                add("artefact_cos", inner / (moved_norm * per_sample(artefact_norm)), drawn)
            add("persist_rel", norms(out - per_sample(at_centre)) / per_sample(artefact_norm), drawn)
            add("err_rel", norms(out - x_s) / per_sample(x_norm), drawn)
            add("psnr", psnr(out, x_s), drawn)
            if self.with_ssim:
                add("ssim", ssim(out, x_s), drawn)
            if with_ref and start < self.reference_draws:
                kept = min(stop, self.reference_draws) - start
                if own:
                    ref_gain, ref_change, _, ref_out = own_balls(ref, own["reference"], unit_dm[:kept],
                                                                 own_targets(own["reference"]))
                else:
                    u_ref = u.view(count, n_radii, drawn, *m_shape)[:, :, :kept].reshape(-1, *m_shape)
                    ref_out = ref(u_ref)
                k = ref_out.shape[0]
                x_r = x.view(count, 1, 1, *i_shape).expand(count, n_radii, kept, *i_shape).reshape(k, *i_shape)
                ref_c = ref_clean.view(count, 1, 1, *i_shape).expand(count, n_radii, kept, *i_shape).reshape(
                    k, *i_shape)
                if not own:
                    kept_rel = point_rel.view(count, n_radii, drawn)[:, :, :kept].reshape(-1)
                    ref_change = norms(ref_out - ref_c) / norms(ref_c)
                    ref_gain = ref_change / kept_rel
                for name, value in (("ref_out_change_rel", ref_change), ("ref_point_gain", ref_gain),
                                    ("ref_err_rel", norms(ref_out - x_r) / norms(x_r)),
                                    ("ref_psnr", psnr(ref_out, x_r))):
                    cols.setdefault(name, []).append(value.reshape(count, n_radii, kept))

        columns = {k: torch.cat(v, dim=2).cpu().tolist() for k, v in cols.items()}
        r_rel = norms(centre.r) / (x_norm if centre.domain == "image" else y_norm)
        r_rel_safe = r_rel.clamp_min(torch.finfo(r_rel.dtype).tiny)
        tiny = torch.finfo(r_rel.dtype).tiny

        def own_rel(name: str) -> torch.Tensor:   # ||r_own|| / ||x||: each target's centre at its own size
            return (norms(own[name]) / x_norm).clamp_min(tiny) if name in own else r_rel_safe

        per_image = {
            "r_norm": norms(centre.r), "r_rel": r_rel,
            "center_change_rel": artefact_norm / clean_norm, "psnr_clean": psnr(clean, x),
            "psnr_center": psnr(at_centre, x), "center_gain": artefact_norm / clean_norm / r_rel_safe,
            "h_center_gain": norms(h_centre - h_clean) / norms(h_clean) / own_rel("H")}
        if reference is not None:
            per_image["ref_center_change_rel"] = norms(ref_centre - ref_clean) / norms(ref_clean)
            per_image["ref_psnr_clean"] = psnr(ref_clean, x)
            per_image["ref_center_gain"] = per_image["ref_center_change_rel"] / own_rel("reference")
        image_values = {k: v.cpu().tolist() for k, v in per_image.items()}
        target_values = targets.cpu().tolist()
        rows = self._rows(ctx, centre, columns, image_values, target_values)
        tensors: dict[str, torch.Tensor] = {}
        if self.keep_tensors:
            tensors = {f"{PER_IMAGE}r": centre.r, f"{PER_IMAGE}clean_out": clean,
                       f"{PER_IMAGE}center_out": at_centre, f"{PER_IMAGE}first_draw_out": first_out}
            tensors = {k: v.detach().cpu().clone() for k, v in tensors.items()}
        return TaskResult(rows, tensors)

    def _rows(self, ctx: TaskContext, centre: Centre, columns: dict[str, list], image_values: dict[str, list],
              target_values: list[list[float]]) -> list[dict[str, Any]]:
        clean_centre = self.center == "clean"
        attack_params = "" if clean_centre else json.dumps(
            self.attack_task(tuple(centre.own)).params(), sort_keys=True)
        shared = {"center": self.center,
                  "centres": "own" if centre.own else "clean" if clean_centre else "network's",
                  "center_domain": centre.domain,
                  "level": None if clean_centre else float(self.level), "attack": attack_params,
                  "noise_domain": self.noise_domain, "radius_kind": self.radius_kind, "draws": self.draws,
                  "bad_threshold": None if self.bad_threshold is None else float(self.bad_threshold)}
        ref_names = ("ref_out_change_rel", "ref_err_rel", "ref_psnr", "ref_point_gain")
        draw_names = ("noise_norm", "noise_rel", "out_change_rel", "err_rel", "psnr", "point_gain", "h_point_gain")
        rows: list[dict[str, Any]] = []
        for b, image_id in enumerate(ctx.image_ids):
            image = {**shared, "image_id": image_id, "image_index": b, **centre.info[b],
                     **{k: float(v[b]) for k, v in image_values.items()}}
            image.setdefault("ref_center_change_rel", None)
            image.setdefault("ref_psnr_clean", None)
            image.setdefault("ref_center_gain", None)
            if clean_centre:
                image.update(center_gain=None, h_center_gain=None, ref_center_gain=None)
            for k, radius in enumerate(self.radii):
                for d in range(self.draws):
                    row = {**image, "radius": radius, "target_norm": float(target_values[b][k]), "draw": d}
                    row.update({name: float(columns[name][b][k][d]) for name in draw_names})
                    row["ssim"] = float(columns["ssim"][b][k][d]) if self.with_ssim else None
                    for name in ("persist_rel", "artefact_cos"):
                        row[name] = None if clean_centre else float(columns[name][b][k][d])
                    has_ref = "ref_psnr" in columns and d < self.reference_draws
                    row["has_reference"] = has_ref
                    for name in ref_names:
                        row[name] = float(columns[name][b][k][d]) if has_ref else None
                    row["bad"] = (None if self.bad_threshold is None
                                  else bool(row["out_change_rel"] >= self.bad_threshold))
                    rows.append(row)
        return rows


__all__ = ["BALL_COLUMNS", "Ball", "CENTERS", "CENTRE_MODES", "Centre", "NOISE_DOMAINS", "PER_IMAGE", "RADIUS_KINDS",
           "draw_seeds", "gaussian_directions"]
