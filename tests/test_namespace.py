"""Our packages import as survey.* only: a study folder with its own tasks.py / analysis.py cannot shadow them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import tiny_study, write_study

STUDY = tiny_study("shadow", """
[[tasks]]
name = "attack"
images_per_unit = 2
params = { iterations = 3, snapshot_levels = [0.05] }
""", count=2)

# What invoke or celery users keep beside their study: modules named like ours, importing nothing of ours.
SHADOWS = {"tasks.py": "raise ImportError('the study folder tasks.py was imported')\n",
           "analysis.py": "raise ImportError('the study folder analysis.py was imported')\n"}


def _folder(tmp_path: Path) -> Path:
    path = write_study(tmp_path / "study", STUDY)
    for name, text in SHADOWS.items():
        (path.parent / name).write_text(text)
    return path


@pytest.mark.slow   # a fresh interpreter in the study folder (~5 s)
def test_load_study_in_a_folder_with_its_own_tasks_module(tmp_path):
    path = _folder(tmp_path)
    code = ("import sys; sys.path.insert(0, '.'); from survey.spec import load_study; "
            "s = load_study('study.toml'); print(s.tasks[0].name)")
    done = subprocess.run([sys.executable, "-c", code], cwd=path.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "attack"


@pytest.mark.slow
def test_survey_run_from_a_folder_with_its_own_tasks_module(tmp_path):
    path = _folder(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(path.parent)}  # the user's folder first on every worker's path
    done = subprocess.run([sys.executable, "-m", "survey.cli.main", "run", "study.toml"], cwd=path.parent,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [r for f in (path.parent / "results" / "attacks").rglob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert len({r["image_id"] for r in rows}) == 2
