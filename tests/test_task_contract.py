"""The task contract, for every registered task on every registered operator.

Registry-driven: parametrised over every class the task registry can run (variants included) and, through
survey.testing.check_task, every registered operator the task applies to (`Task.applies_to`; others are
skipped with the task's reason), so a new task or operator is covered without editing this file. Each
task's declared `example` runs in-process on a tiny network; its rows must be flat scalars carrying exactly
the declared columns, its tensors must align with its rows, a unit must replay identically from its id, an
unknown parameter must be named, nothing may be printed, and every parameter must say what it means.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from survey.physics import make_physics, physics_kinds
from survey.solvers import make_reference
from survey.tasks import (LABELS, Column, Task, TaskContext, generator_for, make_task, table_columns, tables,
                          task_class, task_names, variants)
from survey.testing import check_task

SIZE = 16
#: Every class a task name can run: "attack" and its variant "attack[budget]" (search = "budget").
TASKS = [entry for name in task_names()
         for entry in [name] + [f"{name}[{v}]" for v, cls in variants(name).items() if cls is not task_class(name)]]
KINDS = physics_kinds()
#: Small operators per kind (others: `make_physics(kind, size=SIZE)`).
PHYSICS = {
    "mri": dict(ratio=0.4, mask="gaussian-lines", seed=0),
    "pmri": dict(ratio=0.4, coils=3, seed=0),
    "radon": dict(views=6),
    "denoise": dict(sigma=0.1),
}


class TinyNet(nn.Module):
    """f(y) = Re H(y) + tanh(conv(Re H(y))) with dropout, which eval mode must switch off."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(1, 1, 3, padding=1).double()
        with torch.no_grad():
            self.conv.weight.copy_(0.3 * torch.randn(self.conv.weight.shape, generator=g, dtype=torch.float64))
            self.conv.bias.fill_(0.05)
        self.drop = nn.Dropout(0.5)
        self.train()  # the task must run it in eval mode and restore this

    def forward(self, y, physics):
        x0 = physics.H(y)
        x0 = x0.real if torch.is_complex(x0) else x0
        return x0 + torch.tanh(self.drop(self.conv(x0)))


_PHYSICS: dict[str, object] = {}


def physics_of(kind: str):
    if kind not in _PHYSICS:
        _PHYSICS[kind] = make_physics(kind, size=SIZE, **PHYSICS.get(kind, {}))
    return _PHYSICS[kind]


def context(kind: str, unit_id: str = "contract-unit", reference: bool = True) -> TaskContext:
    physics = physics_of(kind)
    g = torch.Generator().manual_seed(3)
    images = nn.functional.avg_pool2d(torch.rand(2, 1, SIZE, SIZE, generator=g, dtype=torch.float64), 3, 1, 1)
    solver = make_reference(physics, iterations=5) if reference else None
    return TaskContext(net=TinyNet(), physics=physics, images=images, image_ids=["img-a", "img-b"],
                       reference=solver, network="tiny", dataset="noise", unit_id=unit_id)


def entry_class(entry: str) -> type[Task]:
    """The class of a registry entry "name" or "name[variant]"."""
    name, _, variant = entry.rstrip("]").partition("[")
    return variants(name)[variant] if variant else task_class(name)


def task_name(entry: str) -> str:
    return entry.partition("[")[0]


def run_example(name: str, kind: str, **kw):
    ctx = context(kind, **kw)
    task = make_task(task_name(name), **entry_class(name).example)
    assert type(task) is entry_class(name)
    result = task(ctx, generator_for(ctx.unit_id))
    assert ctx.net.training, "the task left the network in eval mode"
    return result


@pytest.mark.parametrize("name", TASKS)
def test_declarations(name):
    cls = entry_class(name)
    name = task_name(name)
    assert issubclass(cls, Task) and cls.task_name == name
    assert cls.title and "\n" not in cls.title
    assert set(LABELS) <= set(cls.columns)
    for column, declared in cls.columns.items():
        assert isinstance(declared, Column) and declared.meaning and "\n" not in declared.meaning, column
    assert name in [c.task_name for c in tables()[cls.table]]
    assert set(cls.columns) <= set(table_columns(cls.table))


@pytest.mark.parametrize("name", TASKS)
def test_the_contract_holds_on_every_operator_the_task_applies_to(name):
    """survey.testing.check_task: flat rows with declared columns, aligned tensors, silence, the network's
    mode restored, an identical replay, named unknown parameters, on every registered operator kind the
    task applies to; every declared column is produced somewhere."""
    report = check_task(entry_class(name))
    assert set(report["checked"]) | set(report["skipped"]) == set(KINDS)
    assert report["checked"], report
    assert report["columns"] == set(entry_class(name).columns), sorted(set(entry_class(name).columns)
                                                                       - report["columns"])


def test_a_task_skips_an_operator_it_does_not_apply_to_and_says_why():
    from survey.physics.base import LinearPhysics

    class Pixels(LinearPhysics):
        """The identity on pixels: no sampling axis to sweep."""

        kind = "pixels"
        reference_defaults = dict(lam_w=1e-2, lam_tv=2e-2, iterations=5, wavelet="db2", levels=2, eps=3e-3)

        @property
        def measurement_shape(self):
            return (1, self.size, self.size)

        def A(self, x):
            return x

        def A_adjoint(self, y):
            return y

    reason = make_task("sweep").applies_to(Pixels(SIZE))
    assert reason and "no sweep axis" in reason
    assert make_task("attack").applies_to(Pixels(SIZE)) is None
    assert "applies to the operator kind 'pixels'" in make_task("severity", families={"motion": [1.0]}).applies_to(
        Pixels(SIZE))


@pytest.mark.parametrize("name", TASKS)
def test_every_parameter_has_a_meaning(name):
    from survey.tasks.describe import parameters

    missing = [p.name for p in parameters(entry_class(name)) if not p.meaning]
    assert not missing, f"{name}: document {missing} as 'name: meaning' in the docstring or in parameter_help"


@pytest.mark.parametrize("name", TASKS)
def test_without_a_reference_rows_carry_a_subset_of_the_declared_columns(name):
    try:
        rows, _ = run_example(name, KINDS[0], reference=False)
    except ValueError as err:  # a task that needs the reference says so
        assert "reference" in str(err)
        return
    assert set().union(*(row.keys() for row in rows)) <= set(entry_class(name).columns)


def test_a_close_misspelling_is_suggested():
    with pytest.raises(ValueError, match=r"^task 'attack': unknown parameter 'etaa' \(did you mean 'eta'\?\); "
                                         r"accepted: "):
        make_task("attack", etaa=1e-3)


def test_registry_helpers():
    assert {"attacks", "ball", "insertions", "sweeps"} <= set(tables())
    assert [(c.task_name, c.search) for c in tables()["attacks"]] == [
        ("attack", "paper"), ("attack", "budget"), ("attack-reference", "paper"), ("attack-reference", "budget")]
    columns = table_columns("attacks")
    assert "ref_psnr" in columns and columns["psnr"].unit == "dB"
    with pytest.raises(ValueError, match="unknown table"):
        table_columns("nope")
    with pytest.raises(ValueError, match="unknown task"):
        task_class("atack")


def test_a_task_cannot_override_the_shared_call():
    with pytest.raises(TypeError, match="implement `run`"):
        class Sneaky(Task):  # noqa: F841
            def __call__(self, ctx, generator):
                return None


def test_misaligned_tensors_are_refused():
    from dataclasses import dataclass

    from survey.tasks.base import TaskResult

    @dataclass(kw_only=True)
    class Broken(Task):
        table, title, columns, example = "broken", "Broken", dict(LABELS), {}

        def run(self, ctx, generator):
            return TaskResult([{} for _ in ctx.image_ids], {"out": torch.zeros(5)})

    with pytest.raises(ValueError, match="'out'.*2 rows"):
        Broken()(context(KINDS[0], reference=False), generator_for("x"))


def test_a_variant_takes_only_its_own_parameters():
    from survey.plan import expand_grid
    from survey.spec import TaskSpec
    from survey.tasks.attack import Attack, BudgetAttack

    assert type(make_task("attack")) is Attack and type(make_task("attack", search="budget")) is BudgetAttack
    with pytest.raises(ValueError, match=r"^task 'attack': unknown parameter 'eta'; accepted with search='budget': budgets"):
        make_task("attack", search="budget", eta=1e-3)  # Algorithm 1's learning rate means nothing here
    with pytest.raises(ValueError, match=r"^task 'attack': unknown parameter 'budgets'"):
        make_task("attack", budgets=[0.01])
    with pytest.raises(ValueError, match=r"^task 'attack': search 'nope' is not one of \['budget', 'paper'\]"):
        make_task("attack", search="nope")
    with pytest.raises(ValueError, match=r"make_task\('attack', search='budget'\)"):
        Attack(search="budget")
    # a flat list of a variant's list parameter is one value, a list of lists a grid
    grid = expand_grid(TaskSpec(name="attack", params={"search": "budget", "budgets": [0.01, 0.02]}))
    assert grid == [{"search": "budget", "budgets": [0.01, 0.02]}]
