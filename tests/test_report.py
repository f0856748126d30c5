"""The evidence report on a real store (tiny networks on real Ray): numbers match `estimate`, images exist
and load in a headless browser, missing tables read "not run", the CLI command writes and prints it."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from html import unescape
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from survey.analysis.decisions import decide
from survey.analysis.estimate import estimate
from survey.analysis.sections.base import METHOD_NAMES
from survey.analysis.report import (DEFINITIONS, PAPER_TABLES, build_report, evaluate_criteria, format_interval, format_number,
                             overall_verdict)
from survey.cli.report import report
from tests.conftest import CHROMIUM_FLAGS, chromium, parse_html





@pytest.fixture(scope="session")
def built(study_store, tmp_path_factory):
    study, store = study_store
    out = tmp_path_factory.mktemp("report") / "quick"
    index = build_report(store, out, study)
    return study, store, index


def test_report_is_self_contained_and_every_image_exists(built):
    _, _, index = built
    html = index.read_text()
    parsed = parse_html(html)
    assert len(parsed.images) >= 8
    for src in parsed.images:
        assert not src.startswith(("/", "http", "file:")), src
        assert (index.parent / src).is_file(), src
    assert not re.search(r"<link[^>]+stylesheet|<script[^>]+src=", html)  # CSS and scripts inline
    for title in ("Device under test", "Intended use", "Methods and parameters", "Acceptance criteria",
                  "Results with confidence intervals", "Worst cases found", "Limitations", "Provenance"):
        assert title in html
    assert "undersampled Cartesian k-space (test fixture)" in html
    assert "not run" not in html.lower()  # every table was run here


def test_report_numbers_are_the_numbers_of_estimate(built):
    study, store, index = built
    html = index.read_text()
    rows = parse_html(html).rows
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))
    checked = 0
    for definition in (d for d in DEFINITIONS if d.table in PAPER_TABLES):  # the tables this study ran
        by = ["network", *definition.by]
        expected = estimate(store, definition.table, definition.bad, where=definition.where, by=by,
                            per=definition.per, x=definition.x, y=definition.y)
        assert expected, definition.key
        assert data["estimates"][definition.key]["network"] == json.loads(json.dumps(expected, default=str))
        lines = {}
        for e in expected:
            lines.setdefault(tuple(e[c] for c in by), {})[e["method"]] = e
        for key, methods in lines.items():
            primary = next(m for m in methods.values() if m["primary"])
            wilson = methods["wilson"]
            # the primary interval first, its method named (tiny nets declare no training data: "–")
            line = [*(format_number(v) if isinstance(v, float) else str(v) for v in key), "–", "network",
                    str(primary["n"]), str(primary["k"]), str(primary["clusters"]), format_number(primary["point"]),
                    format_interval(primary["ci_low"], primary["ci_high"]), METHOD_NAMES[primary["method"]],
                    format_number(primary["upper_bound"])]
            assert any(r[:len(line)] == line for r in rows), (definition.key, line)
            found = next(r for r in rows if r[:len(line)] == line)
            assert f"Wilson {format_interval(wilson['ci_low'], wilson['ci_high'])}" in found[len(line)]
            assert primary["estimand"] in found[len(line) + 1]   # long ones folded under their gist
            # rows sharing an image (ball draws, insertions) are judged for the population of images
            shared = definition.table == "ball" or definition.key == "insertion-lost"
            assert primary["method"] == ("cluster-exact" if shared else "clopper-pearson"), definition.key
            checked += 1
    assert checked >= 10


def test_printed_commands_reproduce_the_tables_with_survey_estimate(built):
    """Every table's commands (network and reference rows) print exactly the report's estimates."""
    from survey.cli.analyze import estimate as estimate_command

    _, store, index = built
    html = index.read_text()
    printed_in_html = {unescape(c) for c in re.findall(r'<pre class="command">(.*?)</pre>', html, re.S)}
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))
    app = typer.Typer()
    app.command()(estimate_command)
    checked = set()
    for key, found in data["estimates"].items():
        for solver, command in found["commands"].items():
            assert command in printed_in_html, (key, solver)
            argv = shlex.split(command)
            assert argv[:2] == ["survey", "estimate"]
            result = CliRunner().invoke(app, [*argv[2:], "--format", "json"])
            assert result.exit_code == 0, result.output
            assert json.loads(result.output) == found[solver], (key, solver)
            checked.add((key, solver))
    # both solvers of the attack, insertion and sweep tables, including the per-curve axes
    assert {("attack-amplification", "reference"), ("insertion-lost", "reference"),
            ("sweep-falls", "network"), ("sweep-falls", "reference")} <= checked
    assert "--y ref_psnr" in data["estimates"]["sweep-falls"]["commands"]["reference"]


def test_acceptance_verdicts_follow_the_primary_upper_bound_with_holm(built):
    study, store, index = built
    results = evaluate_criteria(store, study.criteria)
    assert [r.name for r in results] == [c.name for c in study.criteria]
    family = []
    for criterion, result in zip(study.criteria, results):
        rows = estimate(store, criterion.table, criterion.bad, where=criterion.where, by=criterion.by)
        primary = [e for e in rows if e["primary"]]
        assert len(result.groups) == len(primary) == 2  # one group per network (and the one dataset)
        assert [g["upper_bound"] for g in result.groups] == [e["upper_bound"] for e in primary]
        family.append({"name": criterion.name, "limit": criterion.max_upper, "rows": rows})
    decisions = decide(family, correction="holm")
    assert [g["passed"] for r in results for g in r.groups] == [d["passed"] for d in decisions]
    for result in results:
        assert result.status == ("pass" if all(g["verdict"] == "PASS" for g in result.groups) else
                                 "fail" if any(g["verdict"] == "FAIL" for g in result.groups) else "inconclusive")
    # the ball's artefact persists almost surely around a worst case: its criterion fails
    assert results[1].status == "fail" and overall_verdict(results) == "fail"
    rows = parse_html(index.read_text()).rows
    verdicts = [r[-2:] for r in rows if r and r[0] == "C2"]   # criteria are numbered C1, C2 ... in the table
    assert verdicts == [["FAIL", "FAIL"], ["FAIL", "FAIL"]]   # raw, then after Holm


def test_missing_tables_read_not_run_and_the_recorded_study_is_used(study_store, tmp_path):
    _, store = study_store
    partial = tmp_path / "partial"
    shutil.copytree(store, partial)
    for table in ("ball", "insertions", "sweeps"):
        shutil.rmtree(partial / table)
    index = build_report(partial, tmp_path / "out")  # no study given: the runs table's copy is used
    html = index.read_text()
    for table in ("ball", "insertions", "sweeps"):
        assert f"Not run: the store holds no &#39;{table}&#39; table." in html
    assert "undersampled Cartesian k-space (test fixture)" in html  # intended use from runs.study_json
    assert "NOT RUN" in html  # the ball criterion cannot be judged
    assert all((index.parent / src).is_file() for src in parse_html(html).images)


def test_cli_report_writes_and_prints_index(study_store, tmp_path, monkeypatch):
    study, store = study_store
    partial = tmp_path / "partial"
    shutil.copytree(store, partial, ignore=shutil.ignore_patterns("ball", "insertions", "sweeps"))
    monkeypatch.chdir(tmp_path)
    index = report(study=Path(study.path), store=partial)  # direct call, as `survey demo` does
    assert index == Path("reports") / "report-test" / "index.html" and index.is_file()
    app = typer.Typer()
    app.command()(report)
    result = CliRunner().invoke(app, ["--store", str(partial), "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()   # one verdict line per criterion, then the index
    assert lines[-1] == str(tmp_path / "cli" / "index.html")
    assert all(line.split()[0] in ("PASS", "FAIL", "INCONCLUSIVE", "NOT", "ERROR") for line in lines[:-1])
    missing = CliRunner().invoke(app, ["--store", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such directory" in missing.output  # the CLI's one error path


def test_report_renders_in_a_headless_browser(built, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the browser check needs it")
    _, _, index = built
    url = index.resolve().as_uri()
    shot = tmp_path / "report.png"
    flags = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,3000", url],
                   capture_output=True, timeout=60, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (3000, 1200) and pixels.std() > 20
    dom = subprocess.run([*flags, "--virtual-time-budget=5000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-images-loaded="all"' in body, body
    count = int(re.search(r'data-image-count="(\d+)"', body).group(1))
    assert count == len(parse_html(index.read_text()).images)


def test_an_empty_store_gives_a_report_of_sections_not_run(tmp_path):
    (tmp_path / "store").mkdir()
    html = build_report(tmp_path / "store", tmp_path / "out").read_text()
    for table in ("attacks", "ball", "insertions", "sweeps"):
        assert f"Not run: the store holds no &#39;{table}&#39; table." in html
    assert "NO CRITERIA" in html and "provenance unknown" in html
    assert parse_html(html).images == []


def _failed_entries(network: str, tasks=("attack", "ball", "insertion", "sweep")) -> list[dict]:
    return [{"unit_id": f"failed-{network}-{task}", "status": "failed", "network": network, "dataset": "ellipses",
             "task": task, "rows": 0, "seconds": 0.5, "error": "Traceback ...\nRuntimeError: out of memory",
             "attempts": 3, "run_id": "r-failed", "finished_at": 1.0, "fragments": []} for task in tasks]


def test_a_network_whose_every_unit_failed_reads_no_data(study_store, tmp_path):
    """Regression: the ledger summary summed no ok unit (NULL) and `int(nan)` crashed the report."""
    from survey.store import Store

    study, store = study_store
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    writer = Store.open(copy)
    try:
        writer.record_units(_failed_entries("tiny-c"))
    finally:
        writer.close()
    html = build_report(copy, tmp_path / "out", study).read_text()
    rows = parse_html(html).rows
    assert ["attack", "tiny-c", "0", "1", "0", "0"] in rows   # ledger: 0 ok, 1 failed, 0 rows, 0 s
    assert "Network tiny-c: failed, no data" in html
    assert html.count("No data from network tiny-c") == 4   # once per table
    assert "RuntimeError: out of memory" in html
    # criteria that passed for the networks with data are not a pass: tiny-c is missing from them
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))
    assert [c["status"] for c in data["criteria"]] == ["no data", "fail"]


def test_units_retracted_by_forget_lend_no_tensors_to_worst_cases(study_store, tmp_path):
    """A `forget` interrupted after its ledger write leaves the retracted unit's fragment and tensor file on
    disk (readers still see the rows): the report must show no worst case of that unit."""
    from survey.store import Store

    study, store = study_store
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    latest = Store(copy).latest_entries()
    unit = next(u for u, e in latest.items() if e["task"] == "attack" and e["network"] == "tiny-a")
    fragments = {rel: (copy / rel).read_bytes() for rel in latest[unit]["fragments"]}
    tensors = (copy / "tensors" / f"{unit}.safetensors").read_bytes()
    writer = Store.open(copy)
    try:
        assert writer.forget([unit], "test: retracted") == 1
    finally:
        writer.close()
    for rel, data in fragments.items():   # as if the process died before deleting the old files
        (copy / rel).write_bytes(data)
    (copy / "tensors" / f"{unit}.safetensors").write_bytes(tensors)
    index = build_report(copy, tmp_path / "out", study)
    html = index.read_text()
    assert not (index.parent / "figures" / "attack_tiny-a.png").exists()
    assert (index.parent / "figures" / "attack_tiny-b.png").exists()
    assert re.search(r"tiny-b, image ellipses/\d+: the sample with the largest gain", html)
    assert not re.search(r"tiny-a, image ellipses/\d+: the sample with the largest gain", html)
    assert all((index.parent / src).is_file() for src in parse_html(html).images)
