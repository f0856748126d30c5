"""Decisions and primary intervals wired through the report: criteria judged on the primary interval's one-sided
upper bound with Holm (or, flagged in red, no) family-wise correction, raw and adjusted verdicts shown; ball-like
clustered rows get cluster-exact intervals and a per-image distribution; two datasets of one kind stay apart."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from survey.analysis.decisions import decide
from survey.analysis.estimate import estimate
from survey.analysis.report import build_report, evaluate_criteria, overall_verdict
from survey.spec import StudyError, parse_study
from survey.store import Store
from tests.conftest import write_study
from tests.stand_ins import StudyStandIn as _Study

IMAGES = 7
DRAWS = 20
# net-a: two of seven images fail on every draw, the others never (all-or-nothing images: correlated draws);
# net-b: no bad draw at all
BAD_IMAGES = {"net-a": {0, 1}, "net-b": set()}
PERSISTS = "out_change_rel >= 0.5 * center_change_rel AND artefact_cos >= 0.5"




def _ball_store(root, datasets=("ellipses",)):
    store = Store.open(root)
    try:
        entries = []
        for network, bad in BAD_IMAGES.items():
            for dataset in datasets:
                rows = []
                for i in range(IMAGES):
                    unit = f"{network}-{dataset}-{i}"
                    rows += [{"unit_id": unit, "network": network, "dataset": dataset, "task": "ball",
                              "image_id": f"{dataset}/{i}", "center": "worst-case", "radius": 0.25, "draw": d,
                              "center_change_rel": 0.2, "out_change_rel": 0.15 if i in bad else 0.01,
                              "artefact_cos": 0.9 if i in bad else 0.1, "point_gain": 3.0 if i in bad else 1.0,
                              "h_point_gain": 1.0} for d in range(DRAWS)]
                fragment = store.write_rows("ball", network, rows)
                entries += [{"unit_id": f"{network}-{dataset}-{i}", "status": "ok", "network": network,
                             "dataset": dataset, "task": "ball", "rows": DRAWS, "seconds": 0.1, "error": None,
                             "attempts": 1, "run_id": "r", "finished_at": 1.0, "fragments": [fragment]}
                            for i in range(IMAGES)]
        store.record_units(entries)
    finally:
        store.close()
    return root


@pytest.fixture(scope="module")
def ball_store(tmp_path_factory):
    return _ball_store(tmp_path_factory.mktemp("decisions") / "store")


def _data(html: str) -> dict:
    return json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))


def test_clustered_rows_get_a_cluster_exact_primary_wider_than_clopper_pearson(ball_store):
    rows = estimate(ball_store, "ball", PERSISTS, by=["network", "dataset"])
    for network in BAD_IMAGES:
        group = [r for r in rows if r["network"] == network]
        assert group[0]["primary"] and [r["primary"] for r in group].count(True) == 1
        assert group[0]["method"] == "cluster-exact" and group[0]["clusters"] == IMAGES
        assert group[0]["estimand"] == "P(bad) for the population of images like these (ellipses): mean per-image probability"
    a = {r["method"]: r for r in rows if r["network"] == "net-a"}
    # 2 of 7 images bad on every draw: 40 of 140 draws; correlated draws make the image-level interval wider
    assert a["cluster-exact"]["k"] == 2 * DRAWS and a["cluster-exact"]["point"] == pytest.approx(2 / 7)
    width = {m: a[m]["ci_high"] - a[m]["ci_low"] for m in ("cluster-exact", "clopper-pearson")}
    assert width["cluster-exact"] > 1.5 * width["clopper-pearson"]
    assert a["cluster-exact"]["upper_bound"] > a["clopper-pearson"]["upper_bound"]
    # k = 0 over 7 images: the bound is the image-level one, 1 - 0.05^(1/7) ~ 0.348, however many draws
    b = next(r for r in rows if r["network"] == "net-b" and r["primary"])
    assert b["k"] == 0 and b["upper_bound"] >= 1 - 0.05 ** (1 / 7) - 1e-9
    assert b["upper_bound"] == pytest.approx(1 - 0.05 ** (1 / 7), rel=1e-3)
    cp = next(r for r in rows if r["network"] == "net-b" and r["method"] == "clopper-pearson")
    assert cp["upper_bound"] < 0.03   # 140 draws counted as independent: far too optimistic


def _criteria(limit: float) -> list[dict]:
    """Two criteria on net-b alone (k = 0 of 7 images): each passes alone at `limit` ~ 0.38 (bound 0.348), but
    not after Holm over the two (the bound at 97.5% is 1 - 0.025^(1/7) ~ 0.41)."""
    return [{"name": "Artefact persists rarely", "table": "ball", "bad": PERSISTS, "where": "network = 'net-b'",
             "max_upper": limit},
            {"name": "Artefact is rarely aligned", "table": "ball", "bad": "artefact_cos >= 0.5",
             "where": "network = 'net-b'", "max_upper": limit}]


def test_holm_and_none_verdicts_in_evaluate_criteria(ball_store):
    holm = evaluate_criteria(ball_store, _criteria(0.38))
    none = evaluate_criteria(ball_store, _criteria(0.38), correction="none")
    for r in holm + none:
        assert r.by == ["network", "dataset"] and len(r.groups) == 1   # datasets kept apart by default
        g = r.groups[0]
        assert g["method"] == "cluster-exact" and g["family_size"] == 2
        assert g["upper_bound"] == pytest.approx(1 - 0.05 ** (1 / 7), rel=1e-3) and g["passed_raw"]
    # no bad draw at all: after Holm the bound no longer clears the limit, but nothing shows harm either
    assert [r.status for r in holm] == ["inconclusive"] * 2 and [r.status_raw for r in holm] == ["pass", "pass"]
    assert [r.status for r in none] == ["pass", "pass"] and overall_verdict(none) == "pass"
    assert overall_verdict(holm) == "inconclusive"   # the overall verdict follows the adjusted decisions
    g = holm[0].groups[0]
    assert g["verdict"] == "INCONCLUSIVE" and g["lower_bound"] == 0.0 and not g["failed"]
    # 8 images with no bad one pass at 97.5%: 1 - 0.025^(1/8) = 0.369 < 0.38 (7 give 0.41)
    assert g["decide_clusters"] == 8 and g["decide_more"] == 1
    # the same numbers as decide() on the primary rows
    family = [{"name": c["name"], "limit": c["max_upper"],
               "rows": estimate(ball_store, "ball", c["bad"], where=c["where"], by=["network", "dataset"])}
              for c in _criteria(0.38)]
    expected = decide(family)
    assert [g["p_adjusted"] for r in holm for g in r.groups] == pytest.approx([d["p_adjusted"] for d in expected])
    with pytest.raises(ValueError, match="correction"):
        evaluate_criteria(ball_store, _criteria(0.38), correction="bonferroni")


@pytest.mark.parametrize("correction", ["holm", "none"])
def test_the_report_shows_raw_and_adjusted_verdicts_and_flags_no_correction(ball_store, tmp_path, correction):
    study = _Study({"name": "decisions", "criteria": _criteria(0.38), "correction": correction,
                    "tasks": [{"name": "ball", "params": {}}]})
    html = build_report(ball_store, tmp_path / "out", study, n_boot=200).read_text()
    data = _data(html)
    assert data["correction"] == correction
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)
    verdicts = [re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)[-2:] for r in rows if "Artefact persists rarely" in r]
    if correction == "holm":
        assert verdicts == [["PASS", "INCONCLUSIVE"]]   # raw, then adjusted
        assert "verdict (Holm)" in html and "Holm&#39;s step-down over all 2" in html
        assert "summary inconclusive" in html and 'class="warning"' not in html
        assert "up to 8 images each would decide them at the observed rates" in html
        assert [c["status"] for c in data["criteria"]] == ["inconclusive", "inconclusive"]
        assert [c["status_raw"] for c in data["criteria"]] == ["pass", "pass"]
    else:
        assert verdicts == [["PASS", "PASS"]]
        warnings = re.findall(r'<p class="warning">(.*?)</p>', html, re.S)
        assert len(warnings) == 2 and all("NO FAMILY-WISE CORRECTION" in w for w in warnings)  # summary, criteria
        assert "summary pass" in html


def test_report_tables_lead_with_the_primary_interval_and_show_the_per_image_distribution(ball_store, tmp_path):
    study = _Study({"name": "decisions", "networks": [{"name": "net-a", "factory": "x.py:f", "trained_on": ["ellipses"]},
                                                      {"name": "net-b", "factory": "x.py:f", "trained_on": ["brain"]}],
                    "datasets": [{"name": "ellipses"}], "tasks": [{"name": "ball", "params": {}}]})
    index = build_report(ball_store, tmp_path / "out", study, n_boot=200)
    html = index.read_text()
    data = _data(html)
    assert data["estimates"]["ball-point-gain"]["network"][0]["primary"]
    lines = [re.findall(r"<td[^>]*>(.*?)</td>", r, re.S) for r in re.findall(r"<tr>(.*?)</tr>", html, re.S)]
    a = next(line for line in lines if line[:2] == ["net-a", "0.25"])
    b = next(line for line in lines if line[:2] == ["net-b", "0.25"])
    assert a[2] == "in-distribution" and b[2] == "out-of-distribution"
    primary = next(r for r in data["estimates"]["ball-point-gain"]["network"] if r["network"] == "net-a")
    assert a[8] == f"[{primary['ci_low']:.4g}, {primary['ci_high']:.4g}]" and a[9] == "cluster-exact"
    assert a[11].startswith("Clopper–Pearson [") and a[12] == "P(bad) for the population of images like these (ellipses): mean per-image probability"
    assert "interval (primary)" in html and "Assumptions: cluster-exact: images are independent draws" in html
    # the per-image distribution: 2 of 7 images of net-a above every level
    per_image = data["estimates"]["ball-point-gain:per-image"]
    assert {(r["network"], r["level"], r["above"], r["images"]) for r in per_image["network"] if r["network"] == "net-a"} == \
        {("net-a", level, 2, IMAGES) for level in (0.01, 0.1, 0.5)}
    assert (index.parent / "figures" / "per_image_ball-point-gain.png").is_file()
    assert "--per image --distribution" in per_image["commands"]["network"]


def test_survey_estimate_distribution_and_the_primary_mark(ball_store):
    from survey.cli.analyze import estimate as estimate_command

    app = typer.Typer()
    app.command()(estimate_command)
    runner = CliRunner()
    args = ["--table", "ball", "--bad", PERSISTS, "--by", "network", "--store", str(ball_store)]
    result = runner.invoke(app, [*args, "--per", "image", "--distribution", "--levels", "0.1,0.5",
                                 "--quantiles", "0.5,0.9", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["network"], r["level"], r["above"]) for r in rows] == [("net-a", 0.1, 2), ("net-a", 0.5, 2),
                                                                       ("net-b", 0.1, 0), ("net-b", 0.5, 0)]
    assert rows[0]["q0.9"] == pytest.approx(np.quantile([1, 1, 0, 0, 0, 0, 0], 0.9))
    shown = runner.invoke(app, [*args, "--distribution"])
    assert shown.exit_code == 0 and "fraction" in shown.output and "net-a" in shown.output
    table = runner.invoke(app, [*args, "--wide"])   # every method side by side, the primary one marked *
    assert table.exit_code == 0 and "primary" in table.output and "cluster-exact" in table.output
    assert " *" in table.output and "mean per-image probability" in table.output
    for bad_args in (["--distribution", "--per", "curve"], ["--distribution", "--levels", "a,b"],
                     ["--distribution", "--slopes"]):
        refused = runner.invoke(app, [*args, *bad_args])
        assert refused.exit_code == 2 and refused.output.startswith("error: "), refused.output
    assert "--distribution" in runner.invoke(app, ["--help"]).output


def test_correction_and_dataset_kind_in_the_study_file(tmp_path):
    base = {"name": "s", "networks": [{"name": "tiny", "factory": "tiny_net.py:build",
                                       "physics": {"kind": "mri", "size": 16, "ratio": 0.5}}],
            "tasks": [{"name": "sweep", "params": {"ratios": [0.2, 0.5]}}]}
    study = parse_study({**base, "datasets": [{"name": "ellipses"}]})
    assert study.correction == "holm" and study.datasets[0].loader == "ellipses"
    assert study.criteria == [] and parse_study({**base, "datasets": [{"name": "ellipses"}],
                                                 "correction": "none"}).correction == "none"
    with pytest.raises(StudyError, match="correction"):
        parse_study({**base, "datasets": [{"name": "ellipses"}], "correction": "bonferroni"})
    two = parse_study({**base, "datasets": [{"name": "hospital-a", "kind": "folder", "params": {"path": "a"}},
                                            {"name": "hospital-b", "kind": "folder", "params": {"path": "b"}}]})
    assert [d.loader for d in two.datasets] == ["folder", "folder"]
    with pytest.raises(StudyError, match="duplicate dataset names"):
        parse_study({**base, "datasets": [{"name": "folder", "params": {"path": "a"}},
                                          {"name": "folder", "params": {"path": "b"}}]})
    with pytest.raises(StudyError, match="unknown dataset kind 'scans'"):
        parse_study({**base, "datasets": [{"name": "hospital-a", "kind": "scans"}]})
    with pytest.raises(StudyError, match="give `kind`"):
        parse_study({**base, "datasets": [{"name": "hospital-a"}]})


def test_unit_ids_of_studies_without_kind_are_unchanged():
    from survey.plan import unit_id

    base = {"name": "s", "networks": [{"name": "tiny", "factory": "tiny_net.py:build",
                                       "physics": {"kind": "mri", "size": 16, "ratio": 0.5}}],
            "tasks": [{"name": "sweep", "params": {"ratios": [0.2, 0.5]}}]}
    plain = parse_study({**base, "datasets": [{"name": "ellipses"}]})
    explicit = parse_study({**base, "datasets": [{"name": "ellipses", "kind": "ellipses"}]})
    # the id as computed before datasets had a kind (the spec's fields then)
    import hashlib

    old = json.dumps({"study": "s", "seed": 0, "network": "tiny",
                      "dataset": {"name": "ellipses", "split": "test", "count": None, "size": None, "params": {}},
                      "task": "sweep", "params": {}, "images": [0, 4], "repeat": 0}, sort_keys=True, default=str)
    expected = hashlib.sha256(old.encode()).hexdigest()[:24]
    assert unit_id(plain, "tiny", "ellipses", "sweep", {}, 0, 4, 0) == expected
    assert unit_id(explicit, "tiny", "ellipses", "sweep", {}, 0, 4, 0) == expected


FOLDERS_STUDY = """
name = "two-hospitals"
seed = 1
store = "results"

[[networks]]
name = "tiny"
factory = "tiny_net.py:build"
physics = { kind = "mri", size = 16, ratio = 0.5, mask = "uniform-lines", seed = 0 }
trained_on = ["hospital-a"]

[[datasets]]
name = "hospital-a"
kind = "folder"
params = { path = "scans-a" }

[[datasets]]
name = "hospital-b"
kind = "folder"
params = { path = "scans-b" }

[[tasks]]
name = "insertion"
images_per_unit = 3
params = { detail = "blob", size = 4, contrast = 0.4, count = 2 }

[[criteria]]
name = "Details survive"
table = "insertions"
bad = "NOT recovered"
max_upper = 0.99
"""


def test_two_folder_datasets_of_one_kind_run_and_stay_apart(tmp_path, ray_local):
    from survey.engine.scheduler import run_study
    from survey.spec import load_study

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:24, :24]
    for folder, shift in (("scans-a", 0.0), ("scans-b", 0.3)):
        (tmp_path / folder).mkdir()
        for i in range(3):
            disc = ((yy - 12) ** 2 + (xx - 12) ** 2 < (6 + i) ** 2).astype(np.float32)
            np.save(tmp_path / folder / f"slice{i}.npy", disc * (0.6 + shift) + 0.05 * rng.random((24, 24)))
    study = load_study(write_study(tmp_path, FOLDERS_STUDY))
    summary = run_study(study, store_dir=tmp_path / "results")
    assert summary.failed == 0 and summary.done == summary.planned == 2
    rows = estimate(tmp_path / "results", "insertions", "NOT recovered", by=["network", "dataset"])
    primary = [r for r in rows if r["primary"]]
    assert [r["dataset"] for r in primary] == ["hospital-a", "hospital-b"]
    assert all(r["clusters"] == 3 for r in primary)
    assert primary[1]["estimand"].startswith("P(bad) for the population of volumes like these (hospital-b")  # a top-level slice is its own volume
    html = build_report(tmp_path / "results", tmp_path / "report", study, n_boot=100).read_text()
    trs = re.findall(r"<tr>(.*?)</tr>", html, re.S)
    lines = [re.findall(r"<td[^>]*>(.*?)</td>", r, re.S) for r in trs]
    assert any(line[:4] == ["tiny", "hospital-a", "blob", "in-distribution"] for line in lines)
    assert any(line[:4] == ["tiny", "hospital-b", "blob", "out-of-distribution"] for line in lines)
    # the criteria table names each criterion C1, C2 ... (its name in the cell's title)
    groups = [line[1] for tr, line in zip(trs, lines) if 'title="Details survive"' in tr]
    assert groups == ["network=tiny, dataset=hospital-a", "network=tiny, dataset=hospital-b"]
