"""The published numbers: every number quoted in README.md's findings and docs/REPRODUCTION.md is marked with a
claim id and recomputed from a committed extract (docs/claims.toml); every committed report with a manifest
passes `survey verify` on its committed extract. Beside it, REPRODUCTION's tables name their commands, those
commands run as printed on the committed extract, and the committed paper report is complete and renders in a
browser. Nothing here skips for want of a store."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
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
CLAIMS = ROOT / "docs" / "claims.toml"


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
              if re.search(r"^(survey (estimate|query) |python -m benchmarks\.)", body, re.M)}
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


@pytest.mark.slow   # every printed command of the committed reports run on their extracts (~8 s)
def test_every_command_names_the_paper_store_and_runs_on_its_committed_extract():
    """The commands under REPRODUCTION's tables run as printed on the extract that stands in for the store."""
    extract = ROOT / tomllib.loads(CLAIMS.read_text())["stores"][STORE]
    commands = survey_commands(DOC.read_text())
    assert len(commands) >= 10
    for argv in commands:
        assert argv[argv.index("--store") + 1] == STORE, argv
        argv = [str(extract) if a == STORE else a for a in argv]
        result = CliRunner().invoke(app, argv[1:])
        assert result.exit_code == 0, (shlex.join(argv), result.output)


def test_committed_paper_report_is_complete():
    html = REPORT.read_text()
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))
    commands = [c for found in data["estimates"].values() for c in found["commands"].values()]
    assert len(commands) >= 8 and all(f"--store {STORE}" in c for c in commands)
    for key in ("attack-amplification", "ball-point-gain", "insertion-lost", "sweep-falls"):
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


@pytest.mark.slow   # a headless browser renders the whole paper report (~15 s)
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


# -- every quoted number has a claim, and every claim recomputes from a committed extract ------------------

@pytest.mark.slow   # every claim of docs/claims.toml recomputed from its extract (~6 s)
def test_every_quoted_number_is_recomputed_from_a_committed_extract():
    """Marked numbers against their claims; unmarked numbers of the claim sections against the lists."""
    from survey.analysis.claims import check

    found = check(ROOT, CLAIMS)
    assert not found.problems, "\n".join(found.problems)
    assert found.checked, "no claim was checked"
    assert not found.unverified, f"numbers of an earlier run, not recomputed: {found.unverified[:10]}"


def test_the_claim_check_fails_for_a_changed_value_a_missing_claim_and_an_unmarked_number(tmp_path):
    """The check on a doc of its own: right as written, and each kind of mistake named."""
    from survey.analysis.claims import check

    spec = tomllib.loads(CLAIMS.read_text())
    store, path = next(iter(spec["stores"].items()))
    doc = tmp_path / "doc.md"
    claims = tmp_path / "claims.toml"

    def write(body: str, extra: str = "") -> list[str]:
        doc.write_text(f"# t\n\n## Findings\n\n{body}\n")
        claims.write_text(f'[stores]\n"{store}" = "{(ROOT / path).as_posix()}"\n[docs]\n"doc.md" = ["Findings"]\n'
                          f'[claims.rows]\nsql = "SELECT count(*) AS n FROM runs"\nstore = "{store}"\n{extra}')
        return check(tmp_path, claims).problems

    n = json.loads(CliRunner().invoke(app, ["query", "SELECT count(*) AS n FROM runs", "--store", str(ROOT / path),
                                            "--format", "json"]).output)[0]["n"]
    assert write(f"The store holds <!-- n:rows -->{n}<!-- /n --> run(s) (`survey query`, 2024).", ) == [
        "doc.md: 1 unmarked number(s) '2024' in a claim section: mark each <!-- n:ID -->...<!-- /n --> with a "
        "claim, or list it under [settings]"]
    assert write(f"The store holds <!-- n:rows -->{n}<!-- /n --> run(s).") == []
    assert "says 99, its extract gives" in write("The store holds <!-- n:rows -->99<!-- /n --> run(s).")[0]
    problems = write(f"<!-- n:rows -->{n}<!-- /n --> and <!-- n:nope -->3<!-- /n -->")
    assert problems == ["doc.md (section 'Findings'): number 3 is marked 'nope', which has no claim"]
    assert write(f"<!-- n:rows -->{n}<!-- /n --> of 7", '[settings]\n"doc.md" = ["7"]\n') == []
    assert "quoted in no doc" in write("nothing quoted")[0]


@pytest.mark.slow
def test_every_committed_report_with_a_manifest_verifies_on_its_committed_extract():
    spec = tomllib.loads(CLAIMS.read_text())
    assert spec["reports"], "no committed report to verify"
    for report, extract in spec["reports"].items():
        result = CliRunner().invoke(app, ["verify", str(ROOT / report), "--store", str(ROOT / extract)])
        assert result.exit_code == 0, (report, result.output[-3000:])


def test_fill_writes_recomputed_values_into_the_marks_and_refuses_a_mark_without_a_claim(tmp_path):
    """After a rerun the docs are filled from the extract: a stale value is replaced, a right one kept, and a
    mark that names no claim stops the fill before any doc is written."""
    from survey.analysis.claims import check, fill

    spec = tomllib.loads(CLAIMS.read_text())
    store, path = next(iter(spec["stores"].items()))
    doc, claims = tmp_path / "doc.md", tmp_path / "claims.toml"
    claims.write_text(f'[stores]\n"{store}" = "{(ROOT / path).as_posix()}"\n[docs]\n"doc.md" = ["Findings"]\n'
                      f'[claims.rows]\nsql = "SELECT count(*) AS n FROM runs"\nstore = "{store}"\n')
    doc.write_text("# t\n\n## Findings\n\nThe store holds <!-- n:rows -->999<!-- /n --> run(s).\n")
    assert fill(tmp_path, claims) == {"doc.md": ["rows"]}
    assert "<!-- n:rows -->999<!-- /n -->" not in doc.read_text()
    assert check(tmp_path, claims).problems == []
    assert fill(tmp_path, claims) == {"doc.md": []}
    written = doc.read_text()
    doc.write_text(written + "\nAnd <!-- n:nope -->3<!-- /n -->.\n")
    with pytest.raises(ValueError, match="'nope' has no claim"):
        fill(tmp_path, claims)
    assert doc.read_text() == written + "\nAnd <!-- n:nope -->3<!-- /n -->.\n"
