"""A new task kind is one module plus one registry entry: a toy task, registered at test time through
$SURVEY_TASK_MODULES (no file of the package changed), runs through `survey run` on real Ray, fills its own
table, and appears in the evidence report through the generic section."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from tests.conftest import tiny_study, write_study

TOY_TASK = '''
"""A toy test: the relative output change under a fixed-size random measurement perturbation."""
from dataclasses import dataclass
from typing import ClassVar

import torch

from survey.tasks.base import LABELS, Column, Task, register
from survey.tasks.validate import positive


@register("toy-shift")
@dataclass(kw_only=True)
class ToyShift(Task):
    """Move the measurements by a random e with ||e|| = size * ||y|| and record how far the output moves."""

    table: ClassVar[str] = "toyshift"
    title: ClassVar[str] = "Toy measurement shift"
    columns: ClassVar[dict] = {**LABELS,
                               "image_id": Column("id of the image"),
                               "size": Column("||e|| / ||y||", "relative to ||y||"),
                               "out_change_rel": Column("||f(y + e) - f(y)|| / ||f(y)||", "relative")}
    example: ClassVar[dict] = {"size": 0.01}

    size: float = 0.01

    def __post_init__(self):
        positive(self, "size")

    def run(self, ctx, generator):
        y = ctx.physics.A(ctx.images)
        e = torch.randn(y.shape, generator=generator, dtype=y.real.dtype).to(y.dtype) * ctx.physics.measured_mask()
        flat = lambda t: t.reshape(t.shape[0], -1).norm(dim=1)
        e = e * (self.size * flat(y) / flat(e)).view(-1, *([1] * (y.ndim - 1)))
        clean, moved = ctx.net(y, ctx.physics), ctx.net(y + e, ctx.physics)
        change = flat(moved - clean) / flat(clean)
        rows = [{"image_id": i, "size": self.size, "out_change_rel": float(c)} for i, c in zip(ctx.image_ids, change)]
        return rows, {}
'''

STUDY = tiny_study("toy", """
[[tasks]]
name = "toy-shift"
images_per_unit = 3
params = { size = [0.01, 0.05] }

[[criteria]]
name = "toy change below 50%"
table = "toyshift"
bad = "out_change_rel >= 0.5"
max_upper = 0.9
""", count=3)


@pytest.mark.slow
def test_a_toy_task_runs_on_ray_and_reaches_the_report(tmp_path):
    path = write_study(tmp_path, STUDY)
    (tmp_path / "toy_task.py").write_text(textwrap.dedent(TOY_TASK))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "SURVEY_TASK_MODULES": "toy_task"}
    run = subprocess.run([sys.executable, "-m", "survey.cli.main", "run", str(path)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [r for f in (tmp_path / "results" / "toyshift").rglob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert len(rows) == 6 and {r["task"] for r in rows} == {"toy-shift"}
    assert {r["size"] for r in rows} == {0.01, 0.05}
    report = subprocess.run([sys.executable, "-m", "survey.cli.main", "report", "--study", str(path)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stdout + report.stderr
    html = (tmp_path / "reports" / "toy" / "index.html").read_text()
    assert "Toy measurement shift" in html          # the task's title, through the registry
    assert "||f(y + e) - f(y)|| / ||f(y)||" in html  # its declared column meanings
    assert "toy change below 50%" in html           # the criterion's estimate table


def test_without_the_plugin_variable_the_toy_task_is_unknown(tmp_path, monkeypatch):
    monkeypatch.delenv("SURVEY_TASK_MODULES", raising=False)
    from survey.tasks import task_names

    assert "toy-shift" not in task_names()
