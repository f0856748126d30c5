"""A study's plugins: a task, a family and an operator from a folder outside the package, run and reported.

The lab folder is written here, one file each, and named in the study's `plugins`; `survey run` and
`survey report` take it from there: the task's rows reach the store, the family drives the built-in
severity task, the operator is the network's physics, and the task's own report section appears. The
three parts pass survey.testing's checks. Bad plugin input is one line naming the file, exit 2, before Ray.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import parse_html

LAB_OPERATOR = '''
"""A 3 x 3 box blur with zero padding: self-adjoint, every entry measured."""
import torch
import torch.nn.functional as F

import survey.physics
from survey.physics.base import LinearPhysics


class Blur(LinearPhysics):
    kind = "lab-blur"
    reference_defaults = dict(lam_w=1e-2, lam_tv=2e-2, iterations=20, wavelet="db2", levels=2, eps=3e-3)

    @property
    def measurement_shape(self):
        return (1, self.size, self.size)

    def A(self, x):
        kernel = torch.full((1, 1, 3, 3), 1 / 9, dtype=x.real.dtype, device=x.device)
        if torch.is_complex(x):
            return torch.complex(F.conv2d(x.real, kernel, padding=1), F.conv2d(x.imag, kernel, padding=1))
        return F.conv2d(x, kernel, padding=1)

    def A_adjoint(self, y):
        return self.A(y)


@survey.physics.register("lab-blur")
def build(size=16):
    return Blur(size)
'''

LAB_FAMILY = '''
"""A global gain error: y' = (1 + severity g) y, one standard Gaussian g per draw."""
import torch

import survey.perturb
from survey.perturb.base import Family


class Gain(Family):
    name = "lab-gain"
    severity_name = "gain error"
    severity_unit = "fraction"
    example_severity = 0.1

    def latent_shape(self, physics):
        return (1,)

    def apply(self, y, z, severity, physics):
        shape = (-1, *([1] * (y.ndim - 1)))
        severity = torch.as_tensor(severity, dtype=y.real.dtype, device=y.device).reshape(shape)
        return y * (1 + severity * z[:, :1].to(device=y.device, dtype=y.real.dtype).reshape(shape))


@survey.perturb.register("lab-gain")
def build():
    return Gain()
'''

LAB_TASK = '''
"""The network's relative output change under the lab's gain error, one row per image."""
from dataclasses import dataclass

import torch

import survey.tasks
from survey.metrics import norms
from survey.numerics import reconstruct
from survey.perturb import make_family
from survey.tasks import LABELS, Column, Task, TaskResult, validate


@survey.tasks.register("lab-gain-check")
@dataclass(kw_only=True)
class GainCheck(Task):
    """Relative output change of the network under a global gain error of the measurements."""

    table = "lab_gain"
    title = "Lab gain check"
    columns = {**LABELS, "image_id": Column("stable id of the image"), "severity": Column("gain error, a fraction"),
               "out_change_rel": Column("||f(y') - f(y)|| / ||f(y)||")}
    example = dict(severity=0.1)

    severity: float = 0.1

    def __post_init__(self):
        validate.positive(self, "severity")

    def run(self, ctx, generator):
        y = ctx.physics.A(ctx.images)
        z = torch.randn((y.shape[0], 1), generator=generator, dtype=torch.float64, device=generator.device)
        moved = make_family("lab-gain").apply(y, z.to(y.device), self.severity, ctx.physics)
        clean, out = reconstruct(ctx.net, y, ctx.physics), reconstruct(ctx.net, moved, ctx.physics)
        change = (norms(out - clean) / norms(clean)).tolist()
        return TaskResult([{"image_id": i, "severity": float(self.severity), "out_change_rel": float(c)}
                           for i, c in zip(ctx.image_ids, change)], {})


def _section():
    from survey.analysis.sections import register
    from survey.analysis.sections.base import Section

    register(Section(table="lab_gain", title="The lab's gain check", params=("severity",),
                     method="How much the reconstruction moves when every measurement is off by one gain."))


_section()
'''

NET = '''
import torch
from torch import nn

from lab_layers import Residual  # a sibling module: the study's folder is on every worker's import path


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = Residual()

    def forward(self, y, physics):
        h = physics.H(y)
        h = h.real if torch.is_complex(h) else h
        return self.body(h)


def build():
    return Net()
'''

LAYERS = '''
import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, h):
        return h + 0.1 * torch.tanh(self.conv(h))
'''


def lab(folder: Path, plugins: str = '["lab_task.py", "lab_family.py", "lab_operator.py"]') -> Path:
    """The lab folder (plugins and network) and a study naming the plugins; the study's path."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("lab_task.py", LAB_TASK), ("lab_family.py", LAB_FAMILY), ("lab_operator.py", LAB_OPERATOR),
                       ("lab_net.py", NET), ("lab_layers.py", LAYERS)):
        (folder / name).write_text(text)
    study = folder / "study.toml"
    study.write_text(textwrap.dedent(f'''
        name = "lab"
        store = "results"
        plugins = {plugins}

        [[networks]]
        name = "blurnet"
        factory = "lab_net.py:build"
        physics = {{ kind = "lab-blur", size = 16 }}

        [[datasets]]
        name = "ellipses"
        split = "test"
        count = 2

        [[tasks]]
        name = "lab-gain-check"
        params = {{ severity = [0.05, 0.2] }}

        [[tasks]]
        name = "severity"
        params = {{ families = {{ "lab-gain" = [0.0, 0.1] }}, draws = 2, with_reference = false }}
        '''))
    return study


@pytest.fixture
def clean_registries():
    """Forget what the lab registered, so other tests see the package's own registries."""
    yield
    from survey import plugins
    from survey.analysis.sections import SECTIONS
    from survey.perturb import FAMILIES
    from survey.physics import PHYSICS
    from survey.tasks import TASKS

    for registry, name in ((TASKS, "lab-gain-check"), (FAMILIES, "lab-gain"), (PHYSICS, "lab-blur"),
                           (SECTIONS, "lab_gain")):
        registry.remove(name)
    plugins._LOADED.clear()


def test_a_plugin_folder_runs_reports_and_passes_the_checks(tmp_path, ray_local, clean_registries):
    from survey.analysis.db import query
    from survey.cli import app
    from survey.testing import check_family, check_physics, check_task, small_physics

    study = lab(tmp_path / "lab")
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(study), "--store", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    rows = query(tmp_path / "results", "SELECT severity, count(*) AS n FROM lab_gain GROUP BY severity ORDER BY 1")
    assert rows["severity"].tolist() == [0.05, 0.2] and rows["n"].tolist() == [2, 2]
    families = query(tmp_path / "results", "SELECT DISTINCT family, physics FROM severity")
    assert families.values.tolist() == [["lab-gain", "lab-blur"]]

    out = tmp_path / "report"
    result = runner.invoke(app, ["report", "--study", str(study), "--store", str(tmp_path / "results"),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = next(out.glob("*.html")).read_text()
    assert "<h3>The lab&#39;s gain check" in html
    table = parse_html(html).rows
    assert ["blurnet", "0.05", "2", "2"] in table and ["blurnet", "0.2", "2", "2"] in table  # its parameter table

    check_physics("lab-blur")
    check_family("lab-gain", small_physics("lab-blur"))
    report = check_task("lab-gain-check", kinds=["lab-blur", "mri"])
    assert report["checked"] == ["lab-blur", "mri"]


@pytest.mark.parametrize("plugins,says", [
    ('["missing.py"]', "plugin 'missing.py': file"),
    ('["broken.py"]', "plugin 'broken.py'"),
    ('["no_such_module_x"]', "plugin 'no_such_module_x': no module named"),
    ('["taken.py"]', "task name 'attack' is already registered"),
])
def test_bad_plugins_are_one_line_exit_2_before_ray(tmp_path, monkeypatch, plugins, says, clean_registries):
    import survey.engine.cluster as cluster
    from survey.cli import app

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not start for a bad study")

    monkeypatch.setattr(cluster, "connect", no_ray)
    study = lab(tmp_path / "lab", plugins)
    (tmp_path / "lab" / "broken.py").write_text("import torch\nraise RuntimeError('lab code is broken')\n")
    (tmp_path / "lab" / "taken.py").write_text(
        "import survey.tasks\nfrom survey.tasks.attack import Attack\n\n\n"
        "@survey.tasks.register('attack')\nclass Again(Attack):\n    pass\n")
    result = CliRunner().invoke(app, ["run", str(study)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {study}: ") and says in lines[0], lines
    if "broken" in plugins:
        assert "broken.py" in lines[0] and "lab code is broken" in lines[0]
    if "taken" in plugins:
        assert "taken.py" in lines[0]
