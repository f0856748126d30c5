"""The report as a reviewer reads it, rendered by headless Chromium from a small real store: at 1400 px no element
is wider than the page column and the page does not scroll sideways; `survey report --pdf` prints A4 pages whose
first page holds the verdict table; without Chromium, --pdf stops before any work."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from survey.analysis.pdf import find_browser, section_pages, write_pdf
from survey.analysis.report import build_report
from survey.cli.report import report
from survey.store import Store
from tests.conftest import CHROMIUM_FLAGS
from tests.stand_ins import StudyStandIn as _Study

IMAGES, DRAWS = 6, 10
#: net-a: images 0 and 1 bad on every draw (its criterion fails); net-b: none bad (too few images to pass)
BAD = {"net-a": {0, 1}, "net-b": set()}
CRITERIA = [{"name": "Ball points are rarely bad perturbations", "table": "ball", "bad": "point_gain >= 2",
             "where": "center = 'worst-case'", "max_upper": 0.1}]

pytestmark = pytest.mark.slow   # two browser launches and two PDF prints: about 20-40 s here




def _store(root: Path) -> Path:
    store = Store.open(root)
    try:
        entries = []
        for network, bad in BAD.items():
            for i in range(IMAGES):
                unit = f"{network}-{i}"
                rows = [{"unit_id": unit, "network": network, "dataset": "ellipses", "task": "ball",
                         "image_id": f"ellipses/{i}", "center": "worst-case", "radius": 0.25, "draw": d,
                         "center_change_rel": 0.2, "out_change_rel": 0.15 if i in bad else 0.01,
                         "artefact_cos": 0.9 if i in bad else 0.1, "point_gain": 3.0 if i in bad else 1.0,
                         "ref_point_gain": 1.0, "h_point_gain": 1.0} for d in range(DRAWS)]
                entries.append({"unit_id": unit, "status": "ok", "network": network, "dataset": "ellipses",
                                "task": "ball", "rows": DRAWS, "seconds": 0.1, "error": None, "attempts": 1,
                                "run_id": "r", "finished_at": 1.0, "fragments": [store.write_rows("ball", network, rows)]})
        store.record_units(entries)
    finally:
        store.close()
    return root


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    if find_browser() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the render checks need it")
    root = tmp_path_factory.mktemp("render")
    study = _Study({"name": "render", "criteria": CRITERIA,
                    "tasks": [{"name": "ball", "params": {"level": 0.02, "radius": [0.25], "draws": DRAWS,
                                                          "attack": {"iterations": 20, "restarts": 1}}}]})
    index = build_report(_store(root / "store"), root / "report", study, n_boot=100)
    return index, write_pdf(index)


def _layout(page: Path, tmp_path: Path) -> dict[str, str]:
    """The body attributes the report's load script writes (scroll size, elements wider than the page column),
    read back by headless Chromium at 1400 x 1000 px."""
    dom = subprocess.run([find_browser(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--window-size=1400,1000", "--virtual-time-budget=5000", "--dump-dom",
                          page.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    return dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', body))


def test_nothing_is_wider_than_the_page_at_1400_px(rendered, tmp_path):
    index, _ = rendered
    layout = _layout(index, tmp_path)
    assert int(layout["data-scroll-width"]) <= 1400
    assert layout["data-wide-count"] == "0", layout["data-wide"]
    # control: the same check sees a table that sticks out of the page
    wide = index.parent / "wide.html"
    wide.write_text(index.read_text().replace(
        "<footer>", '<table class="data"><tr><td style="white-space: nowrap">' + "x" * 400 + "</td></tr></table><footer>"))
    assert int(_layout(wide, tmp_path)["data-wide-count"]) > 0


def test_page_one_of_the_pdf_holds_the_verdicts(rendered):
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext is not installed (apt-get install -y poppler-utils)")
    index, pdf = rendered
    assert pdf == index.parent / "report.pdf" and pdf.read_bytes().startswith(b"%PDF")

    def text(page: int) -> str:
        return subprocess.run(["pdftotext", "-f", str(page), "-l", str(page), "-layout", str(pdf), "-"],
                              capture_output=True, text=True, check=True).stdout

    first = " ".join(text(1).split())
    for words in ("Verdict per acceptance criterion", "net-a", "net-b", "FAIL", "INCONCLUSIVE", "would decide",
                  "Headline numbers", "page 1 of"):
        assert words in first, words
    # the criterion's name wraps in its narrow column: its words in order, other columns' text between lines
    assert re.search(r"C1\s.*?Ball.*?points.*?are.*?rarely.*?bad.*?perturbations", first), first[:800]
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert "(A4)" in info
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    # the contents list carries each section's page, as the PDF's own destinations say
    starts = section_pages(pdf, ["device", "methods", "criteria", "results", "provenance"])
    assert list(starts.values()) == sorted(starts.values()) and len(starts) == 5 and max(starts.values()) <= pages
    contents = " ".join(text(2).split())
    assert f"Acceptance criteria {starts['criteria']}" in contents, contents[:600]
    # what the page folds, the PDF prints: a task's parameters, every secondary interval
    everything = " ".join(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                                         check=True).stdout.split())
    assert "iterations=20, restarts=1" in everything and "image bootstrap [" in everything
    assert "<details open" not in index.read_text()


def test_pdf_without_a_browser_stops_before_any_work(rendered, tmp_path, monkeypatch):
    index, _ = rendered
    store = index.parent.parent / "store"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    app = typer.Typer()
    app.command()(report)
    result = CliRunner().invoke(app, ["--store", str(store), "--out", str(tmp_path / "out"), "--pdf"])
    assert result.exit_code == 2 and "no Chromium" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
