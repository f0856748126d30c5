"""The `rare` task and its summaries: exact answers through the task, common random numbers across targets,
SNR and dose severities, validation, the across-image distribution with its image-level bracket, the
`survey estimate --table rare` path, the report section, and (slow) a study through Ray."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import typer
from scipy import special, stats
from typer.testing import CliRunner

from survey.analysis.intervals import clopper_pearson
from survey.analysis.rare_summary import rare_distribution
from survey.perturb.gaussian import sigma_from_snr
from survey.physics import make_physics
from survey.store import Store
from survey.tasks import TaskContext, generator_for, make_task
from tests.conftest import tiny_study


def _images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.avg_pool2d(torch.rand(count, 1, size, size, generator=g, dtype=torch.float64), 3, 1, 1)


def _identity(y, physics):
    return y


def test_identity_and_h_on_denoising_match_the_chi_square_and_share_streams():
    """Denoising with the identity network: S(z) = sigma ||z|| / ||x||, so P(S >= delta) = chi2sf((delta ||x|| /
    sigma)^2; d) exactly. The network (identity) and H (the identity too) get the same streams: equal rows.
    (Importance sampling is not asked here: the failure set of the identity is a sphere, with no few design points
    to centre a proposal on; tests/test_rare.py and the planted network below test it where it applies.)"""
    size, sigma = 8, 0.05
    physics = make_physics("denoise", size=size, sigma=0.1)
    x = _images(2, size)
    ctx = TaskContext(net=_identity, physics=physics, images=x, image_ids=["a", "b"], network="identity")
    dim = size * size
    r2 = float(stats.chi2.isf(1e-6, dim))
    deltas = [math.sqrt(r2) * sigma / float(x[0].norm())]
    task = make_task("rare", family="gaussian", scale="family", severities=[sigma], thresholds=deltas,
                     estimators=["splitting"], targets=["network", "H"], stop_below=None, batch=512)
    rows, tensors = task(ctx, generator_for("rare-exact"))
    assert not tensors and len(rows) == 2 * 2
    for row in rows:
        exact = special.chdtrc(dim, (row["threshold"] * float(x[row["image_index"]].norm()) / sigma) ** 2)
        assert row["ci_low"] <= exact <= row["ci_high"], (row, exact)
        assert abs(row["log10_p"] - math.log10(exact)) < 0.3
        assert row["calls"] > 0 and row["severity_name"] == "sigma" and row["family_severity"] == sigma
        assert row["levels"] >= 1 and row["ess"] is None and row["stop"] == "reached"
    for k in (0, 2):
        a, b = rows[k], rows[k + 1]
        assert (a["target"], b["target"]) == ("network", "H")
        assert (a["p"], a["ci_low"], a["ci_high"], a["calls"]) == (b["p"], b["ci_low"], b["ci_high"], b["calls"])


def test_planted_gain_network_exact_through_the_task():
    """A planted linear network f(y) = G y, G = I + (K - 1) s s^T on 8 x 8 denoising: the output change is
    sigma G z, so P(||sigma G z|| / ||G x|| >= delta) is the exact quadrature of survey.rare.exact; splitting and
    importance sampling (one strong direction: its design points are +-s) both cover it at p ~ 1e-6."""
    from survey.rare.exact import LinearMap

    size, sigma, gain = 8, 0.05, 4.0
    physics = make_physics("denoise", size=size, sigma=0.1)
    s = LinearMap(size * size, gain=gain, seed=4).direction

    def planted(y, phys):
        flat = y.reshape(y.shape[0], -1)
        return (flat + (gain - 1) * (flat @ s)[:, None] * s).reshape(y.shape)

    x = _images(1, size, seed=2)
    model = LinearMap(size * size, gain=gain, sigma=sigma, x0_norm=float(planted(x, physics).norm()), seed=4)
    delta = model.delta_for(1e-6)
    exact = model.probability(delta)
    ctx = TaskContext(net=planted, physics=physics, images=x, image_ids=["a"])
    task = make_task("rare", scale="family", severities=[sigma], thresholds=[delta],
                     estimators=["splitting", "importance"], targets=["network"], stop_below=None,
                     is_draws=1000, batch=512)
    rows, _ = task(ctx, generator_for("rare-planted"))
    for row in rows:
        assert row["ci_low"] <= exact <= row["ci_high"], (row, exact)
        assert abs(row["log10_p"] - math.log10(exact)) < 0.3
    assert rows[1]["ess"] > 10 and rows[1]["grad_calls"] > 0 and rows[1]["design_radius"] > 0


def test_mc_where_p_is_large_covers_the_exact_answer():
    size, sigma = 8, 0.05
    physics = make_physics("denoise", size=size, sigma=0.1)
    x = _images(1, size, seed=1)
    dim = size * size
    delta = math.sqrt(float(stats.chi2.isf(0.2, dim))) * sigma / float(x.norm())
    ctx = TaskContext(net=_identity, physics=physics, images=x, image_ids=["a"])
    task = make_task("rare", scale="family", severities=[sigma], thresholds=[delta], estimators=["mc"],
                     targets=["network"], mc_draws=2000)
    (row,), _ = task(ctx, generator_for("rare-mc"))
    assert row["ci_low"] <= 0.2 <= row["ci_high"] and row["calls"] == 2000 and row["levels"] is None


def test_snr_severity_and_certification_on_mri():
    physics = make_physics("mri", size=16, ratio=0.4, mask="gaussian-lines", seed=0)
    x = _images(1, 16).to(torch.float64)
    ctx = TaskContext(net=lambda y, phys: phys.H(y).real, physics=physics, images=x, image_ids=["a"])
    # a threshold far beyond reach at 30 dB: splitting stops once P < 1e-3 is certified (validated settings)
    task = make_task("rare", severities=[30.0], thresholds=[5.0], targets=["network"], stop_below=1e-3)
    (row,), _ = task(ctx, generator_for("rare-snr"))
    assert row["validated"] is True and row["runs"] == 4
    sigma = float(sigma_from_snr(physics.A(x), 30.0, physics))
    assert row["severity"] == 30.0 and row["severity_name"] == "SNR" and row["severity_unit"] == "dB"
    assert row["family_severity"] == pytest.approx(sigma)
    assert row["p"] is None and row["certified_below"] < 1e-3 and row["ci_high"] == row["certified_below"]
    assert row["stop"] == "stop_below" and row["log10_p"] is None


@pytest.mark.slow
def test_particle_rows_are_cross_checked_or_not_validated():
    """At the validated settings the particle rows are cross-checked against importance sampling (its calls on the
    row); a network without gradients leaves the row unchecked and `validated = false`, the unit still runs; a
    check below importance sampling's validated settings does not validate the row."""
    physics = make_physics("mri", size=16, ratio=0.4, mask="gaussian-lines", seed=0)
    x = _images(1, 16).to(torch.float64)
    with pytest.warns(UserWarning, match="cross-check's importance restarts = 3 < 32"):
        weak = make_task("rare", severities=[30.0], estimators=["splitting"], restarts=3)
    assert not weak.validated("splitting")
    task = make_task("rare", severities=[30.0], thresholds=[5.0], targets=["network"], stop_below=1e-3)
    assert json.loads(task.settings("splitting"))["cross_check"] is True
    net = lambda y, phys: phys.H(y).real  # noqa: E731
    (row,), _ = task(TaskContext(net=net, physics=physics, images=x, image_ids=["a"]), generator_for("rare-x"))
    assert row["validated"] is True and row["grad_calls"] > 0 and row["stop"] == "stop_below"
    frozen = lambda y, phys: phys.H(y).real.detach()  # noqa: E731
    (row,), _ = task(TaskContext(net=frozen, physics=physics, images=x, image_ids=["a"]), generator_for("rare-x"))
    assert row["validated"] is False and row["grad_calls"] == 0 and row["stop"] == "stop_below"


def test_poisson_at_doses_on_radon_for_network_reference_and_h():
    from survey.solvers import make_reference

    physics = make_physics("radon", size=16, views=6)
    x = _images(1, 16)
    ctx = TaskContext(net=lambda y, phys: phys.H(y), physics=physics, images=x, image_ids=["a"],
                      reference=make_reference(physics, iterations=5))
    task = make_task("rare", family="poisson", severities=[1e3, 1e5], thresholds=[0.05], particles=20,
                     mcmc_steps=2, max_levels=4, stop_below=None)
    rows, _ = task(ctx, generator_for("rare-poisson"))
    assert [(r["severity"], r["target"]) for r in rows] == [(1e3, "network"), (1e3, "reference"), (1e3, "H"),
                                                             (1e5, "network"), (1e5, "reference"), (1e5, "H")]
    assert all(r["severity_unit"] == "photons per bin" and r["severity_name"] == "I0" for r in rows)
    # the same map for network and H (both H here): the same streams give the same answer
    for k in (0, 3):
        assert (rows[k]["p"], rows[k]["ci_high"]) == (rows[k + 2]["p"], rows[k + 2]["ci_high"])
    # more photons, less noise: P cannot be larger at the higher dose (same streams)
    upper = [r["p"] if r["p"] is not None else r["ci_high"] for r in rows]
    assert upper[3] <= upper[0] + 1e-12


def test_settings_below_the_validated_floor_warn_and_mark_rows():
    """Fewer particles, steps or runs than the validated settings: a warning naming them at validation and
    `validated = false` on every row of that estimator (mc has no floor); the defaults are the validated ones."""
    from survey.rare.settings import VALIDATED

    with pytest.warns(UserWarning, match=r"splitting with particles = 20 < 200, mcmc_steps = 2 < 10, runs = 2 < 4"):
        task = make_task("rare", scale="family", severities=[0.05], thresholds=[0.5], estimators=["mc", "splitting"],
                         targets=["network"], particles=20, mcmc_steps=2, runs=2, mc_draws=50, max_levels=1)
    physics = make_physics("denoise", size=8, sigma=0.1)
    ctx = TaskContext(net=_identity, physics=physics, images=_images(1, 8), image_ids=["a"])
    rows, _ = task(ctx, generator_for("rare-floor"))
    assert [(r["estimator"], r["validated"]) for r in rows] == [("mc", True), ("splitting", False)]
    assert json.loads(rows[1]["settings"])["particles"] == 20 and rows[1]["runs"] == 2
    default = make_task("rare", estimators=["splitting", "last-particle", "importance"])
    for estimator in ("splitting", "last-particle"):
        settings = json.loads(default.settings(estimator))
        assert all(settings[k] == VALIDATED[estimator][k] for k in ("particles", "mcmc_steps", "runs"))
        assert default.validated(estimator)
    assert default.validated("importance") and default.restarts == VALIDATED["importance"]["restarts"]


def test_bad_particle_settings_exit_2_with_one_line(tmp_path):
    """particles, mcmc_steps, runs or confidence out of range: one line naming the parameter, exit 2."""
    from survey.cli import app
    from tests.conftest import write_study

    runner = CliRunner()
    for params, name in (("particles = 1", "particles"), ("mcmc_steps = 0", "mcmc_steps"), ("runs = 0", "runs"),
                         ("confidence = 1.5", "confidence")):
        study = write_study(tmp_path / name, tiny_study("bad-rare", f"""
        [[tasks]]
        name = "rare"
        params = {{ severities = [20.0], {params} }}
        """))
        result = runner.invoke(app, ["status", str(study)])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"Rare.{name}" in lines[0], result.stderr


@pytest.mark.parametrize("params, message", [
    (dict(family="poisson", estimators=["importance"], severities=[1e4]), "not differentiable"),
    (dict(family="poisson", scale="snr", severities=[20.0]), "gaussian family"),
    (dict(distances=["l1"]), "distances"),
    (dict(targets=["network", "network"]), "twice"),
    (dict(family="poisson", severities=[0.0]), "severities"),
    (dict(thresholds=[]), "thresholds"),
])
def test_parameters_are_checked(params, message):
    with pytest.raises(ValueError, match=message):
        make_task("rare", **params)


# -- across images --------------------------------------------------------------------------------

def _rare_store(root):
    """Eight images of one network: per-image p spread over decades, two with a certified bound only."""
    store = Store.open(root)
    try:
        values = [(1e-2, 5e-3, 2e-2), (3e-4, 1e-4, 9e-4), (2e-6, 1e-6, 5e-6), (5e-7, 2e-7, 2e-6),
                  (1e-8, 5e-9, 3e-8), (None, 0.0, 1e-7), (None, 0.0, 1e-9), (4e-3, 1e-3, 1e-2)]
        rows = []
        for i, (p, low, high) in enumerate(values):
            for target, scale in (("network", 1.0), ("H", 1e-3)):
                rows.append({"unit_id": f"u{i}", "network": "net", "dataset": "toy", "task": "rare",
                             "physics": "mri", "image_id": f"toy/{i}", "image_index": 0, "family": "gaussian",
                             "family_params": "{}", "severity": 20.0, "severity_name": "SNR", "severity_unit": "dB",
                             "family_severity": 0.01, "threshold": 0.1, "distance": "relative_l2",
                             "estimator": "splitting", "target": target,
                             "p": None if p is None else p * scale, "ci_low": low * scale, "ci_high": high * scale,
                             "log10_p": None if p is None else math.log10(p * scale), "calls": 1000, "grad_calls": 0,
                             "levels": 5, "ess": None, "certified_below": None if p is not None else high * scale,
                             "stop": "reached" if p is not None else "stop_below", "design_radius": None,
                             "confidence": 0.95, "settings": "{}", "runs": 4, "modes": 1,
                             "validated": not (i == 7 and target == "H")})
        fragment = store.write_rows("rare", "net", rows)
        store.record_units([{"unit_id": f"u{i}", "status": "ok", "network": "net", "dataset": "toy", "task": "rare",
                             "rows": 2, "seconds": 0.1, "error": None, "attempts": 1, "run_id": "r", "finished_at": 1.0,
                             "fragments": [fragment]} for i in range(8)])
    finally:
        store.close()
    return root


def test_distribution_counts_and_bracket(tmp_path):
    root = _rare_store(tmp_path / "store")
    rows = rare_distribution(root, levels=[1e-6, 1e-3])
    net = {r["level"]: r for r in rows if r["target"] == "network"}
    assert set(net) == {1e-6, 1e-3} and all(r["images"] == 8 and r["certified"] == 2 for r in net.values())
    a = net[1e-6]
    # ci_low > 1e-6: images 0, 1, 7 (image 2's low is exactly 1e-6); ci_high > 1e-6: 0, 1, 2, 3, 7
    assert (a["surely_above"], a["possibly_above"], a["point_above"]) == (3, 5, 4)
    low, _ = clopper_pearson(3, 8, 0.95)
    _, high = clopper_pearson(5, 8, 0.95)
    assert a["bracket_low"] == pytest.approx(float(low)) and a["bracket_high"] == pytest.approx(float(high))
    assert a["bracket_low"] <= a["point_above"] / 8 <= a["bracket_high"]
    assert a["q0.5"] == pytest.approx(float(np.median([1e-2, 3e-4, 2e-6, 5e-7, 1e-8, 1e-7, 1e-9, 4e-3])))
    assert net[1e-3]["surely_above"] == 1 and net[1e-3]["possibly_above"] == 2   # image 7: ci_low = 1e-3
    h = [r for r in rows if r["target"] == "H" and r["level"] == 1e-3][0]
    assert h["surely_above"] == 0 and h["possibly_above"] == 0 and h["bracket_low"] == 0.0


def test_claims_about_images_use_validated_rows_and_holm(tmp_path):
    """Across-image claims: the count of images possibly above the level among validated rows, an exact binomial
    p-value, Holm over the family of groups; two images cannot show anything about images in general."""
    from survey.analysis.rare_summary import rare_claims
    from scipy import stats as st

    root = _rare_store(tmp_path / "store")
    claims = rare_claims(root, level=1e-4, limit=0.5)
    assert {c["target"] for c in claims} == {"network", "H"} and all(c["family_size"] == 2 for c in claims)
    net = next(c for c in claims if c["target"] == "network")
    h = next(c for c in claims if c["target"] == "H")
    assert net["images"] == 8 and net["possibly_above"] == 3   # ci_high > 1e-4: images 0, 1, 7
    assert h["images"] == 7 and h["possibly_above"] == 0       # image 7 of H is not validated
    assert net["p_value"] == pytest.approx(st.binom.cdf(3, 8, 0.5))
    assert h["p_value"] == pytest.approx(0.5 ** 7) and h["p_adjusted"] == pytest.approx(min(1, 2 * 0.5 ** 7))
    assert h["passed"] and not net["passed"]


def test_survey_estimate_table_rare(tmp_path):
    from survey.cli.analyze import estimate as estimate_command

    root = _rare_store(tmp_path / "store")
    app = typer.Typer()
    app.command()(estimate_command)
    runner = CliRunner()
    out = runner.invoke(app, ["--table", "rare", "--store", str(root), "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == json.loads(json.dumps(rare_distribution(root), default=str))
    text = runner.invoke(app, ["--table", "rare", "--store", str(root), "--levels", "0.001"])
    assert text.exit_code == 0, text.output
    assert "surely_above" in text.output and "bracket_high" in text.output and "1e-06" not in text.output


def test_report_section_shows_curves_and_distribution(tmp_path):
    from survey.analysis.report import build_report

    root = _rare_store(tmp_path / "store")
    html = build_report(root, tmp_path / "out", n_boot=100).read_text()
    assert "Severity curves" in html and "rare_severity.png" in html
    assert "How the per-image probability of a bad perturbation spreads" in html
    assert (tmp_path / "out" / "figures" / "rare_severity.png").stat().st_size > 1000
    assert "Rows at settings below the validated ones (not certificates)" in html
    assert "Claims about images in general" in html and "Holm" in html
    assert "is a statement about that image alone" in html


# -- a study through the engine -------------------------------------------------------------------

RARE_STUDY = tiny_study("tiny-rare", """
[[tasks]]
name = "rare"
images_per_unit = 2
params = { severities = [20.0, 30.0], thresholds = [0.2], particles = 30, mcmc_steps = 3, runs = 1, stop_below = 1e-4 }
""", count=2, header='seed = 3\nstore = "results"')


@pytest.mark.slow
def test_a_study_fills_rare_for_network_reference_and_h(tmp_path, ray_local):
    from survey.analysis.report import build_report
    from survey.engine.scheduler import run_study
    from survey.spec import load_study
    from tests.conftest import write_study

    study = load_study(write_study(tmp_path, RARE_STUDY))
    summary = run_study(study, store_dir=tmp_path / "results")
    assert summary.done == summary.planned and summary.failed == 0
    rows = rare_distribution(tmp_path / "results", levels=[1e-3])
    assert {r["target"] for r in rows} == {"network", "reference", "H"}
    assert {r["severity"] for r in rows} == {20.0, 30.0} and all(r["images"] == 2 for r in rows)
    html = build_report(tmp_path / "results", tmp_path / "out", study, n_boot=100).read_text()
    assert "Severity curves" in html
