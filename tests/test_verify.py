"""`survey verify` and `survey extract` on the committed report and extract of a real run (tests/fixtures/small/:
tests/fixtures/small/study.toml, its report and the extract its numbers need): all numbers match; one changed row of the
extract names the numbers it moves and the fragment; bad input is one line, exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from survey.analysis.manifest import Numbers, fragments
from survey.analysis.recompute import call, call_from_command
from survey.analysis.verify import load_manifest, verify
from survey.cli import app

FIXTURE = Path(__file__).parent / "fixtures" / "small"
REPORT, EXTRACT = FIXTURE / "report", FIXTURE / "extract"


def invoke(*argv: str):
    return CliRunner().invoke(app, list(argv))


@pytest.fixture(scope="module")
def manifest():
    return load_manifest(REPORT)


# -- the manifest ---------------------------------------------------------------------------------------

def test_manifest_names_code_study_weights_data_and_every_fragment(manifest):
    assert manifest["code"]["commit"] == "unknown" or len(manifest["code"]["commit"]) == 40
    assert manifest["code"]["dirty"] in (True, False, None)
    assert manifest["study"]["name"] == "small" and len(manifest["study"]["sha256"]) == 64
    assert set(manifest["networks"]) == {"dagan", "med50"}
    assert all(len(v) == 64 for v in manifest["networks"].values())
    assert any(k.startswith("brain@") for k in manifest["datasets"])
    record = json.loads((EXTRACT / "extract.json").read_text())
    assert record["source_fragments"] == manifest["fragments"]   # the extract was cut from the report's store
    assert all(len(f["sha256"]) == 64 and f["rows"] > 0 for f in manifest["fragments"].values())


def test_every_verdict_and_every_estimate_row_of_the_report_is_recorded(manifest):
    import re
    html = (REPORT / "index.html").read_text()
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))
    ids = {n["id"] for n in manifest["numbers"]}
    for i, criterion in enumerate(data["criteria"]):
        assert f"criteria/{i}/status" in ids
        values = {n["id"]: n["value"] for n in manifest["numbers"]}
        assert values[f"criteria/{i}/status"] == criterion["status"]
        for g in criterion["groups"]:
            assert any(k.startswith(f"criteria/criterion={i},") and k.endswith("/verdict") and
                       values[k] == g["verdict"] for k in ids)
    for key, found in data["estimates"].items():
        for solver in ("network", "reference"):
            for row in found[solver]:
                if found["commands"].get(solver) or key.startswith("attacks:paired"):
                    assert any(k.startswith(f"{key}/{solver}/") for k in ids), (key, solver)
    assert manifest["not_recorded"] == [] or all("detectors" in k or "rare" in k for k in manifest["not_recorded"])
    assert manifest["coverage"]["fraction"] >= 0.75   # the small run: 428 of 556 numeric cells


def test_numbers_record_each_printed_field_with_a_stable_id():
    numbers = Numbers()
    spec = call("estimate", table="t", bad="x > 1", by=["network"])
    rows = [{"network": "a", "method": "cluster-exact", "primary": True, "n": 4, "k": 1, "point": 0.25,
             "ci_low": 0.01, "ci_high": 0.8, "upper_bound": 0.7},
            {"network": "a", "method": "wilson", "primary": False, "n": 4, "k": 1, "point": 0.25,
             "ci_low": 0.05, "ci_high": 0.7}]
    numbers.rows("def", spec, rows, ["network"], "survey estimate --table t --store s")
    ids = {e["id"]: e["value"] for e in numbers.entries}
    assert ids["def/network=a/cluster-exact/point"] == "0.25"
    assert ids["def/network=a/wilson/ci_high"] == "0.7" and "def/network=a/wilson/n" not in ids
    assert len(numbers.calls) == 1 and numbers.calls[next(iter(numbers.calls))]["rows"][0] == \
        {"network": "a", "method": "cluster-exact"}


def test_a_printed_estimate_command_is_the_call_the_cli_makes():
    spec = call_from_command("survey estimate --table ball --bad \"point_gain >= 2\" --where \"radius = 0.25\" "
                             "--by network,dataset --per image --cluster volume --bootstrap 50 --store results")
    assert spec == {"function": "estimate", "kwargs": {"table": "ball", "bad": "point_gain >= 2",
                                                       "where": "radius = 0.25", "by": ["network", "dataset"],
                                                       "per": "image", "confidence": 0.95, "n_boot": 50,
                                                       "seed": 0, "x": "value", "y": "psnr", "unit": "volume"}}
    assert call_from_command("survey estimate --paired --table attacks --store r")["function"] == "paired_gain_ratio"
    assert call_from_command("survey query \"SELECT 1\" --store r") is None


# -- verify ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_verify_passes_on_the_committed_report_and_extract():
    result = invoke("verify", str(REPORT), "--store", str(EXTRACT))
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("OK: ")
    assert "DIFFERS" not in result.output and "ALTERED" not in result.output


def _change_one_row(extract: Path) -> tuple[str, str]:
    """Raise the smallest budget-search gain of dagan (a network row, below 2) tenfold, in place, so that its
    image turns bad for "gain >= 2"; returns (the fragment, the image)."""
    rel = "attacks/network=dagan/part-extract.parquet"
    table = pq.read_table(extract / rel)
    rows = table.to_pylist()
    candidates = [i for i, r in enumerate(rows) if r["search"] == "budget" and r["attacked"] == "network"
                  and r["gain"] is not None]
    i = min(candidates, key=lambda j: rows[j]["gain"])
    assert rows[i]["gain"] < 2
    gains = table.column("gain").to_pylist()
    gains[i] = gains[i] * 10
    table = table.set_column(table.schema.get_field_index("gain"), "gain",
                             pc.cast(pa.array(gains), table.schema.field("gain").type))
    pq.write_table(table, extract / rel, compression="zstd")
    return rel, rows[i]["image_id"]


@pytest.mark.slow
def test_one_changed_row_names_the_numbers_it_moves_and_the_fragment(tmp_path, manifest):
    copy = tmp_path / "extract"
    shutil.copytree(EXTRACT, copy)
    rel, _ = _change_one_row(copy)
    outcome = verify(REPORT, copy)
    assert not outcome.ok
    moved = {d["id"] for d in outcome.differ}
    assert "attack-budget-gain/network/network=dagan,budget=0.02/clopper-pearson/k" in moved, moved
    assert "criteria/criterion=1,network=dagan,dataset=brain/clopper-pearson/k" in moved, moved
    assert all("dagan" in m or m.startswith("criteria/") for m in moved), moved
    assert any(rel in line for line in outcome.altered)
    result = invoke("verify", str(REPORT), "--store", str(copy))
    assert result.exit_code == 1
    assert "DIFFERS attack-budget-gain/network/network=dagan,budget=0.02/clopper-pearson/k: report 1, store 2" \
        in result.output and rel in result.output


def test_a_folder_that_is_not_a_report_is_one_line_exit_2(tmp_path):
    result = invoke("verify", str(tmp_path), "--store", str(EXTRACT))
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "is not a report" in result.output
    assert "no such folder" in invoke("verify", str(tmp_path / "none"), "--store", str(EXTRACT)).output


def test_a_store_of_another_study_is_one_line_exit_2(tmp_path):
    copy = tmp_path / "other"
    shutil.copytree(EXTRACT, copy)
    runs = copy / "runs" / "part-extract.parquet"
    table = pq.read_table(runs)
    table = table.set_column(table.schema.get_field_index("study"), "study",
                             pc.cast(pa.array(["another"] * len(table)), table.schema.field("study").type))
    pq.write_table(table, runs)
    result = invoke("verify", str(REPORT), "--store", str(copy))
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0 and "'another'" in result.output and "'small'" in result.output
    shutil.rmtree(copy / "runs")
    result = invoke("verify", str(REPORT), "--store", str(copy))
    assert result.exit_code == 2 and "no runs table" in result.output


# -- extract --------------------------------------------------------------------------------------------

def test_the_committed_extract_is_small_and_a_store(manifest):
    size = sum(f.stat().st_size for f in EXTRACT.rglob("*") if f.is_file())
    assert size < 3_000_000
    record = json.loads((EXTRACT / "extract.json").read_text())
    assert record["fragments"] == fragments(EXTRACT)   # as written: nothing changed since
    result = invoke("query", "SELECT count(*) AS n FROM attacks", "--store", str(EXTRACT), "--format", "json")
    assert result.exit_code == 0 and json.loads(result.output)[0]["n"] > 0


@pytest.mark.slow
def test_extract_of_the_extract_keeps_every_number_and_the_same_bytes(tmp_path):
    out = tmp_path / "again"
    result = invoke("extract", str(EXTRACT), "--report", str(REPORT), "--out", str(out))
    assert result.exit_code == 0, result.output
    record = json.loads((out / "extract.json").read_text())
    original = json.loads((EXTRACT / "extract.json").read_text())
    assert {k: v["sha256"] for k, v in record["fragments"].items()} == \
        {k: v["sha256"] for k, v in original["fragments"].items()}


def test_extract_refuses_a_folder_that_is_not_an_extract(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = invoke("extract", str(EXTRACT), "--out", str(tmp_path))
    assert result.exit_code == 2 and "not an extract" in result.output
    assert (tmp_path / "keep.txt").is_file()


def test_verify_and_extract_have_help():
    for name in ("verify", "extract"):
        result = invoke(name, "--help")
        assert result.exit_code == 0 and "Example:" in result.output


def test_a_fresh_report_verifies_on_its_own_store_and_its_extract(study_store, tmp_path):
    """A report built here (the tiny report study, every paper table): manifest beside index.html, its visible
    part in the provenance section, every fragment hashed; verify passes on the store and on its extract."""
    from survey.analysis.report import build_report

    study, store = study_store
    index = build_report(store, tmp_path / "report", study, n_boot=200)
    manifest = load_manifest(tmp_path / "report")
    assert manifest["fragments"] == fragments(store)
    assert "survey verify" in index.read_text() and "Manifest (manifest.json" in index.read_text()
    outcome = verify(tmp_path / "report", store)
    assert outcome.ok and outcome.checked == len(manifest["numbers"]) > 100, outcome.differ[:3]
    result = invoke("extract", str(store), "--report", str(tmp_path / "report"), "--out", str(tmp_path / "x"))
    assert result.exit_code == 0, result.output
    assert verify(tmp_path / "report", tmp_path / "x").ok
