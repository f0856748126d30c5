"""survey.testing: the public checks pass on every registered part and catch the faults they name."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from survey.nets.exact import IdentityNet, TikhonovNet
from survey.perturb import family_names, make_family
from survey.physics import physics_kinds
from survey.physics.base import LinearPhysics
from survey.tasks import LABELS, Task, TaskResult
from survey.testing import CheckFailed, check_family, check_network, check_physics, check_task, small_physics


@pytest.mark.parametrize("kind", physics_kinds())
def test_every_registered_operator_passes_check_physics(kind):
    assert check_physics(kind)["adjointness_gap"] >= 0


def family_pairs():
    for name in family_names():
        family = make_family(name)
        for kind in physics_kinds():
            if family.applies_to(small_physics(kind)):
                yield name, kind
                break


@pytest.mark.parametrize("name,kind", list(family_pairs()))
def test_every_registered_family_passes_check_family(name, kind):
    report = check_family(name, small_physics(kind))
    assert report["severity"] == make_family(name).example_severity


@pytest.mark.parametrize("net", [IdentityNet(), TikhonovNet(0.05)], ids=["identity", "tikhonov"])
def test_exact_networks_pass_check_network(net):
    assert check_network(net, small_physics("mri"))["batch_independence"] <= 1e-12


class Skewed(LinearPhysics):
    """A deliberately wrong operator: its 'adjoint' is off by a factor 2."""

    kind = "skewed"

    @property
    def measurement_shape(self):
        return (1, self.size, self.size)

    def A(self, x):
        return x

    def A_adjoint(self, y):
        return 2 * y


def test_check_physics_names_a_wrong_adjoint():
    with pytest.raises(CheckFailed, match=r"physics 'skewed': not adjoint"):
        check_physics(Skewed(16))


class Leaky:
    """A family that writes into unmeasured k-space entries."""

    name, kinds, identity_severity, example_severity, needs_image = "leaky", None, 0.0, 0.5, False

    def applies_to(self, physics):
        return True

    def latent_shape(self, physics):
        return (1,)

    def perturb(self, y, z, severity, physics, x=None):
        s = torch.as_tensor(severity, dtype=torch.float64).reshape(-1, *([1] * (y.ndim - 1)))
        return y + s * z[:, :1].reshape(-1, *([1] * (y.ndim - 1)))


def test_check_family_names_a_perturbation_off_the_measured_entries():
    with pytest.raises(CheckFailed, match=r"family 'leaky': y' moves entries that are not measured"):
        check_family(Leaky(), small_physics("mri"))


class BatchCoupled(nn.Module):
    """Normalises by the batch mean: a sample's output depends on the others."""

    def forward(self, y, physics):
        h = physics.H(y).real
        return h / h.mean()


def test_check_network_names_batch_coupling():
    with pytest.raises(CheckFailed, match="depends on the rest of its batch"):
        check_network(BatchCoupled(), small_physics("mri"))


def test_check_task_names_a_task_that_prints():
    from survey.tasks import TASKS, register

    @dataclass(kw_only=True)
    class Chatty(Task):
        table, title, example = "chatty", "Chatty", {}
        columns = dict(LABELS)

        def run(self, ctx, generator):
            print("hello")
            return TaskResult([{} for _ in ctx.image_ids], {})

    register("chatty-check")(Chatty)
    try:
        with pytest.raises(CheckFailed, match=r"task 'chatty-check' on 'mri': printed 'hello"):
            check_task("chatty-check", kinds=["mri"])
    finally:
        TASKS.remove("chatty-check")
