"""docs/REPRODUCTION.md and the committed reports/paper/: every table names the commands behind its numbers,
those commands run on a real store, and the committed report is complete and renders in a browser."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from survey.cli import app
from tests.conftest import CHROMIUM_FLAGS, chromium, parse_html

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "REPRODUCTION.md"
REPORT = ROOT / "reports" / "paper" / "index.html"
STORE = "results-paper-reduced"


def fenced_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, body) of every ```sh block."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip().startswith("```sh"):
            start, i = i, i + 1
            body = []
            while not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append((start, "\n".join(body)))
        i += 1
    return blocks


def survey_commands(text: str) -> list[list[str]]:
    """argv of every `survey estimate` / `survey query` command in the doc's ```sh blocks."""
    commands = []
    for _, body in fenced_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith(("survey estimate", "survey query")):
                commands.append(shlex.split(line))
    return commands


def test_every_table_is_followed_by_the_commands_that_produced_it():
    lines = DOC.read_text().splitlines()
    fences = {start for start, body in fenced_blocks(DOC.read_text())
              if re.search(r"^survey (estimate|query) ", body, re.M)}
    tables, i = 0, 0
    while i < len(lines):
        if lines[i].startswith("|"):
            tables += 1
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            following = next(j for j in range(i, len(lines)) if lines[j].strip())
            assert following in fences, f"REPRODUCTION.md line {i}: a table without its ```sh commands after it"
        i += 1
    assert tables >= 5  # one per claim at least


def test_every_command_names_the_paper_store_and_runs_on_a_real_store(study_store):  # noqa: F811
    _, store = study_store
    commands = survey_commands(DOC.read_text())
    assert len(commands) >= 10
    for argv in commands:
        assert argv[argv.index("--store") + 1] == STORE, argv
        argv = [str(store) if a == STORE else a for a in argv]
        result = CliRunner().invoke(app, argv[1:])
        assert result.exit_code == 0, (shlex.join(argv), result.output)


def test_committed_paper_report_is_complete():
    html = REPORT.read_text()
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))
    commands = [c for found in data["estimates"].values() for c in found["commands"].values()]
    assert len(commands) >= 8 and all(f"--store {STORE}" in c for c in commands)
    for key in ("attack-amplification", "ball-persistence", "insertion-lost", "sweep-falls"):
        networks = {r["network"] for r in data["estimates"][key]["network"]}
        assert len(networks) >= 5, (key, networks)
    parsed = parse_html(html)
    assert len(parsed.images) >= 6
    for src in parsed.images:
        assert (REPORT.parent / src).is_file(), src
    # the README's figures come from this report
    readme = (ROOT / "README.md").read_text()
    shown = re.findall(r"\]\((reports/paper/figures/[^)]+)\)", readme)
    assert len(shown) >= 2 and all((ROOT / p).is_file() for p in shown)


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_committed_paper_report_renders_in_a_headless_browser(tmp_path):
    url = REPORT.resolve().as_uri()
    flags = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "paper.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,2400", url],
                   capture_output=True, timeout=60, check=True)
    assert np.asarray(Image.open(shot).convert("L"), dtype=np.float64).std() > 20
    dom = subprocess.run([*flags, "--virtual-time-budget=8000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=90, check=True).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-images-loaded="all"' in body, body


@pytest.mark.skipif(not (ROOT / STORE).is_dir(),
                    reason=f"needs the store: survey run tasks/paper-reduced.toml ({STORE}/)")
def test_committed_paper_report_numbers_are_survey_estimate_on_the_store(monkeypatch):
    """Where the paper study's store exists (it is not committed), every table of the committed report is
    what its printed `survey estimate` command gives on it."""
    monkeypatch.chdir(ROOT)
    html = REPORT.read_text()
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))
    for key, found in data["estimates"].items():
        for solver, command in found["commands"].items():
            argv = shlex.split(command)
            result = CliRunner().invoke(app, [*argv[1:], "--format", "json"])
            assert result.exit_code == 0, result.output
            assert json.loads(result.output) == found[solver], (key, solver)
