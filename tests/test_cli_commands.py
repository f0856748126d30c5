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


def test_datasets_list_and_show_take_the_loaders_options_and_name_skipped_files(tmp_path, monkeypatch):
    import numpy as np
    from typer.testing import CliRunner

    from survey.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "scans").mkdir()
    for i in range(3):
        np.save(tmp_path / "scans" / f"s{i}.npy", np.random.default_rng(i).random((16, 16)))
    (tmp_path / "scans" / "readme.txt").write_text("not an image")
    runner = CliRunner()
    listed = runner.invoke(app, ["datasets", "list", "folder", "--param", "path=scans", "--size", "16"],
                           env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "folder" in listed.output and "skipped files" in listed.output
    shown = runner.invoke(app, ["datasets", "show", "folder", "--param", "path=scans", "--size", "16",
                                "--out", "grid.png"])
    assert shown.exit_code == 0, shown.output
    assert "skipped 1 file: readme.txt" in shown.output and (tmp_path / "grid.png").exists()
    bad = runner.invoke(app, ["datasets", "show", "folder", "--param", "path=scans", "--param", "nope=1",
                              "--out", "grid.png"])
    assert bad.exit_code == 2 and "does not take these options" in bad.stderr
    assert runner.invoke(app, ["datasets", "list", "--param", "path=scans"]).exit_code == 2
