"""The README's main job end to end, as a user runs it: `survey demo` on the real quick study leaves
Parquet tables for all four tests and an evidence report whose figures render in a real browser."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import CHROMIUM_FLAGS, chromium

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # the whole quick study on Ray: many minutes


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    store, reports = root / "results", root / "reports"
    result = subprocess.run([sys.executable, "-m", "survey.cli.main", "demo", "--store", str(store),
                             "--reports", str(reports)], capture_output=True, text=True, timeout=1400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return store, reports / "quick" / "index.html", result.stdout


def test_demo_leaves_tables_for_all_four_tests(demo):
    store, index, stdout = demo
    assert str(index) in stdout.replace("\n", "")
    for table in ("attacks", "ball", "insertions", "sweeps", "runs"):
        rows = sum(pq.read_metadata(f).num_rows for f in (store / table).rglob("*.parquet"))
        assert rows > 0, table
    networks = {p.name for p in (store / "attacks").iterdir()}
    assert networks == {"network=dagan", "network=med50", "network=dncnn"}
    from survey.analysis.db import query
    # worst cases at matched budgets: network, reference and H on the same images and budgets
    budget = query(store, "SELECT attacked, network, count(DISTINCT image_id) AS images, list(DISTINCT budget "
                          "ORDER BY budget) AS budgets FROM attacks WHERE search = 'budget' GROUP BY ALL")
    assert set(budget["attacked"]) == {"network", "reference", "H"}
    for _, group in budget.groupby("network"):
        assert group["images"].nunique() == 1 and group["budgets"].map(tuple).nunique() == 1
    # ball points carry their own gain for the network, H and (on the reference draws) the reference
    ball = query(store, "SELECT count(point_gain) AS net, count(h_point_gain) AS h, count(ref_point_gain) AS ref "
                        "FROM ball")
    assert (ball.iloc[0] > 0).all()
    # one rare-event curve: P(bad) under thermal noise at two SNRs, network and H
    rare = query(store, "SELECT DISTINCT target, severity FROM rare")
    assert set(rare["target"]) == {"network", "H"} and rare["severity"].nunique() == 2


def test_demo_prints_three_valued_verdicts_and_fails_only_with_evidence(demo):
    """The demo's 3-7 images per dataset cannot pass a 5% limit: criteria without evidence of harm read
    INCONCLUSIVE (with the images that would decide them), FAIL only where a lower bound exceeds the limit."""
    import json

    store, index, stdout = demo
    assert "INCONCLUSIVE" in stdout and "would decide" in stdout
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', index.read_text(), re.S).group(1))
    for criterion in data["criteria"]:
        groups = criterion["groups"]
        assert criterion["status"] in ("pass", "fail", "inconclusive", "no data"), criterion["status"]
        if criterion["status"] == "fail":
            assert any(g["verdict"] == "FAIL" and g["lower_bound"] > g["limit"] for g in groups), criterion["name"]
        for g in groups:
            if g["verdict"] == "FAIL":
                assert g["lower_bound"] > g["limit"]
    from survey.analysis.db import query
    units = query(store, "SELECT dataset, count(DISTINCT volume_id) AS volumes, count(*) - count(volume_id) AS "
                         "missing FROM ball GROUP BY dataset ORDER BY dataset")
    assert units.set_index("dataset")["missing"].max() == 0
    assert int(units.set_index("dataset").loc["brain", "volumes"]) == 1   # the template: one volume
    assert set(query(store, "SELECT DISTINCT centres FROM ball")["centres"]) == {"own"}


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_demo_report_screenshot_shows_the_figures(demo, tmp_path):
    _, index, _ = demo
    html = index.read_text()
    figures = re.findall(r'<figure class="image" id="(figure-\d+)">', html)
    assert len(figures) >= 6  # instability, ball, sweep, insertion figures and image grids
    # A copy of the page with its text and tables folded away, so that the figures fit in one screenshot
    # (a headless screenshot is limited to ~8000 px; the full report is longer).
    figures_only = index.with_name("figures-only.html")
    hide = "<style>table, p, pre, ul, ol, h1, h2, h3, figcaption, .summary, dl {display: none !important}</style>"
    figures_only.write_text(html.replace("</head>", hide + "</head>", 1))
    flags = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    url = figures_only.resolve().as_uri()
    dom = subprocess.run([*flags, "--window-size=1200,1000", "--virtual-time-budget=5000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-images-loaded="all"' in body
    boxes = [tuple(map(int, b.split(","))) for b in re.search(r'data-image-boxes="([^"]+)"', body).group(1).split(";")]
    assert len(boxes) >= len(figures)
    height = min(max(y + h for _, y, _, h in boxes) + 20, 8000)
    shot = tmp_path / "figures.png"
    subprocess.run([*flags, f"--screenshot={shot}", f"--window-size=1200,{height}", url],
                   capture_output=True, timeout=60, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    shown = [box for box in boxes if box[1] + box[3] <= pixels.shape[0]]
    assert len(shown) >= 6
    for x, y, w, h in shown:  # every figure in the screenshot shows a drawn image, not blank page
        assert pixels[y:y + h, x:x + w].std() > 20, (x, y, w, h)
