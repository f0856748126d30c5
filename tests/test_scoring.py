"""One scoring convention (survey.numerics.real_image): every task scores network, reference and H alike.

On one input (two images, Cartesian MRI whose H = A* y is complex with a non-zero imaginary part), the
network under test is H itself (`IdentityNet`, Re H). Then, for every registered task and variant:
each H column h_X must equal its network column X; and the clean PSNR of H that the tasks report must be
the one number psnr(Re H(Ax), x). A task that scored H by its magnitude, or the network one way and H
another, fails here.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from survey.metrics import psnr
from survey.nets.exact import IdentityNet
from survey.numerics import easy_reconstruction, real_image
from survey.physics import make_physics
from survey.solvers import make_reference
from survey.tasks import TaskContext, generator_for, make_task, task_class, task_names, variants

SIZE = 16


def physics():
    return make_physics("mri", size=SIZE, ratio=0.4, mask="gaussian-lines", seed=0).to(torch.float64)


def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return nn.functional.avg_pool2d(torch.rand(2, 1, SIZE, SIZE, generator=g, dtype=torch.float64), 3, 1, 1)


def context() -> TaskContext:
    op = physics()
    return TaskContext(net=IdentityNet(), physics=op, images=images(), image_ids=["a", "b"],
                       reference=make_reference(op, iterations=5), network="H-as-network", dataset="noise",
                       unit_id="scoring")


#: (task name, class) for every class the registry can run.
ENTRIES = [(name, cls) for name in task_names()
           for cls in dict.fromkeys([task_class(name), *variants(name).values()])]


def test_the_input_tells_real_part_from_magnitude():
    op, x = physics(), images()
    h = op.H(op.A(x))
    assert torch.is_complex(h) and float(h.imag.abs().max()) > 1e-3
    assert float((psnr(h.real, x) - psnr(h.abs(), x)).abs().min()) > 1e-3


@pytest.mark.parametrize("name,cls", ENTRIES, ids=[f"{n}:{c.__name__}" for n, c in ENTRIES])
def test_h_columns_equal_the_network_columns_when_the_network_is_h(name, cls):
    rows, _ = make_task(name, **cls.example)(context(), generator_for("scoring"))
    pairs = 0
    for row in rows:
        for key, value in row.items():
            partner = key[2:]
            if key.startswith("h_") and partner in row and isinstance(value, float) and row[partner] is not None:
                assert value == pytest.approx(row[partner], rel=1e-6, abs=1e-9), (key, partner)
                pairs += 1
    assert pairs or not any(k.startswith("h_") and k[2:] in rows[0] for k in rows[0])


def clean_h_psnr() -> list[float]:
    op, x = physics(), images()
    return psnr(easy_reconstruction(op.A(x), op), x).tolist()


def test_every_task_reports_one_clean_psnr_for_h():
    expected = clean_h_psnr()
    ctx = context()
    ctx_net = TaskContext(**{**ctx.__dict__, "net": lambda y, phys: real_image(phys.H(y))})
    reported = {}
    rows, _ = make_task("sweep", ratios=[0.4], views=[4], sigmas=[0.1])(ctx, generator_for("s"))
    reported["sweep h_psnr"] = [r["h_psnr"] for r in rows if r["at_train"]]
    rows, _ = make_task("severity", families={"motion": [0.0]}, draws=1)(ctx, generator_for("s"))
    reported["severity h_psnr_clean"] = [r["h_psnr_clean"] for r in rows]
    for search in ("paper", "budget"):
        params = dict(iterations=1, snapshot_iterations=[1], snapshot_levels=[]) if search == "paper" else \
            dict(search="budget", budgets=[0.02], iterations=1, singular_start=False)
        rows, _ = make_task("attack", target="H", **params)(ctx_net, generator_for("s"))
        reported[f"attack ({search}) psnr_clean of H"] = [r["psnr_clean"] for r in rows]
    rows, _ = make_task("attack", search="budget", budgets=[0.02], iterations=1, singular_start=False,
                        matched=["H"])(ctx_net, generator_for("s"))
    reported["attack (budget) matched H rows"] = [r["psnr_clean"] for r in rows if r["attacked"] == "H"]
    reported["attack (budget) network = Re H rows"] = [r["psnr_clean"] for r in rows if r["attacked"] == "network"]
    for what, values in reported.items():
        assert len(values) == 2 and values == pytest.approx(expected, rel=1e-12), what
