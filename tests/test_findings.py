"""The paper's first finding on our trained zoo, one network per modality: a worst-case perturbation of
2% of ||x|| moves the network's output far more than it moves the reference's on the same data."""

from __future__ import annotations

import pytest

from survey.data import load_dataset
from survey.nets.zoo import is_trained, load_network
from survey.solvers import make_reference
from survey.tasks import TaskContext, generator_for, make_task


pytestmark = pytest.mark.slow  # trained zoo networks, real attacks: seconds each


@pytest.mark.parametrize("name, images, at_least", [
    ("automap", 4, 3.0),    # Fourier MRI: measured 5.2x
    ("med50", 4, 1.3),      # CT (Algorithm 2): measured 1.7x
    ("mrivn", 2, 1.3),      # parallel MRI: measured 1.7x
])
def test_worst_case_amplification_exceeds_the_reference(name, images, at_least):
    if not is_trained(name):
        pytest.skip(f"{name} is not trained")
    net, physics = load_network(name)
    x = load_dataset("brain", split="test", size=physics.size, count=images).images
    ctx = TaskContext(net=net, physics=physics, images=x, image_ids=[str(i) for i in range(images)],
                      reference=make_reference(physics))
    rows, _ = make_task("attack", iterations=300, snapshot_levels=[0.02])(ctx, generator_for(f"findings/{name}"))
    assert all(r["reached"] and 0.02 <= r["r_rel"] <= 0.03 for r in rows)
    network = sum(r["out_change_rel"] for r in rows) / len(rows)
    reference = sum(r["ref_out_change_rel"] for r in rows) / len(rows)
    assert network >= at_least * reference, (network, reference)
