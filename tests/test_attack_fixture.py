"""The attack tasks reproduce a committed fixture: Algorithm 1 / 2 rows and budget rows.

The fixture (tests/fixtures/attack_rows.json) was written by the attack code before it was split into
one task class per search, on one CPU: every row value must match it to a relative 1e-9 (float64; another
CPU's vector units round the last digits differently, so bit-for-bit holds only on the machine that wrote
it), so the split (and any later refactor) changes no number. Kept tensors are checked by their values
(tests/fixtures/attack_tensors.json: shape, sum, sum of squares and 16 entries, relative 1e-9), written after
the split from the same code; the fixture's sha256 of each tensor stays as the record of the first run.
Regenerate only for a deliberate change: `.venv/bin/python tests/test_attack_fixture.py --write` (and say
why in the commit).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from survey.physics import make_physics
from survey.solvers.cs import make_reference
from survey.tasks import make_task
from survey.tasks.base import TaskContext, generator_for

FIXTURE = Path(__file__).parent / "fixtures" / "attack_rows.json"
TENSORS = Path(__file__).parent / "fixtures" / "attack_tensors.json"
RTOL = 1e-9
SIZE = 16


class SmallNet(nn.Module):
    """A fixed residual CNN on Re H(y) (float64, weights from a fixed seed)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 1, 3, padding=1)).double()

    def forward(self, y, physics):
        h = physics.H(y)
        h = h.real if torch.is_complex(h) else h
        return h + 0.5 * self.body(h)


def _physics(kind: str):
    if kind == "mri":
        return make_physics("mri", size=SIZE, ratio=0.5, mask="uniform-lines", seed=0).to(torch.float64)
    return make_physics("radon", size=SIZE, views=8).to(torch.float64)


def _images() -> torch.Tensor:
    grid = torch.linspace(-1, 1, SIZE, dtype=torch.float64)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    disc = ((xx ** 2 + yy ** 2) < 0.5).to(torch.float64)
    noise = torch.rand(2, 1, SIZE, SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return 0.6 * disc + 0.3 * noise * disc


#: (case name, task name, physics kind, parameters): Algorithm 1, Algorithm 2, both domains, every target,
#: the budget search with matched targets, singular starts and both gradient rules.
CASES = [
    ("alg1-mri", "attack", "mri", dict(eta=0.01, iterations=6, restarts=2, snapshot_iterations=[0, 3],
                                       snapshot_levels=[0.004, 5.0])),
    ("alg1-preset", "attack", "mri", dict(preset="deepmri", iterations=4, snapshot_iterations=[4], snapshot_levels=[])),
    ("alg1-measurement", "attack", "mri", dict(domain="measurement", p="x", eta=0.02, iterations=4,
                                               snapshot_iterations=[4], snapshot_levels=[0.01])),
    ("alg1-H", "attack", "mri", dict(target="H", eta=0.01, iterations=4, snapshot_iterations=[4],
                                     snapshot_levels=[])),
    ("alg1-reference", "attack-reference", "mri", dict(eta=0.01, iterations=3, snapshot_iterations=[3],
                                                       snapshot_levels=[])),
    ("alg2-radon", "attack", "radon", dict(eta=0.01, iterations=5, snapshot_iterations=[5], snapshot_levels=[0.003],
                                           support="foreground", support_dilation=1)),
    ("budget-mri", "attack", "mri", dict(search="budget", budgets=[0.01, 0.05], iterations=4, restarts=1,
                                         singular_iterations=2, matched=["reference", "H"])),
    ("budget-radon", "attack", "radon", dict(search="budget", budgets=[0.02], iterations=3, restarts=2,
                                             singular_start=False, matched=["H"])),
    ("budget-measurement", "attack", "mri", dict(search="budget", domain="measurement", budgets=[0.02], iterations=3,
                                                 restarts=1, singular_start=False, matched=["reference"])),
    ("budget-reference", "attack-reference", "mri", dict(search="budget", budgets=[0.02], iterations=3, restarts=1,
                                                         singular_start=False, matched=["H"])),
]


def _digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    if torch.is_complex(t):
        t = torch.view_as_real(t).contiguous()
    return hashlib.sha256(t.to(torch.float64).numpy().tobytes()).hexdigest()


def _values(t: torch.Tensor) -> dict:
    """Shape, sum, sum of squares and 16 evenly spaced entries of a tensor (complex as (re, im) pairs)."""
    t = t.detach().cpu().contiguous()
    if torch.is_complex(t):
        t = torch.view_as_real(t).contiguous()
    flat = t.to(torch.float64).reshape(-1)
    picks = torch.linspace(0, max(flat.numel() - 1, 0), min(16, flat.numel())).round().long()
    return {"shape": list(t.shape), "sum": float(flat.sum()), "sumsq": float((flat ** 2).sum()),
            "entries": flat[picks].tolist()}


def _close(got, want) -> bool:
    if isinstance(want, float) and isinstance(got, (int, float)):
        return math.isclose(got, want, rel_tol=RTOL, abs_tol=1e-12)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(_close(g, w) for g, w in zip(got, want))
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(_close(got[k], want[k]) for k in want)
    return got == want


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no inf / nan
    return value


def run_case(task_name: str, kind: str, params: dict) -> dict:
    physics = _physics(kind)
    ctx = TaskContext(net=SmallNet(), physics=physics, images=_images(), image_ids=["a", "b"],
                      reference=make_reference(physics, iterations=4), network="small", dataset="disc",
                      unit_id="fixture")
    rows, tensors = make_task(task_name, **params)(ctx, generator_for(f"fixture:{task_name}:{kind}"))
    return {"rows": [{k: _plain(v) for k, v in row.items()} for row in rows],
            "tensors": {k: [list(v.shape), _digest(v)] for k, v in sorted(tensors.items())},
            "values": {k: _values(v) for k, v in sorted(tensors.items())}}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_attack_rows_match_the_fixture(case):
    name, task_name, kind, params = case
    expected = json.loads(FIXTURE.read_text())[name]
    got = json.loads(json.dumps(run_case(task_name, kind, params)))
    assert len(got["rows"]) == len(expected["rows"])
    for want, row in zip(expected["rows"], got["rows"]):
        mine = {k: row.get(k) for k in want}  # columns added since are checked by their own tests
        assert _close(mine, want), {k: (mine[k], want[k]) for k in want if not _close(mine[k], want[k])}
    assert {k: v[0] for k, v in got["tensors"].items()} == {k: v[0] for k, v in expected["tensors"].items()}
    assert _close(got["values"], json.loads(TENSORS.read_text())[name])


if __name__ == "__main__" and "--write" in sys.argv:
    torch.set_num_threads(1)
    FIXTURE.parent.mkdir(exist_ok=True)
    cases = {name: run_case(t, k, p) for name, t, k, p in CASES}
    if "--tensors-only" not in sys.argv:
        FIXTURE.write_text(json.dumps({n: {"rows": c["rows"], "tensors": c["tensors"]} for n, c in cases.items()},
                                      indent=1, sort_keys=True) + "\n")
        print(f"wrote {FIXTURE}")
    TENSORS.write_text(json.dumps({n: c["values"] for n, c in cases.items()}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {TENSORS}")
