"""examples/: the bring-your-own example runs end to end as a user would run it (real Ray, subprocesses)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BYO = ROOT / "examples" / "byo"


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "byo"
    shutil.copytree(BYO, folder, ignore=shutil.ignore_patterns("results", "reports", "__pycache__"))
    return folder


@pytest.mark.slow   # runs make_examples.py in a fresh interpreter (~10 s)
def test_byo_files_are_what_the_script_makes_and_agree(tmp_path):
    """The committed weights are make_examples.py's, and the archive and TorchScript file compute what
    net.py with those weights computes, at any batch size."""
    from survey.nets.byo import build_network, check_network, resolve_factory
    from survey.physics import make_physics

    folder = _copy(tmp_path)
    run = subprocess.run([sys.executable, "make_examples.py"], cwd=folder, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(folder)})
    assert run.returncode == 0, run.stderr
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(folder / "net.safetensors") == digest(BYO / "net.safetensors")
    physics = make_physics(kind="mri", size=16, ratio=0.5, mask="uniform-lines", seed=0)
    y = physics.A(torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    nets = {factory: build_network(resolve_factory("n", factory, BYO, weights))
            for factory, weights in (("net.py:build", "net.safetensors"), ("archive:model.pt2", None),
                                     ("archive:model_ts.pt", None))}
    for net in nets.values():
        check_network("n", net, physics)
    with torch.no_grad():
        outs = [net(y, physics) for net in nets.values()]
    assert all(torch.allclose(outs[0], out, atol=1e-5) for out in outs[1:])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_byo_study_runs_and_reports(tmp_path):
    import pandas as pd

    folder = _copy(tmp_path)
    env = dict(os.environ)
    run = subprocess.run([sys.executable, "-m", "survey.cli.main", "run", "study.toml"], cwd=folder, env=env,
                         capture_output=True, text=True, timeout=500)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 units done" in run.stdout and "0 failed" in run.stdout
    rows = pd.read_parquet(folder / "results" / "attacks")
    assert sorted(rows["network"].astype(str).unique()) == ["exported-net", "file-net", "traced-net"]
    assert rows["out_change_rel"].notna().all()
    report = subprocess.run([sys.executable, "-m", "survey.cli.main", "report", "--study", "study.toml"],
                            cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stdout + report.stderr
    html = (folder / "reports" / "byo" / "index.html").read_text()
    assert all(name in html for name in ("exported-net", "file-net", "traced-net"))
