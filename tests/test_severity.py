"""The severity task: sweeps over physical perturbation families, network / reference / H on the same draws.

Controls with exact answers: a network that is H itself must give H's numbers on every draw; the identity
level gives the clean numbers; rows replay from the latents alone; rows do not depend on `batch`. The
end-to-end run of tasks/physical.toml through `survey run` and the report is marked slow.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from survey.metrics import norms, psnr
from survey.perturb import make_family
from survey.physics import make_physics
from survey.solvers import make_reference
from survey.tasks import TaskContext, generator_for, make_task

SIZE = 16
ROOT = Path(__file__).resolve().parents[1]


class HNet(nn.Module):
    """f = Re H(y) (the scoring convention, survey.numerics): the control whose numbers must equal H's."""

    def forward(self, y, physics):
        out = physics.H(y)
        return out.real if torch.is_complex(out) else out


def context(kind: str, reference: bool = False, **physics_params) -> TaskContext:
    params = {"mri": dict(ratio=0.4), "pmri": dict(ratio=0.4, coils=3), "radon": dict(views=8)}[kind]
    physics = make_physics(kind, size=SIZE, **{**params, **physics_params})
    g = torch.Generator().manual_seed(3)
    images = nn.functional.avg_pool2d(torch.rand(2, 1, SIZE, SIZE, generator=g, dtype=torch.float64), 3, 1, 1)
    solver = make_reference(physics, iterations=3) if reference else None
    return TaskContext(net=HNet(), physics=physics, images=images, image_ids=["a", "b"], reference=solver,
                       network="h", dataset="noise", unit_id="unit-1")


def run(kind: str, reference: bool = False, **params):
    ctx = context(kind, reference)
    task = make_task("severity", **{"with_reference": reference, **params})
    return task(ctx, generator_for(ctx.unit_id)).rows, ctx


def test_h_network_control_and_identity_levels():
    rows, _ = run("pmri", families={"motion": [0.0, 1.0], "coil": [0.0, 0.1], "rings": [1.0]}, draws=3)
    assert {r["family"] for r in rows} == {"motion", "coil"}          # rings does not apply to MRI: skipped
    assert len(rows) == 2 * 2 * 2 * 3
    for r in rows:
        assert r["psnr"] == r["h_psnr"] and r["out_change_rel"] == r["h_out_change_rel"]
        assert r["ssim"] == r["h_ssim"] and r["psnr_clean"] == r["h_psnr_clean"]
        if r["identity"]:
            assert r["severity"] == 0.0 and r["out_change_rel"] == 0.0 and r["meas_change_rel"] == 0.0
            assert r["psnr"] == r["psnr_clean"]
        else:
            assert r["meas_change_rel"] > 0 and r["out_change_rel"] > 0
    units = {r["family"]: r["severity_unit"] for r in rows}
    assert units == {"motion": "px", "coil": "fraction"}


def test_rows_replay_from_the_latents_with_common_random_numbers():
    """Draw d of image b uses one latent at every severity: recompute y' from the generator's stream."""
    families = {"spike": [0.0, 0.1, 0.3], "motion": [0.5]}
    rows, ctx = run("mri", families=families, draws=2)
    gen = generator_for(ctx.unit_id)
    physics, x = ctx.physics, ctx.images
    latents = {name: torch.randn((2, 2, *make_family(name).latent_shape(physics)), generator=gen,
                                 dtype=torch.float64) for name in families}
    y = physics.A(x)
    for r in rows:
        family = make_family(r["family"])
        b, d = r["image_index"], r["draw"]
        y_prime = family.perturb(y[b:b + 1], latents[r["family"]][b, d][None], r["severity"], physics, x=x[b:b + 1])
        out = HNet()(y_prime, physics)
        assert math.isclose(float(psnr(out, x[b:b + 1])[0]), r["psnr"], rel_tol=1e-9, abs_tol=1e-9) \
            or (math.isinf(r["psnr"]) and r["identity"])
        change = float((norms(y_prime - y[b:b + 1]) / norms(y[b:b + 1]))[0])
        assert math.isclose(change, r["meas_change_rel"], rel_tol=1e-9, abs_tol=1e-15)


def test_rows_do_not_depend_on_batch_and_replay():
    params = dict(families={"rings": [0.0, 1.0, 2.0], "view-jitter": [0.5], "poisson": [math.inf, 1e4]}, draws=3)
    one, _ = run("radon", batch=1, **params)
    many, _ = run("radon", batch=64, **params)
    again, _ = run("radon", batch=64, **params)
    assert many == again   # a replay is bit-identical
    assert len(one) == len(many)
    for a, b in zip(one, many):   # another batch: the same draws, floating point summed in another order
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], float) and math.isfinite(a[key]):
                assert math.isclose(a[key], b[key], rel_tol=1e-9, abs_tol=1e-12), key
            else:
                assert a[key] == b[key], key
    poisson = [r for r in one if r["family"] == "poisson"]
    assert all(r["identity"] == math.isinf(r["severity"]) for r in poisson)


def test_reference_on_the_chosen_draws_and_levels():
    rows, _ = run("mri", reference=True, families={"motion": [0.0, 0.5, 1.0]}, draws=3, reference_draws=1,
                  reference_levels=[-1])
    for r in rows:
        expected = r["identity"] or (r["draw"] == 0 and r["severity"] == 1.0)
        assert r["has_reference"] == expected
        assert (r["ref_psnr"] is not None) == expected and (r["ref_ssim"] is not None) == expected
        assert r["ref_psnr_clean"] is not None
        if r["identity"]:
            assert r["ref_psnr"] == r["ref_psnr_clean"] and r["ref_out_change_rel"] == 0.0


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="unknown perturbation family 'motoin'"):
        make_task("severity", families={"motoin": [1.0]})
    with pytest.raises(ValueError, match="list of severities"):
        make_task("severity", families={"motion": [-1.0]})
    with pytest.raises(ValueError, match="family_params\\['motion'\\]"):
        make_task("severity", families={"motion": [1.0]}, family_params={"motion": {"fov_mm": -3}})
    with pytest.raises(ValueError, match="draws"):
        make_task("severity", draws=0)
    task = make_task("severity", families={"rings": [1.0]}, with_reference=False)
    ctx = context("mri")
    with pytest.raises(ValueError, match="none of the families"):
        task(ctx, generator_for("u"))
    motion_mm = make_task("severity", families={"motion": [0.0, 1.0]}, family_params={"motion": {"fov_mm": 32.0}},
                          with_reference=False, draws=1)
    rows = motion_mm(context("mri"), generator_for("u")).rows
    assert {r["severity_unit"] for r in rows} == {"mm"}


# -- end to end -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_physical_study_end_to_end_with_report_screenshot(tmp_path):
    """`survey run tasks/physical.toml` fills `severity` for networks, reference and H; the report's severity
    section shows the curves; a headless Chromium screenshot of that section."""
    import duckdb

    from tests.conftest import CHROMIUM_FLAGS, chromium

    store, reports = tmp_path / "results", tmp_path / "reports"
    result = subprocess.run([sys.executable, "-m", "survey.cli.main", "run", str(ROOT / "tasks" / "physical.toml"),
                             "--store", str(store)], capture_output=True, text=True, timeout=3000, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    con = duckdb.connect()
    frame = con.execute(f"SELECT * FROM read_parquet('{store}/severity/**/*.parquet', hive_partitioning=true, "
                        "union_by_name=true)").df()
    assert set(frame["network"]) == {"deepmri", "dagan", "mrivn", "med50", "ell50", "lactunet"}
    assert set(frame["family"]) == {"motion", "off-resonance", "spike", "coil", "rings", "view-jitter", "poisson"}
    assert frame["psnr"].notna().all() and frame["h_psnr"].notna().all()
    assert frame.loc[~frame["identity"], "ref_psnr"].notna().sum() > 0
    result = subprocess.run([sys.executable, "-m", "survey.cli.main", "report", "--store", str(store), "--out", str(reports)],
                            capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    index = reports / "index.html"
    html = index.read_text()
    assert "Physical perturbations" in html and "severity_psnr.png" in html
    assert "PSNR below 25 dB at a physical severity" in html
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed; the screenshot needs it")
    # the results with only the severity section's figures: every other part and the tables folded away
    page = index.with_name("severity-only.html")
    hide = ("<style>section:not(#results) {display: none !important} "
            "#results table, #results pre {display: none !important}</style>")
    page.write_text(html.replace("</head>", hide + "</head>", 1))
    shot = tmp_path / "severity.png"
    flags = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,3000", "--virtual-time-budget=5000",
                    page.resolve().as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000
    assert re.search(r"severity_severity-floor\.png", html)
