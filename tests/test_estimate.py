"""survey.analysis.estimate: interval coverage, one-sided bounds at k = 0, the image bootstrap, the SQL path, the CLI."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from survey.analysis.estimate import (FIXED_KEYS, METHODS, _resampled_sums, clopper_pearson, cluster_bootstrap, estimate,
                               rule_of_three, sweep_slopes, wilson)
from survey.cli import analyze


def _write(root: Path, table: str, network: str, columns: dict) -> None:
    folder = root / table / f"network={network}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), folder / f"part-{uuid.uuid4().hex}.parquet")


def _covers(low, high, p) -> float:
    return float(np.mean((low <= p) & (p <= high)))


@pytest.mark.parametrize("n, p", [(300, 0.2), (1000, 0.02), (60, 0.5)])
def test_intervals_cover_the_truth(n: int, p: float):
    k = np.random.default_rng(7).binomial(n, p, size=1000)
    for method in (clopper_pearson, wilson):
        low, high = method(k, n, 0.95)
        assert np.all((0 <= low) & (low <= k / n) & (k / n <= high) & (high <= 1))
        assert _covers(low, high, p) >= 0.93, method.__name__
    # exact intervals are wider for a lower confidence level's complement
    low90, high90 = clopper_pearson(k, n, 0.90)
    low95, high95 = clopper_pearson(k, n, 0.95)
    assert np.all(high90 <= high95) and np.all(low90 >= low95)


def test_clopper_pearson_known_values():
    # k = 5 of n = 20: the textbook exact 95% interval (0.0866, 0.4910)
    low, high = clopper_pearson(5, 20)
    assert low == pytest.approx(0.08657, abs=1e-4) and high == pytest.approx(0.49105, abs=1e-4)
    low, high = wilson(5, 20)
    assert low == pytest.approx(0.11186, abs=1e-4) and high == pytest.approx(0.46870, abs=1e-4)


def test_k_zero_gives_one_sided_upper_bound_and_rule_of_three():
    n = np.array([10, 100, 3000])
    low, high = clopper_pearson(np.zeros(3), n, 0.95)
    assert np.all(low == 0)
    np.testing.assert_allclose(high, 1 - 0.05 ** (1 / n))
    np.testing.assert_allclose(rule_of_three(n), 3 / n)
    assert np.all(np.abs(high - 3 / n) < 0.2 * 3 / n + 1e-3)  # the rule of three is a close check for large n
    # k = n mirrors it: a one-sided lower bound (the ball test often finds the artefact in every draw)
    low, high = clopper_pearson(n, n, 0.95)
    np.testing.assert_allclose(low, 0.05 ** (1 / n))
    assert np.all(high == 1)
    low, high = wilson(0, 100)
    assert low == 0 and 0 < high < 1 - 0.05 ** (1 / 100)


def test_bootstrap_widens_when_draws_are_correlated_within_images():
    rng = np.random.default_rng(3)
    reps, images, draws, p = 200, 40, 100, 0.2
    groups = np.repeat(np.arange(reps), images)
    n = np.full(reps * images, draws)
    widths, coverage = {}, {}
    for label, p_image in [("constant", np.full((reps, images), p)),
                           ("beta", rng.beta(4 * p, 4 * (1 - p), size=(reps, images)))]:
        k = rng.binomial(draws, p_image).ravel()
        low, high = cluster_bootstrap(k, n, groups, confidence=0.95, n_boot=1000, seed=1)
        widths[label], coverage[label] = np.mean(high - low), _covers(low, high, p)
        cp_low, cp_high = clopper_pearson(np.bincount(groups, k), np.bincount(groups, n))
        if label == "constant":
            # independent draws: the image bootstrap agrees with the binomial interval
            assert 0.8 < widths[label] / np.mean(cp_high - cp_low) < 1.2
        else:
            # correlated draws: treating rows as independent undercovers badly; the image bootstrap does not
            assert _covers(cp_low, cp_high, p) < 0.6
    assert widths["beta"] > 2.5 * widths["constant"]
    assert coverage["beta"] >= 0.88 and coverage["constant"] >= 0.88


@pytest.mark.parametrize("distinct", ["few", "many"])
def test_resampled_sums_match_the_resampling_distribution(distinct: str):
    # both code paths (multinomial over distinct pairs; packed index gather) resample m clusters
    rng = np.random.default_rng(5)
    m = 400
    n = np.full(m, 50) if distinct == "few" else rng.integers(20, 80, size=m)
    k = rng.binomial(n, 0.3)
    k_sum, n_sum = _resampled_sums(k, n, 4000, np.random.default_rng(0))
    for values, sums in ((k, k_sum), (n, n_sum)):
        assert sums.mean() == pytest.approx(m * values.mean(), rel=0.01)
        assert sums.std() == pytest.approx(np.sqrt(m) * values.std(), rel=0.08)


def test_bootstrap_is_seeded():
    k, n = np.array([1, 5, 0, 3, 9]), np.array([10, 10, 12, 10, 11])
    assert cluster_bootstrap(k, n, seed=4) == cluster_bootstrap(k, n, seed=4)


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    """ball: unet bad in draws 0..2 of 10 on images a, b (k = 6 of 40 rows over 4 images), cascade never bad;
    attacks: unet images a, b have a small bad perturbation; sweeps: unet falls, cascade rises."""
    root = tmp_path / "store"
    for net in ("unet", "cascade"):
        images = np.repeat(["a", "b", "c", "d"], 10)
        draw = np.tile(np.arange(10), 4)
        bad = (net == "unet") & np.isin(images, ["a", "b"]) & (draw < 3)
        _write(root, "ball", net, {"network": [net] * 40, "dataset": ["brain"] * 40, "image_id": images,
                                   "draw": draw, "radius": np.where(draw % 2 == 0, 0.01, 0.02),
                                   "out_change_rel": np.where(bad, 0.5, 0.01)})
        r_rel = np.tile([0.01, 0.05], 4)
        big = (net == "unet") & np.isin(np.repeat(["a", "b", "c", "d"], 2), ["a", "b"])
        _write(root, "attacks", net, {"network": [net] * 8, "dataset": ["brain"] * 8,
                                      "image_id": np.repeat(["a", "b", "c", "d"], 2), "r_rel": r_rel,
                                      "out_change_rel": np.where(big | (r_rel > 0.02), 0.3, 0.01)})
        ratios = np.tile([0.1, 0.2, 0.3, 0.4], 5)
        trend = -20.0 if net == "unet" else 10.0
        noise = np.random.default_rng(1).normal(0, 0.1, 20)
        _write(root, "sweeps", net, {"network": [net] * 20, "dataset": ["brain"] * 20,
                                     "image_id": np.repeat([f"s{i}" for i in range(5)], 4), "axis": ["ratio"] * 20,
                                     "value": ratios, "ratio": ratios,
                                     "psnr": 30 + trend * ratios + noise})
    return root


def test_estimate_through_the_store(store: Path):
    rows = estimate(store, "ball", "out_change_rel >= 0.1", by=["network"], n_boot=500)
    assert [(r["network"], r["method"]) for r in rows] == [(net, m) for net in ("cascade", "unet") for m in METHODS]
    for row in rows:
        assert list(row) == ["network", *FIXED_KEYS]
    unet = {r["method"]: r for r in rows if r["network"] == "unet"}
    assert unet["wilson"]["n"] == 40 and unet["wilson"]["k"] == 6 and unet["wilson"]["p"] == pytest.approx(0.15)
    low, high = clopper_pearson(6, 40)
    assert unet["clopper-pearson"]["ci_low"] == pytest.approx(float(low))
    assert unet["clopper-pearson"]["ci_high"] == pytest.approx(float(high))
    assert unet["bootstrap"]["clusters"] == 4
    assert unet["bootstrap"]["ci_low"] <= 0.15 <= unet["bootstrap"]["ci_high"]

    cascade = {r["method"]: r for r in rows if r["network"] == "cascade"}
    cp = cascade["clopper-pearson"]
    assert cp["k"] == 0 and cp["interval"] == "one-sided upper"
    assert cp["ci_high"] == pytest.approx(1 - 0.05 ** (1 / 40)) and cp["rule_of_three"] == pytest.approx(3 / 40)
    # the bootstrap cannot bound p at k = 0; its note names the interval to use instead: the image-level one
    assert cascade["bootstrap"]["ci_high"] is None and "cluster-exact" in cascade["bootstrap"]["note"]

    # ten draws share each image: the primary interval is for the population of images, first in each group
    for group in (cascade, unet):
        assert [m for m, r in group.items() if r["primary"]] == ["cluster-exact"]
        assert all(r["primary_method"] == "cluster-exact" for r in group.values())
        assert group["cluster-exact"]["estimand"] == "P(bad) for the population of images like these (brain): mean per-image probability"
        assert all(r["assumption"] for r in group.values())
    assert [r["method"] for r in rows][::len(METHODS)] == ["cluster-exact"] * 2
    # k = 0 over 4 images: the image-level exact bound 1 - alpha^(1/4), not 40 independent draws' 0.072
    ce = cascade["cluster-exact"]
    assert ce["ci_high"] == pytest.approx(1 - 0.05 ** (1 / 4)) and ce["interval"] == "one-sided upper"
    assert ce["upper_bound"] == pytest.approx(1 - 0.05 ** (1 / 4)) and ce["n_eff"] == 4
    # unet: images a, b bad in 3 of 10 draws, c, d never: per-image proportions (.3, .3, 0, 0)
    ce = unet["cluster-exact"]
    assert ce["point"] == pytest.approx(0.15) and ce["df"] == 1
    assert ce["ci_low"] < low and ce["ci_high"] > high       # wider than 40 independent draws would give
    assert unet["clopper-pearson"]["upper_bound"] == pytest.approx(float(clopper_pearson(6, 40, 0.90)[1]))

    # where filters rows; by may name several columns
    rows = estimate(store, "ball", "out_change_rel >= 0.1", where="network = 'unet' AND draw < 5",
                    by=["network", "radius"], n_boot=200)
    assert {(r["radius"], r["n"], r["k"]) for r in rows} == {(0.01, 12, 4), (0.02, 8, 2)}


def test_per_image_counts_images(store: Path):
    bad = "r_rel <= 0.02 AND out_change_rel >= 0.1"
    rows = estimate(store, "attacks", bad, by=["network"], per="image", n_boot=200)
    counts = {(r["network"], r["method"]): (r["n"], r["k"]) for r in rows}
    assert counts[("unet", "wilson")] == (4, 2) and counts[("cascade", "wilson")] == (0 + 4, 0)
    rows = estimate(store, "attacks", bad, by=["network"], per="row", n_boot=200)
    assert {(r["network"], r["n"], r["k"]) for r in rows} == {("unet", 8, 2), ("cascade", 8, 0)}


def test_sweeps_fraction_falling_and_slopes(store: Path):
    rows = estimate(store, "sweeps", per="curve", by=["network"], n_boot=200)
    frac = {r["network"]: (r["n"], r["k"]) for r in rows if r["method"] == "clopper-pearson"}
    assert frac == {"unet": (5, 5), "cascade": (5, 0)}
    rows = estimate(store, "sweeps", "y_end < y_peak", per="curve", by=["network"], n_boot=200)
    assert {r["network"]: r["k"] for r in rows} == {"unet": 5, "cascade": 0}
    slopes = {r["network"]: r for r in sweep_slopes(store, by=["network"], n_boot=500)}
    assert slopes["unet"]["ci_low"] < -20 < slopes["unet"]["ci_high"] < 0
    assert 0 < slopes["cascade"]["ci_low"] < 10 < slopes["cascade"]["ci_high"]
    assert slopes["unet"]["falling"] == 1.0 and slopes["unet"]["n"] == 5


def test_estimate_errors_are_clear(store: Path):
    with pytest.raises(ValueError, match="not in table 'ball'"):
        estimate(store, "ball", "out_change_rel > 0", by=["radius_kind"])
    with pytest.raises(ValueError, match="nope"):
        estimate(store, "ball", "nope > 1")
    with pytest.raises(ValueError, match="per must be"):
        estimate(store, "ball", "out_change_rel > 0", per="pixel")
    with pytest.raises(ValueError, match="not in the store"):
        estimate(store, "insertions", "recovered")
    # predicates are SQL fragments, but still run as one read-only statement
    smuggled = f"true)) AS n_i FROM ball; COPY ball TO '{store}/x.csv'; SELECT count(*) FILTER (WHERE (true"
    with pytest.raises(ValueError, match="one statement"):
        estimate(store, "ball", smuggled)
    assert not (store / "x.csv").exists()


def test_cli_estimate_json_keys(store: Path):
    app = typer.Typer()
    app.command("query")(analyze.query)
    app.command("estimate")(analyze.estimate)
    runner = CliRunner()
    result = runner.invoke(app, ["estimate", "--table", "ball", "--bad", "out_change_rel >= 0.1", "--by", "network",
                                 "--store", str(store), "--format", "json", "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 2 * len(METHODS) and {r["method"] for r in rows} == set(METHODS)
    assert sum(r["primary"] for r in rows) == 2
    assert all(list(r) == ["network", *FIXED_KEYS] for r in rows)
    result = runner.invoke(app, ["estimate", "--table", "attacks", "--per", "image", "--store", str(store),
                                 "--bad", "r_rel <= 0.02 AND out_change_rel >= 0.1"])
    assert result.exit_code == 0, result.output
    assert "clopper-pearson" in result.stdout and "one-sided upper" not in result.stdout
    result = runner.invoke(app, ["estimate", "--table", "ball", "--bad", "nope", "--store", str(store)])
    assert result.exit_code != 0 and "nope" in result.output   # the exit status is the CLI's (survey.cli.common)


def test_bootstrap_does_not_depend_on_how_rows_lie_in_fragments(store: Path, tmp_path: Path):
    """The same rows split into fragments differently (as a resumed or retracted survey leaves them) give the
    same seeded bootstrap intervals and slopes."""
    import pyarrow.parquet as pq

    shuffled = tmp_path / "shuffled"
    for table in ("ball", "sweeps"):
        for part in sorted((store / table).rglob("*.parquet")):
            rows = pq.read_table(part).to_pandas().iloc[::-1]
            half = len(rows) // 2
            for piece in (rows.iloc[:half], rows.iloc[half:]):
                _write(shuffled, table, part.parent.name.split("=")[1], {c: piece[c].to_numpy() for c in piece})
    for root in (store, shuffled):
        assert len(list((root / "ball").rglob("*.parquet"))) == (2 if root == store else 4)
    args = dict(by=["network"], n_boot=300, seed=3)
    assert estimate(store, "ball", "out_change_rel >= 0.1", **args) == \
        estimate(shuffled, "ball", "out_change_rel >= 0.1", **args)
    numbers = ("slope", "ci_low", "ci_high")
    for a, b in zip(sweep_slopes(store, **args), sweep_slopes(shuffled, **args), strict=True):
        assert {k: v for k, v in a.items() if k not in numbers} == {k: v for k, v in b.items() if k not in numbers}
        # regr_slope sums in row order: equal up to rounding
        assert [a[k] for k in numbers] == pytest.approx([b[k] for k in numbers], rel=1e-12)


def test_per_image_distribution(store: Path):
    from survey.analysis.estimate import per_image_distribution

    rows = per_image_distribution(store, "ball", "out_change_rel >= 0.1", by=["network"], levels=(0.1, 0.5))
    unet = [r for r in rows if r["network"] == "unet"]
    assert [r["level"] for r in unet] == [0.1, 0.5]
    first = unet[0]
    # images a, b bad in 3 of 10 draws, c, d never
    assert first["images"] == 4 and first["rows"] == 40 and first["mean"] == pytest.approx(0.15)
    assert first["min"] == 0 and first["max"] == pytest.approx(0.3) and first["q0.5"] == pytest.approx(0.15)
    assert first["above"] == 2 and first["fraction"] == 0.5
    low, high = clopper_pearson(2, 4)
    assert first["ci_low"] == pytest.approx(float(low)) and first["ci_high"] == pytest.approx(float(high))
    assert first["surely_above"] == 0 and first["possibly_above"] == 4     # 10 draws per image say little
    assert unet[1]["above"] == 0 and unet[1]["ci_high"] == pytest.approx(1 - 0.05 ** (1 / 4))
    assert "population of images like these (brain)" in first["estimand"]


def test_decisions_from_estimates(store: Path):
    from survey.analysis.decisions import decide

    rows = estimate(store, "ball", "out_change_rel >= 0.1", by=["network"], n_boot=200)
    decisions = decide([{"name": "ball", "limit": 0.7, "rows": rows, "confidence": 0.95}])
    assert [(d["group"], d["method"]) for d in decisions] == [({"network": "cascade"}, "cluster-exact"),
                                                              ({"network": "unet"}, "cluster-exact")]
    cascade = decisions[0]
    # 4 images never bad: the one-sided image-level bound 1 - 0.05^(1/4) = 0.527
    assert cascade["upper_bound"] == pytest.approx(1 - 0.05 ** (1 / 4)) and cascade["passed_raw"]
    primary = {r["network"]: r for r in rows if r["primary"]}
    assert decisions[1]["upper_bound"] == pytest.approx(primary["unet"]["upper_bound"])
