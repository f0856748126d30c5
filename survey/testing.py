"""The contract and property checks the project runs on its own registries, for plugin and network authors.

    from survey.testing import check_task, check_family, check_physics, check_network
    check_physics("my-operator", size=16)      # adjointness, shapes, batching, dtypes, gradients, norm, mask
    check_family("my-family", physics)         # identity, determinism, batching, the measured entries
    check_task("my-check")                     # the task contract on every operator the task applies to
    check_network(net, physics)                # callable as net(y, physics), any batch, right shape, finite

Each raises `CheckFailed` (an AssertionError) with one message naming the part, the check and the numbers,
and returns a short report of what was checked (and, for tasks, which operators were skipped and why:
a task states the operators it applies to with `Task.applies_to`, a family with `kinds`). Sizes are tiny
(16 px) so a check costs seconds. The project's own tests (tests/test_physics.py, tests/test_perturb.py,
tests/test_task_contract.py) call these same functions over every registered entry.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Any, Callable

import torch
from torch import nn

SIZE = 16
#: Small parameters for the built-in operators (others: `make_physics(kind, size=SIZE)`).
SMALL_PHYSICS: dict[str, dict[str, Any]] = {
    "mri": dict(ratio=0.4, mask="gaussian-lines", seed=0),
    "pmri": dict(ratio=0.4, coils=3, seed=0),
    "radon": dict(views=6),
    "denoise": dict(sigma=0.1),
}


class CheckFailed(AssertionError):
    """A registered part breaks a property every part of its kind must have."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise CheckFailed(message)


def small_physics(kind: str, size: int = SIZE, **params):
    """A tiny operator of a registered kind (the built-ins with small parameters)."""
    from survey.physics import make_physics

    return make_physics(kind, size=size, **{**SMALL_PHYSICS.get(kind, {}), **params})


def _inner(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.is_complex() or b.is_complex():
        return float(torch.real(torch.sum(torch.conj(a) * b)))
    return float(torch.sum(a * b))


# -- operators ----------------------------------------------------------------------------------------------


def check_physics(physics, **params) -> dict[str, Any]:
    """Properties of a forward operator (a LinearPhysics, or a registered kind built with `params`):
    <A x, y> = <x, A* y>, shapes and batching, dtype following the input, d/dx 1/2||Ax||^2 = Re A* A x,
    ||A x|| <= norm() ||x||, measured_mask shape, H's shape."""
    if isinstance(physics, str):
        kind = physics
        physics = small_physics(kind, **params)
    else:
        kind = getattr(physics, "kind", type(physics).__name__)
    physics = physics.to(torch.float64)
    g = torch.Generator().manual_seed(0)
    shape, mshape = tuple(physics.image_shape), tuple(physics.measurement_shape)
    x = torch.randn((3, *shape), generator=g, dtype=torch.float64)
    y = physics.A(x)
    _require(tuple(y.shape) == (3, *mshape), f"physics {kind!r}: A(x) has shape {tuple(y.shape)}, expected "
             f"(3, *measurement_shape) = {(3, *mshape)}")
    complex_y = bool(getattr(physics, "complex_measurements", False))
    _require(torch.is_complex(y) == complex_y, f"physics {kind!r}: complex_measurements={complex_y} but A(x) has "
             f"dtype {y.dtype}")
    e = torch.randn((3, *mshape), generator=g, dtype=torch.complex128 if complex_y else torch.float64)
    back = physics.A_adjoint(e)
    _require(tuple(back.shape) == (3, *shape), f"physics {kind!r}: A_adjoint(y) has shape {tuple(back.shape)}")
    gap = abs(_inner(y, e) - _inner(x, back))
    _require(gap <= 1e-6 * float(y.norm()) * float(e.norm()),
             f"physics {kind!r}: not adjoint, |<Ax, y> - <x, A* y>| = {gap:.3g}")
    one = torch.cat([physics.A(x[i:i + 1]) for i in range(3)])
    _require(torch.allclose(y, one, atol=1e-10), f"physics {kind!r}: A of a batch differs from A one sample at a time")
    _require(tuple(physics.H(y).shape) == (3, *shape), f"physics {kind!r}: H(y) has shape {tuple(physics.H(y).shape)}")
    single = physics.A(x.float())
    _require(single.dtype in (torch.float32, torch.complex64),
             f"physics {kind!r}: A of a float32 image returned {single.dtype} (the dtype must follow the input)")
    xr = x.clone().requires_grad_(True)
    (0.5 * physics.A(xr).abs().square().sum()).backward()
    expected = physics.A_adjoint(physics.A(x))
    expected = expected.real if expected.is_complex() else expected
    _require(torch.allclose(xr.grad, expected, atol=1e-8),
             f"physics {kind!r}: the gradient of 1/2 ||A x||^2 is not Re A* A x (autograd and A_adjoint disagree)")
    norm = float(physics.norm(generator=torch.Generator().manual_seed(0)))
    gains = y.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    _require(math.isfinite(norm) and norm > 0 and float(gains.max()) <= norm * (1 + 1e-4),
             f"physics {kind!r}: norm() = {norm:.4g} is below a measured gain {float(gains.max()):.4g}")
    mask = physics.measured_mask()
    _require(mask.dtype == torch.bool and tuple(mask.shape) == (1, *mshape),
             f"physics {kind!r}: measured_mask() must be bool (1, *measurement_shape), got {mask.dtype} "
             f"{tuple(mask.shape)}")
    return {"physics": kind, "adjointness_gap": gap, "norm": norm}


# -- perturbation families ----------------------------------------------------------------------------------


def check_family(family, physics=None, severity: float | None = None) -> dict[str, Any]:
    """Properties of a perturbation family (a Family, or a registered name) on an operator it applies to:
    its identity severity gives y exactly; deterministic; shape and dtype kept; it changes y at its example
    severity (`Family.example_severity`, or `severity`); a batch equals one draw at a time; one y against
    a batch of latents; per-draw severities; a family for any operator (`kinds` None) moves nothing off the
    measured entries."""
    from survey.perturb import make_family

    family = make_family(family) if isinstance(family, str) else family
    name = getattr(family, "name", type(family).__name__)
    if physics is None:
        kinds = family.kinds or ("mri",)
        physics = small_physics(kinds[0])
    kind = getattr(physics, "kind", "")
    _require(family.applies_to(physics), f"family {name!r}: does not apply to physics {kind!r} (kinds={family.kinds})")
    severity = getattr(family, "example_severity", None) if severity is None else severity
    _require(severity is not None, f"family {name!r}: declare `example_severity` (a severity with a visible "
             "effect) on the Family class, or pass severity=")
    physics = physics.to(torch.float64)
    g = torch.Generator().manual_seed(1)
    x = nn.functional.avg_pool2d(torch.rand((3, *physics.image_shape), generator=g, dtype=torch.float64), 3, 1, 1)
    y = physics.A(x)
    z = torch.randn((3, *family.latent_shape(physics)), generator=g, dtype=torch.float64)
    same = family.perturb(y, z, family.identity_severity, physics, x=x)
    _require(torch.equal(same, y), f"family {name!r}: the identity severity {family.identity_severity} changes y")
    first = family.perturb(y, z, severity, physics, x=x)
    _require(first.shape == y.shape and first.dtype == y.dtype,
             f"family {name!r}: y' has shape {tuple(first.shape)} {first.dtype}, y {tuple(y.shape)} {y.dtype}")
    _require(torch.equal(first, family.perturb(y.clone(), z.clone(), severity, physics, x=x)),
             f"family {name!r}: not deterministic in (y, z, severity)")
    _require(not torch.equal(first, y), f"family {name!r}: severity {severity} leaves y unchanged")
    single = torch.cat([family.perturb(y[i:i + 1], z[i:i + 1], severity, physics, x=x[i:i + 1]) for i in range(3)])
    _require(torch.allclose(first, single, rtol=0, atol=1e-10),
             f"family {name!r}: a batch differs from one draw at a time")
    per = torch.full((3,), float(severity), dtype=torch.float64)
    _require(torch.allclose(family.perturb(y, z, per, physics, x=x), first, rtol=0, atol=1e-12),
             f"family {name!r}: per-draw severities differ from one shared severity")
    if family.kinds is None:  # a generic family may not invent measurements; a detector fault may hit any bin
        off = ~physics.measured_mask().expand_as(y)
        moved = (first - y).abs()
        leak = float(moved[off].amax()) if bool(off.any()) else 0.0
        _require(leak <= 1e-5 * max(float(moved.max()), 1e-300),
                 f"family {name!r}: y' moves entries that are not measured (by {leak:.3g})")
    return {"family": name, "physics": kind, "severity": float(severity)}


# -- tasks ---------------------------------------------------------------------------------------------------


class _TinyNet(nn.Module):
    """f(y) = Re H(y) + tanh(conv(Re H(y))) with dropout, which eval mode must switch off."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(1, 1, 3, padding=1).double()
        with torch.no_grad():
            self.conv.weight.copy_(0.3 * torch.randn(self.conv.weight.shape, generator=gen, dtype=torch.float64))
            self.conv.bias.fill_(0.05)
        self.drop = nn.Dropout(0.5)
        self.train()

    def forward(self, y, physics):
        x0 = physics.H(y)
        x0 = x0.real if torch.is_complex(x0) else x0
        return x0 + torch.tanh(self.drop(self.conv(x0)))


def task_context(physics, unit_id: str = "check-unit", reference: bool = True, net: Callable | None = None):
    """A two-image context on `physics` with a tiny network (dropout on) and a 5-iteration reference."""
    from survey.solvers import make_reference
    from survey.tasks import TaskContext

    g = torch.Generator().manual_seed(3)
    images = nn.functional.avg_pool2d(torch.rand(2, 1, physics.size, physics.size, generator=g,
                                                 dtype=torch.float64), 3, 1, 1)
    solver = make_reference(physics, iterations=5) if reference else None
    return TaskContext(net=net or _TinyNet(), physics=physics, images=images, image_ids=["img-a", "img-b"],
                       reference=solver, network="tiny", dataset="noise", unit_id=unit_id)


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def run_example(cls, physics, unit_id: str = "check-unit", reference: bool = True):
    """Run a task class's `example` on a tiny context; (rows, tensors, printed text)."""
    from survey.tasks import generator_for, make_task

    ctx = task_context(physics, unit_id, reference)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        task = make_task(cls.task_name, **cls.example)
        _require(type(task) is cls, f"task {cls.task_name!r}: its example builds {type(task).__name__}, not "
                 f"{cls.__name__}")
        result = task(ctx, generator_for(ctx.unit_id))
    _require(ctx.net.training, f"task {cls.task_name!r}: left the network in eval mode")
    return result.rows, result.tensors, printed.getvalue()


def _check_rows(cls, kind: str, rows, tensors, printed: str) -> set[str]:
    from survey.tasks import LABELS, PER_IMAGE

    name = cls.task_name
    _require(bool(rows), f"task {name!r} on {kind!r}: its example returned no rows")
    _require(printed == "", f"task {name!r} on {kind!r}: printed {printed[:80]!r} (tasks never print)")
    declared = set(cls.columns)
    for row in rows:
        for key, value in row.items():
            _require(value is None or type(value) in (int, float, str, bool),
                     f"task {name!r} on {kind!r}: column {key!r} holds a {type(value).__name__}, not a plain scalar")
        _require(row["task"] == name and set(LABELS) <= set(row), f"task {name!r} on {kind!r}: label columns missing")
        _require(set(row) <= declared, f"task {name!r} on {kind!r}: undeclared columns {sorted(set(row) - declared)}")
        _require(row.keys() == rows[0].keys(), f"task {name!r} on {kind!r}: rows differ in their columns")
    for key, value in tensors.items():
        expected = 2 if key.startswith(PER_IMAGE) else len(rows)
        _require(value.shape[0] == expected, f"task {name!r} on {kind!r}: tensor {key!r} is not aligned")
    return set(rows[0])


def check_task(task, kinds: list[str] | None = None, *, replay: bool = True) -> dict[str, Any]:
    """The task contract for a task class (or registered name; every variant of a name is checked):
    declarations; on every operator kind it applies to (`Task.applies_to`; the others are skipped with
    its reason), its example returns flat rows with exactly declared columns, aligned tensors, no output,
    the network's mode restored, identical rows when replayed from the unit id; an unknown parameter is
    named with the accepted ones. Returns {"checked": kinds, "skipped": {kind: reason}}."""
    from survey.physics import physics_kinds
    from survey.tasks import Column, Task, make_task, task_class, variants

    if isinstance(task, str):
        classes = list(dict.fromkeys([task_class(task), *variants(task).values()]))
        reports = [check_task(cls, kinds, replay=replay) for cls in classes]
        return reports[0] if len(reports) == 1 else {"variants": reports}
    cls = task
    name = cls.task_name
    _require(isinstance(cls, type) and issubclass(cls, Task) and bool(name), f"{cls!r} is not a registered Task")
    _require(bool(cls.title) and "\n" not in cls.title, f"task {name!r}: a one-line title is needed")
    for column, declared in cls.columns.items():
        _require(isinstance(declared, Column) and bool(declared.meaning) and "\n" not in declared.meaning,
                 f"task {name!r}: column {column!r} needs a one-line Column meaning")
    checked, skipped, produced = [], {}, set()
    for kind in kinds or physics_kinds():
        physics = small_physics(kind).to(torch.float64)
        reason = make_task(name, **cls.example).applies_to(physics)
        if reason:
            skipped[kind] = reason
            continue
        rows, tensors, printed = run_example(cls, physics)
        produced |= _check_rows(cls, kind, rows, tensors, printed)
        if replay:
            again, again_tensors, _ = run_example(cls, physics)
            _require(len(rows) == len(again) and all(a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
                                                     for a, b in zip(rows, again)),
                     f"task {name!r} on {kind!r}: replaying the unit gave other rows")
            _require(all(torch.equal(tensors[k].nan_to_num(), again_tensors[k].nan_to_num()) for k in tensors),
                     f"task {name!r} on {kind!r}: replaying the unit gave other tensors")
        checked.append(kind)
    _require(bool(checked), f"task {name!r}: applies to none of {kinds or physics_kinds()} ({skipped})")
    key = {k: v for k, v in cls.example.items() if k == (task_class(name).variant_key or "")}
    try:
        make_task(name, **key, etaa=1.0)
    except ValueError as err:
        _require(str(err).startswith(f"task {name!r}: unknown parameter 'etaa'") and
                 all(p in str(err) for p in cls.parameter_names()),
                 f"task {name!r}: an unknown parameter must be named with the accepted ones, got: {err}")
    else:
        raise CheckFailed(f"task {name!r}: accepted an unknown parameter 'etaa'")
    return {"task": name, "class": cls.__name__, "checked": checked, "skipped": skipped, "columns": produced}


# -- networks -------------------------------------------------------------------------------------------------


def check_network(net: Callable, physics, name: str = "network") -> dict[str, Any]:
    """A reconstruction network for the survey: callable as net(y, physics) on batches of 1, 2 and 8, a real
    (B, 1, n, n) finite image, samples independent in eval mode (the attacks stack samples in one batch)."""
    from survey.nets.byo import check_network as probe

    probe(name, net, physics)
    g = torch.Generator().manual_seed(0)
    dtype = next((p.dtype for p in net.parameters()), torch.float32) if isinstance(net, nn.Module) else torch.float32
    x = torch.rand((3, *physics.image_shape), generator=g, dtype=torch.float64).to(dtype)
    physics = physics.to(dtype)
    from survey.numerics import eval_mode

    with eval_mode(net), torch.no_grad():
        y = physics.A(x)
        out = net(y, physics)
        one = torch.cat([net(y[i:i + 1], physics) for i in range(3)])
    _require(not torch.is_complex(out), f"network {name!r}: returns a complex image (return the real image)")
    _require(bool(torch.isfinite(out).all()), f"network {name!r}: non-finite output")
    scale = float(out.abs().max()) or 1.0
    diff = float((out - one).abs().max())
    _require(diff <= 1e-4 * scale, f"network {name!r}: a sample's output depends on the rest of its batch in eval "
             f"mode (by {diff:.3g})")
    return {"network": name, "batch_independence": diff}


__all__ = ["CheckFailed", "SMALL_PHYSICS", "check_family", "check_network", "check_physics", "check_task",
           "run_example", "small_physics", "task_context"]
