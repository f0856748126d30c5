"""Units of independence: images carry their volume and subject (survey.data ImageId), rows carry volume_id /
subject_id, and `estimate(unit=...)` / `survey estimate --cluster` speak for the population of that unit.

The planted case: volumes of nearly identical slices (every slice of a volume has the volume's own P(bad)),
drawn from a population with mean P(bad) 0.3. Clustering at the image treats 48 correlated slices as 48
independent images and its intervals miss the population value over volumes; clustering at the volume holds it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from survey.analysis.estimate import carried_units, estimate, resolve_unit
from survey.cli import app
from survey.data import load_dataset
from survey.data.base import ImageId, attach_units

REPS, VOLUMES, SLICES, DRAWS, MEAN = 300, 8, 6, 10, 0.3


def _write(root: Path, table: str, network: str, columns: dict) -> None:
    folder = root / table / f"network={network}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), folder / f"part-{uuid.uuid4().hex}.parquet")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """REPS independent studies (column rep) of VOLUMES volumes x SLICES slices x DRAWS draws; a volume's
    P(bad) p_v ~ Beta(0.6, 1.4) (mean 0.3), every slice of it the same p_v; one row per draw (ball-like) and
    one row per image (attack-like, bad with probability p_v)."""
    rng = np.random.default_rng(11)
    p_v = rng.beta(MEAN * 2, (1 - MEAN) * 2, size=(REPS, VOLUMES))
    rep, vol, img = np.meshgrid(np.arange(REPS), np.arange(VOLUMES), np.arange(SLICES), indexing="ij")
    p_img = p_v[rep, vol]
    draws = rng.random((REPS, VOLUMES, SLICES, DRAWS)) < p_img[..., None]
    image_id = np.char.add(np.char.add(np.char.add("r", rep.astype(str)), np.char.add("/v", vol.astype(str))),
                           np.char.add("/z", img.astype(str)))
    volume_id = np.char.add(np.char.add("r", rep.astype(str)), np.char.add("/v", vol.astype(str)))
    root = tmp_path_factory.mktemp("units") / "store"
    flat = lambda a, k=DRAWS: np.repeat(a.ravel(), k)  # noqa: E731
    _write(root, "ball", "net", {"network": ["net"] * draws.size, "dataset": ["vols"] * draws.size,
                                 "rep": flat(rep), "image_id": flat(image_id), "volume_id": flat(volume_id),
                                 "bad": draws.ravel()})
    once = rng.random((REPS, VOLUMES, SLICES)) < p_img
    _write(root, "attacks", "net", {"network": ["net"] * once.size, "dataset": ["vols"] * once.size,
                                    "rep": rep.ravel(), "image_id": image_id.ravel(), "volume_id": volume_id.ravel(),
                                    "bad": once.ravel()})
    return root


def _coverage(rows, truth=MEAN):
    primary = [r for r in rows if r["primary"]]
    assert len(primary) == REPS
    return float(np.mean([r["ci_low"] <= truth <= r["ci_high"] for r in primary])), primary


@pytest.mark.parametrize("table, per", [("ball", "row"), ("attacks", "image")])
def test_volume_clusters_cover_the_population_value_where_image_clusters_do_not(planted, table, per):
    by_volume, vol_rows = _coverage(estimate(planted, table, "bad", by=["rep"], per=per, unit="volume", n_boot=10))
    by_image, img_rows = _coverage(estimate(planted, table, "bad", by=["rep"], per=per, unit="image", n_boot=10))
    assert by_volume >= 0.92, by_volume
    assert by_image < 0.85, by_image
    assert all(r["unit"] == "volume" and r["clusters"] == VOLUMES for r in vol_rows)
    assert all(r["unit"] == "image" and r["clusters"] == VOLUMES * SLICES for r in img_rows)
    assert vol_rows[0]["estimand"].startswith("P(bad) for the population of volumes like these (vols)")
    # the default is the coarsest unit the rows carry with at least 2 clusters: the volume
    default = estimate(planted, table, "bad", by=["rep"], per=per, n_boot=10, where="rep < 3")
    assert {r["unit"] for r in default} == {"volume"}


def test_the_default_unit_falls_back_to_the_image_with_one_volume_and_the_estimand_says_so(tmp_path):
    n = 40
    _write(tmp_path, "ball", "net", {"network": ["net"] * n, "dataset": ["brain"] * n,
                                     "image_id": [f"brain/z{i % 4}" for i in range(n)],
                                     "volume_id": ["brain/icbm2009a"] * n, "subject_id": ["icbm"] * n,
                                     "bad": [i % 7 == 0 for i in range(n)]})
    with_con = __import__("survey.analysis.db", fromlist=["connect"]).connect(tmp_path)
    try:
        assert carried_units(with_con, "ball") == {"image": 4, "volume": 1, "subject": 1}
        assert resolve_unit(with_con, "ball", None) == "image"
    finally:
        with_con.close()
    row = next(r for r in estimate(tmp_path, "ball", "bad") if r["primary"])
    assert row["unit"] == "image" and "every image is a slice of one volume of one subject (icbm)" in row["estimand"]
    assert "not other volumes or subjects" in row["estimand"]


def test_unknown_or_missing_cluster_units_are_one_line_exit_2_naming_the_units_present(planted):
    runner = CliRunner()
    for unit, expected in (("patient", "unknown cluster unit 'patient'"),
                           ("subject", "the rows of 'ball' do not carry subject_id")):
        result = runner.invoke(app, ["estimate", "--table", "ball", "--bad", "bad", "--cluster", unit,
                                     "--store", str(planted)])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "image, volume" in lines[0], lines
    ok = runner.invoke(app, ["estimate", "--table", "ball", "--bad", "bad", "--where", "rep = 0", "--cluster",
                             "volume", "--store", str(planted), "--format", "json"])
    assert ok.exit_code == 0, ok.output
    assert '"unit": "volume"' in ok.output


def test_a_folder_of_volumes_gives_each_slice_its_parent_folder_as_volume(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for v in range(3):
        (tmp_path / "data" / f"patient{v}").mkdir(parents=True)
        base = rng.random((24, 24))
        for z in range(2):
            Image.fromarray((255 * (base + 0.01 * z).clip(0, 1)).astype(np.uint8)).save(
                tmp_path / "data" / f"patient{v}" / f"slice{z}.png")
    np.save(tmp_path / "data" / "stack.npy", rng.random((3, 24, 24)))
    Image.fromarray((255 * rng.random((24, 24))).astype(np.uint8)).save(tmp_path / "data" / "loose.png")
    found = load_dataset("folder", size=16, path=str(tmp_path / "data"))
    volumes = dict(zip(map(str, found.ids), found.volumes))
    assert volumes["folder/patient1/slice0.png"] == volumes["folder/patient1/slice1.png"] == "folder/patient1"
    assert len({volumes[f"folder/patient{v}/slice0.png"] for v in range(3)}) == 3
    assert {volumes[f"folder/stack.npy#{i}"] for i in range(3)} == {"folder/stack.npy"}   # a stack is a volume
    assert volumes["folder/loose.png"] == "folder/loose.png"   # at the top level: its own volume
    rows = attach_units([{"image_id": i, "x": 1} for i in found.ids] + [{"x": 2}], found.ids)
    by_id = {str(r["image_id"]): r for r in rows[:-1]}
    assert by_id["folder/patient0/slice1.png"]["volume_id"] == "folder/patient0" and "volume_id" not in rows[-1]


def test_builtin_datasets_name_their_volumes_and_subjects():
    brain = load_dataset("brain", size=16, count=3)
    assert set(brain.volumes) == {"brain/icbm2009a"} and len(set(brain.subjects)) == 1
    dicom = load_dataset("dicom-samples", size=16)
    assert all(v.startswith("series:") for v in dicom.volumes) and all(s.startswith("patient:") for s in dicom.subjects)
    import pickle

    copy = pickle.loads(pickle.dumps(brain.ids[0]))   # the ids travel to Ray workers with their units
    assert isinstance(copy, ImageId) and copy.volume == "brain/icbm2009a" and copy == brain.ids[0]


def test_the_study_names_the_unit_and_criteria_use_it(planted):
    from survey.analysis.report import evaluate_criteria
    from survey.spec import StudyError, parse_study

    base = {"name": "u", "networks": [{"name": "dagan"}], "datasets": [{"name": "brain"}],
            "tasks": [{"name": "ball"}]}
    assert parse_study(base).analysis.cluster is None
    assert parse_study({**base, "analysis": {"cluster": "volume"}}).analysis.cluster == "volume"
    with pytest.raises(StudyError, match="cluster"):
        parse_study({**base, "analysis": {"cluster": "slice"}})
    criterion = {"name": "c", "table": "ball", "bad": "bad", "where": "rep < 2", "by": ["rep"], "max_upper": 0.5}
    (volume,) = evaluate_criteria(planted, [criterion], cluster="volume", n_boot=10)
    (image,) = evaluate_criteria(planted, [criterion], cluster="image", n_boot=10)
    assert {g["unit"] for g in volume.groups} == {"volume"} and {g["clusters"] for g in volume.groups} == {VOLUMES}
    assert {g["unit"] for g in image.groups} == {"image"} and "--cluster volume" in volume.command


def test_the_worker_stamps_each_row_with_its_images_volume_and_subject():
    """In-process SurveyWorker (what each Ray actor runs) on the zoo denoiser and two brain slices: every row
    carries the template's volume_id and subject_id from the ImageIds the engine ships."""
    from survey.engine.networks import NetworkHandle
    from survey.engine.worker import SurveyWorker
    from survey.nets.zoo import entry
    from survey.plan import Unit

    brain = load_dataset("brain", size=entry("dncnn").physics["size"], count=2)
    worker = SurveyWorker(NetworkHandle("dncnn", True, dict(entry("dncnn").physics)), device="cpu")
    unit = Unit("u-units", "dncnn", "brain", "sweep", {"sigmas": [0.05, 0.1]}, 0, 2)
    (outcome,) = worker.run([unit], {"brain": brain.images.numpy()}, {"brain": brain.ids})
    assert outcome.error is None and outcome.rows
    assert {r["volume_id"] for r in outcome.rows} == {"brain/icbm2009a"}
    assert {r["subject_id"] for r in outcome.rows} == {"icbm152-2009a-template"}
