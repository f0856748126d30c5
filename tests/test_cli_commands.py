"""The data and physics commands, run as a user would (no network access needed)."""

from __future__ import annotations

import pytest
from PIL import Image
from typer.testing import CliRunner

from survey.cli import app

runner = CliRunner()


def test_datasets_list_shows_real_brain_slices():
    result = runner.invoke(app, ["datasets", "list"])
    assert result.exit_code == 0, result.output
    brain = next(line for line in result.output.splitlines() if line.strip("│ ").startswith("brain"))
    counts = [int(c) for c in brain.split("│")[2:5]]
    assert sum(counts) > 100
    for name in ("ellipses", "shepp-logan", "dicom-samples", "folder", "fastmri"):
        assert name in result.output


def test_datasets_show_writes_a_grid(tmp_path):
    out = tmp_path / "brain.png"
    result = runner.invoke(app, ["datasets", "show", "brain", "--out", str(out), "--count", "4", "--size", "32"])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[0] > 100


@pytest.mark.parametrize("args", [
    ["mri", "--ratio", "0.25", "--mask", "gaussian-lines"],
    ["pmri", "--coils", "4", "--ratio", "0.3"],
    ["radon", "--views", "30", "--angular-range", "150"],
    ["denoise"],
])
def test_physics_show_every_kind(tmp_path, args):
    out = tmp_path / "p.png"
    result = runner.invoke(app, ["physics", "show", *args, "--size", "32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists() and Image.open(out).size[0] > 100


def test_unknown_names_fail_clearly(tmp_path):
    result = runner.invoke(app, ["physics", "show", "xray", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "unknown physics kind 'xray'" in result.stderr
    result = runner.invoke(app, ["datasets", "show", "nosuch", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "unknown dataset 'nosuch'" in result.stderr
